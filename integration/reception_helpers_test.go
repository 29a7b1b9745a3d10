//go:build integration

package integration

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
	"gopkg.in/yaml.v3"
)

// pecYAML is the part of a lab provider's pec.yaml these tests read (cmd/internal/config is
// internal to cmd).
type pecYAML struct {
	Provider struct {
		Name           string   `yaml:"name"`
		Domains        []string `yaml:"domains"`
		ServiceAddress string   `yaml:"service_address"`
		Production     bool     `yaml:"production"`
	} `yaml:"provider"`
	Signer hsm.Config   `yaml:"signer"`
	Store  store.Config `yaml:"store"`
}

func readPecYAML(t *testing.T, file string) *pecYAML {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var y pecYAML
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return &y
}

// Helpers of the reception point tests: signing as a provider (or as a test signer) in the
// test process, injecting at an MX as another provider's MTA would, reading a provider's store.

var labKeys struct {
	sync.Mutex
	m map[string]*hsm.Keys
}

// providerBuilder is a message builder of provider p with p's own keys, opened in this process
// from its token (lab.json PIN): for the messages p would make but its access point never sends
// (an infected busta, which its antivirus would have stopped).
func providerBuilder(t *testing.T, l *lab.Lab, p *lab.Provider) *pec.Builder {
	t.Helper()
	labKeys.Lock()
	defer labKeys.Unlock()
	if labKeys.m == nil {
		labKeys.m = map[string]*hsm.Keys{}
	}
	keys := labKeys.m[p.ID]
	if keys == nil {
		cfg := readPecYAML(t, p.ConfigFile)
		// Process-wide on purpose (the PKCS#11 module reads them when it loads); the tests
		// using them run in parallel, so t.Setenv is not allowed.
		os.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
		os.Setenv(cfg.Signer.PKCS11.PINEnv, p.Token.PIN)
		var err error
		pr := cfg.Provider
		if keys, err = hsm.New(cfg.Signer, hsm.Deps{Provider: hsm.Provider{Name: pr.Name, ServiceAddress: pr.ServiceAddress, Domains: pr.Domains, Production: pr.Production}}); err != nil {
			t.Fatal(err)
		}
		labKeys.m[p.ID] = keys
	}
	return &pec.Builder{ID: pec.Identity{Name: p.Name, Domain: p.Domain, ServiceAddress: p.ServiceAddress, ReceiptAddress: p.ReceiptAddress}, Keys: keys}
}

// signerKeys is a pec.Signer with one software key and chain (a lab test signer).
type signerKeys struct {
	key   crypto.Signer
	chain []*x509.Certificate
}

func (s signerKeys) SignerFor(string) (crypto.Signer, []*x509.Certificate, error) {
	return s.key, s.chain, nil
}

// signerBuilder is a message builder of the lab's test signer id ("f" forges A, "r" is revoked).
func signerBuilder(t *testing.T, l *lab.Lab, id string) *pec.Builder {
	t.Helper()
	s, err := l.Signer(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := hsm.ReadChain(s.CertChain)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Key)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM key", s.Key)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &pec.Builder{ID: pec.Identity{Name: s.Name, Domain: s.Domain, ServiceAddress: s.ServiceAddress, ReceiptAddress: s.ReceiptAddress},
		Keys: signerKeys{k.(crypto.Signer), chain}}
}

// bustaOf is bd's busta of a new transaction from sender to rcpts (To), with token in the
// subject and extra header lines in the original.
func bustaOf(t *testing.T, bd *pec.Builder, sender string, rcpts []string, token, body string, hdr ...string) (*pec.Message, *pec.Transaction) {
	t.Helper()
	lines := append([]string{"From: " + sender, "To: " + strings.Join(rcpts, ", "), "Subject: PEC " + token,
		"Message-ID: <" + token + "@client.example>", "Date: " + time.Now().Format(time.RFC1123Z)}, hdr...)
	orig, err := pec.ParseOriginal(raw(body, lines...))
	if err != nil {
		t.Fatal(err)
	}
	id, err := pec.NewIdentificativo(time.Now(), "rxtest", bd.ID.MailDomain(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var rs []pec.Recipient
	for _, r := range rcpts {
		rs = append(rs, pec.Recipient{Addr: r, Type: "certificato"})
	}
	tx := pec.NewTransaction(id, orig, rs)
	m, err := bd.Busta(pec.NewTimeRef(time.Now(), pec.Rome()), tx, orig)
	if err != nil {
		t.Fatal(err)
	}
	return m, tx
}

// inject sends msg to an MX as another provider's (or the Internet's) MTA does: no AUTH, from
// the IP of system from, with helo as EHLO name (it lands in Postfix's Received field).
func inject(addr string, from *lab.Provider, helo, mailFrom string, rcpts []string, msg []byte) error {
	return mailtest.Submission{Addr: addr, LocalAddr: from.IP, Helo: helo}.Send(mailFrom, rcpts, msg)
}

// heloToken is a token usable as an EHLO name.
func heloToken(prefix string) string { return strings.ToLower(mailtest.Token(prefix)) + ".test" }

// openStore opens the store of pec.yaml file cfgFile (a second handle beside the running
// pec-milter's; SQLite, or PostgreSQL with PEC_STORE=postgres).
func openStore(t *testing.T, cfgFile string) store.Store {
	t.Helper()
	st, err := storeopen.Open(readPecYAML(t, cfgFile).Store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// emitted checks a message a provider emitted: pecctl verify and openssl smime -verify with the
// lab CA (classify), its daticert.xml against the DTD (xmllint).
func emitted(t *testing.T, l *lab.Lab, msg []byte, want pec.Kind) *pec.Classified {
	t.Helper()
	c := classify(t, l, msg, want)
	f := filepath.Join(t.TempDir(), "daticert.xml")
	if err := os.WriteFile(f, c.DaticertRaw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xmllint", "--noout", "--dtdvalid", corpus.DTD(), f).CombinedOutput(); err != nil {
		t.Errorf("xmllint: %v\n%s", err, out)
	}
	return c
}

// anomalyOf checks a busta di anomalia delivered by provider p: signed by p (openssl smime
// -verify with the lab CA), conforming, carrying inner (when given) as postacert.eml.
func anomalyOf(t *testing.T, l *lab.Lab, msg []byte, inner []byte) *pec.Classified {
	t.Helper()
	f := filepath.Join(t.TempDir(), "anomalia.eml")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "smime", "-verify", "-in", f, "-CAfile", l.CA.Cert, "-out", os.DevNull).CombinedOutput(); err != nil {
		t.Errorf("openssl smime -verify: %v\n%s", err, out)
	}
	c := pec.Classify(msg, pec.ClassifyOptions{})
	if c.Kind != pec.KindAnomalia || c.Verified == nil || !c.Conforms() {
		t.Fatalf("not a conforming busta di anomalia: %v %v %+v", c.Kind, c.SigErr, c.Deviations)
	}
	if got, want := string(pec.ToCRLF(c.Postacert)), string(pec.ToCRLF(inner)); inner != nil && !strings.HasSuffix(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[len(got)-1-i] == want[len(want)-1-i] {
			i++
		}
		t.Errorf("the anomaly does not carry the message as sent: from the end, they differ after %d bytes:\n got ...%q\nwant ...%q",
			i, got[max(0, len(got)-i-120):len(got)-i+1], want[max(0, len(want)-i-120):len(want)-i+1])
	}
	return c
}

// anomalyEvent waits for the busta-anomalia (or, refused, anomalia) event of the message with
// Message-ID mid in st and returns it.
func anomalyEvent(t *testing.T, st store.Store, kind store.EventKind, match func(*store.Event) bool) *store.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var found *store.Event
		err := st.ScanLog(context.Background(), store.Query{Kinds: []store.EventKind{kind}, From: time.Now().Add(-time.Hour)}, func(e *store.Event) error {
			if match(e) {
				found = e
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if found != nil {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event", kind)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitOneField is waitOne on another header field than Subject.
func waitOneField(t *testing.T, mb mailtest.Mailbox, field, token string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	if _, err := mb.WaitForHeader(ctx, field, token, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	got, err := mb.WaitForHeader(ctx, field, token, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%s: %d messages with %s in %s, want exactly 1", mb.User, len(got), token, field)
	}
	return got[0]
}

// asSent is a message read from a mailbox without the fields the final delivery added
// (Return-Path, Delivered-To), as a peer's MTA would send it on.
func asSent(msg []byte) []byte { return withoutFields(msg, "Return-Path", "Delivered-To") }

// asQueued is msg as Postfix queues it: cleanup drops an incoming Return-Path field (the
// envelope sender is written there at delivery).
func asQueued(msg []byte) []byte { return withoutFields(msg, "Return-Path") }

func withoutFields(msg []byte, names ...string) []byte {
	h, body, err := pec.SplitHeader(pec.ToCRLF(msg))
	if err != nil {
		return msg
	}
	var out []byte
	for _, f := range h {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(f.Name, n) }) {
			out = append(out, f.Raw...)
		}
	}
	return append(append(out, "\r\n"...), body...)
}
