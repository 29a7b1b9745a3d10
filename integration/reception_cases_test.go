//go:build integration

package integration

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/store"
)

// The reception point cases that need their own pec-milter of B (privateRX): the reject
// policy, the real corpus with and without its signers in the index, and dependencies that
// stop. They run one after the other on one private instance.
func TestReceptionPrivate(t *testing.T) {
	t.Parallel()
	l, a, b, o := pecLab(t)
	p := startPrivateRX(t, l, b)
	t.Run("reject policy", func(t *testing.T) { rxRejectPolicy(t, l, p, a, b, o) })
	t.Run("real corpus", func(t *testing.T) { rxCorpus(t, l, p, a, b, o) })
	t.Run("dependencies stopped", func(t *testing.T) { rxDependencies(t, l, p, a, b, o) })
}

// policy.ordinary_mail reject: ordinary mail and an invalid busta are refused at SMTP with the
// reason (550 5.7.1) and logged; a valid busta is still taken in charge.
func rxRejectPolicy(t *testing.T, l *lab.Lab, p *privateRX, a, b, o *lab.Provider) {
	p.restart(t, func(y map[string]any) { y["policy"] = map[string]any{"ordinary_mail": "reject"} })
	oscar, bruno, ricevuteA := user(t, o, "oscar"), user(t, b, "bruno"), user(t, a, "ricevute")
	st := openStore(t, p.cfg)
	for _, tc := range []struct {
		name, reason, from string
		msg                func(tok string) []byte
	}{
		{"ordinary", "ordinary", oscar.Address, func(tok string) []byte {
			return mailtest.Message(oscar.Address, []string{bruno.Address}, "ciao "+tok, "Posta ordinaria.\n")
		}},
		{"forged busta", "signer-unlisted", "alice@" + a.Domain, func(tok string) []byte {
			m, _ := bustaOf(t, signerBuilder(t, l, "f"), "alice@"+a.Domain, []string{bruno.Address}, tok, "falso\n")
			return m.Bytes()
		}},
	} {
		tok := mailtest.Token("reject")
		err := inject(p.Addr, o, heloToken("rej"), tc.from, []string{bruno.Address}, tc.msg(tok))
		var se *mailtest.StepError
		if !errors.As(err, &se) || se.Step != "DATA" || se.Code != 550 || !strings.Contains(se.Error(), "5.7.1") || !strings.Contains(se.Error(), tc.reason) {
			t.Fatalf("%s under policy reject: %v; want 550 5.7.1 naming %s", tc.name, err, tc.reason)
		}
		ev := anomalyEvent(t, st, store.KindAnomalia, func(e *store.Event) bool { return strings.Contains(e.Subject, tok) })
		if !strings.HasPrefix(ev.ErrorDetail, tc.reason+": ") {
			t.Errorf("%s: logged %q", tc.name, ev.ErrorDetail)
		}
		none(t, mailbox(b, bruno), tok)
	}
	tok := mailtest.Token("valid")
	m, _ := bustaOf(t, providerBuilder(t, l, a), "alice@"+a.Domain, []string{bruno.Address}, tok, "valida\n")
	if err := inject(p.Addr, a, "mx."+a.Domain, "alice@"+a.Domain, []string{bruno.Address}, m.Bytes()); err != nil {
		t.Fatalf("a valid busta under policy reject: %v", err)
	}
	classify(t, l, waitOne(t, mailbox(b, bruno), tok), pec.KindBusta)
	emitted(t, l, waitOne(t, mailbox(a, ricevuteA), tok), pec.KindPresaInCarico)
}

// realAnchors are the real CA certificates of the corpus (pec/smime/testdata).
func realAnchors() []string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "pec", "smime", "testdata")
	return []string{filepath.Join(dir, "agid-ca1-2018.pem"), filepath.Join(dir, "agid-ca1-2021.pem"), filepath.Join(dir, "digitpa-ca1.pem")}
}

// labRecords are the records of the lab's providers index (its LDIF).
func labRecords(t *testing.T, l *lab.Lab) []*igpec.Record {
	t.Helper()
	src, err := igpec.NewSource(igpec.Config{Source: l.LDAP.LDIF}, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := igpec.LoadSnapshot(context.Background(), src, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Records
}

// corpusIndex writes an LDIF with the lab's providers and, when withCorpus, the real corpus
// signers (Aruba, Sogei) with the domains their messages show; their mailReceipt is a mailbox
// of O so that their prese in carico can go somewhere.
func corpusIndex(t *testing.T, l *lab.Lab, o *lab.Provider, msgs map[string]*pec.Classified, withCorpus bool, path string) {
	t.Helper()
	records := labRecords(t, l)
	if withCorpus {
		certs := map[string][]*x509.Certificate{}
		for name, c := range msgs {
			if c.Signer != nil && !slices.ContainsFunc(certs[name[:5]], c.Signer.Equal) {
				certs[name[:5]] = append(certs[name[:5]], c.Signer)
			}
		}
		domains := map[string][]string{"aruba": {"pec.aruba.it", "pec.it", "pec.flosslab.it"}, "sogei": {"pcert.sogei.it", "pec.fatturapa.it"}}
		names := map[string]string{"aruba": "Aruba PEC S.p.A.", "sogei": "Sogei S.p.A."}
		for p, cs := range certs {
			rec, err := igpec.NewRecord(names[p], "", user(t, o, "olga").Address, cs, domains[p]...)
			if err != nil {
				t.Fatal(err)
			}
			records = append(records, rec)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := igpec.WriteLDIF(f, records); err != nil {
		t.Fatal(err)
	}
}

// The real bustas and receipts of the corpus injected at B's MX: with an index listing their
// signers and their CA as anchor, accepted as PEC, verified at their signing time (bustas taken
// in charge, every message delivered byte for byte); with an index that does not list them,
// bustas di anomalia. The busta edited upstream is an anomaly either way.
func rxCorpus(t *testing.T, l *lab.Lab, p *privateRX, a, b, o *lab.Provider) {
	// One mailbox per phase: an anomaly keeps the Message-ID of what it wraps, and the delivery
	// point stores a system message once per mailbox (pec/delivery.go), so the unlisted phase
	// must not land where the listed phase put the same messages.
	rcpt := map[bool]lab.User{true: user(t, b, "bruno"), false: user(t, b, "bianca")}
	// The corpus keeps its Message-IDs, so a second run in the same lab would find them
	// stored already: each run delivers to its own sub-address (Dovecot's recipient_delimiter
	// "+"; the delivery point keys its records by the envelope recipient).
	detail := mailtest.Token("run")
	addr := func(u lab.User) string {
		local, domain, _ := strings.Cut(u.Address, "@")
		return local + "+" + detail + "@" + domain
	}
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	msgs := map[string]*pec.Classified{}
	raws := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raws[filepath.Base(f)] = pec.ToCRLF(raw)
		msgs[filepath.Base(f)] = pec.Classify(raw, pec.ClassifyOptions{})
	}
	if len(msgs) != 12 {
		t.Fatalf("%d corpus messages", len(msgs))
	}
	st := openStore(t, p.cfg)
	for _, listed := range []bool{true, false} {
		idx := filepath.Join(p.dir, "index-"+map[bool]string{true: "with", false: "without"}[listed]+".ldif")
		corpusIndex(t, l, o, msgs, listed, idx)
		anchors := append([]string{l.CA.Cert}, realAnchors()...)
		p.restart(t, func(y map[string]any) {
			y["index"] = map[string]any{"source": idx, "refresh": "1h"}
			// Archived messages from 2014-2021: the signing window is opened wide for them.
			y["trust"] = map[string]any{"anchors": anchors, "crls": []string{l.CA.CRL}, "signing_window": "200000h"}
		})
		for name, raw := range raws {
			edited := strings.Contains(name, "edited")
			t.Run(map[bool]string{true: "listed/", false: "unlisted/"}[listed]+name, func(t *testing.T) {
				helo := heloToken("corpus")
				from := ""
				if v, ok := msgs[name].Header.Get("From"); ok {
					if addr, err := mail.ParseAddress(v); err == nil {
						from = addr.Address
					}
				}
				sent := time.Now().Add(-time.Second)
				if err := inject(p.Addr, o, helo, from, []string{addr(rcpt[listed])}, raw); err != nil {
					t.Fatal(err)
				}
				got := pec.ToCRLF(waitOneField(t, mailbox(b, rcpt[listed]), "Received", helo))
				if !listed || edited {
					anomalyOf(t, l, got, asQueued(raw))
					reason := map[bool]string{true: "signature", false: "signer-unlisted"}[edited]
					subj, _ := msgs[name].Header.Get("Subject")
					ev := anomalyEvent(t, st, store.KindBustaAnomalia, func(e *store.Event) bool {
						return e.Subject == pec.DecodeHeader(subj) && e.Time.After(sent)
					})
					if !strings.HasPrefix(ev.ErrorDetail, reason+": ") {
						t.Errorf("logged %q, want the reason %s", ev.ErrorDetail, reason)
					}
					return
				}
				if !strings.HasSuffix(string(got), string(asQueued(raw))) {
					t.Fatal("not delivered byte for byte")
				}
				c := pec.Classify(got, pec.ClassifyOptions{})
				if c.Kind != msgs[name].Kind || c.Verified == nil {
					t.Fatalf("delivered as %v (%v)", c.Kind, c.SigErr)
				}
				if c.Kind == pec.KindBusta {
					waitOutbox(t, st, c.Daticert.Dati.Identificativo, "presa-in-carico")
				}
			})
		}
	}
}

// waitOutbox waits until the outbox of st holds an item of kind for identificativo id (pending
// or already sent).
func waitOutbox(t *testing.T, st store.Store, id, kind string) {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for {
		for _, state := range []store.OutboxState{store.OutboxSent, store.OutboxPending} {
			items, err := st.ListOutbox(context.Background(), state, 10000)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				if it.Identificativo == id && it.Kind == kind {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s for %s in the outbox", kind, id)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// A dependency of the reception point stopped: the peer's MTA gets a temporary failure and
// nothing is lost; once it is back, the retry is taken in charge once (one copy, one presa in
// carico). The providers index is a local copy (RFC 6109 §4.5): with slapd down B keeps
// deciding, until the copy is stale, and then only a signer missing from it is deferred.
func rxDependencies(t *testing.T, l *lab.Lab, p *privateRX, a, b, o *lab.Provider) {
	ldif, err := os.ReadFile(l.LDAP.LDIF)
	if err != nil {
		t.Fatal(err)
	}
	slapd := lab.PrivateSlapd(t, ldif)
	crl := serveCRL(t, l.CA.CRL)
	p.restart(t, func(y map[string]any) {
		y["index"] = map[string]any{"source": slapd.URL + "/o=postacert", "refresh": "1s", "max_age": "3s"}
		// A CRL is fetched at most once a minute (pec.Trust), so it goes stale a little after
		// crl_max_age once its distribution point is down.
		y["trust"] = map[string]any{"anchors": []string{l.CA.Cert}, "crls": []string{crl.url()}, "crl_refresh": "1s", "crl_max_age": "65s"}
	})
	bruno, ricevuteA := user(t, b, "bruno"), user(t, a, "ricevute")
	var lock *sql.Tx
	for _, tc := range []struct {
		name, cause   string // cause: in the private pec-milter's log line for the failure (|: one of)
		forged        bool   // a busta by a signer not in the index (else a valid one of A)
		breakIt, heal func(t *testing.T)
	}{
		{"clamd", "pec: scan:", false, func(*testing.T) { p.clamd.Stop() }, func(*testing.T) { p.clamd.Start() }},
		{"hsm", "signer unavailable", false, func(t *testing.T) { rename(t, p.tokens, p.tokens+".away") }, func(t *testing.T) { rename(t, p.tokens+".away", p.tokens) }},
		// SQLite waits for the lock longer than milter.timeout: the deadline answers first.
		{"store", "pec: commit:|pec: deadline:", false, func(t *testing.T) { lock = lockDB(t, p.db) }, func(*testing.T) { lock.Rollback() }},
		{"slapd", "pec: index:", true, func(t *testing.T) {
			slapd.Stop()
			time.Sleep(5 * time.Second) // past index.max_age
			// The local copy still answers for the signers it lists.
			tok := mailtest.Token("idx-valid")
			m, _ := bustaOf(t, providerBuilder(t, l, a), "alice@"+a.Domain, []string{bruno.Address}, tok, "x\n")
			if err := inject(p.Addr, a, "mx."+a.Domain, "alice@"+a.Domain, []string{bruno.Address}, m.Bytes()); err != nil {
				t.Errorf("a listed signer while slapd is down: %v", err)
			}
		}, func(*testing.T) { slapd.Load(ldif) }},
		{"crl", "pec: revocation:", false, func(t *testing.T) {
			crl.stop()
			// Wait until the cached copy is too old: a probe busta is temp-failed.
			deadline := time.Now().Add(3 * time.Minute)
			for {
				tok := mailtest.Token("crl-probe")
				m, _ := bustaOf(t, providerBuilder(t, l, a), "alice@"+a.Domain, []string{bruno.Address}, tok, "x\n")
				var se *mailtest.StepError
				err := inject(p.Addr, a, "mx."+a.Domain, "alice@"+a.Domain, []string{bruno.Address}, m.Bytes())
				if errors.As(err, &se) && se.Code == 451 || time.Now().After(deadline) {
					return
				}
				time.Sleep(5 * time.Second)
			}
		}, func(t *testing.T) { crl.start(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := mailtest.Token("dep-" + tc.name)
			bd := providerBuilder(t, l, a)
			if tc.forged {
				bd = signerBuilder(t, l, "f")
			}
			m, _ := bustaOf(t, bd, "alice@"+a.Domain, []string{bruno.Address}, tok, "dipendenze\n")
			send := func() error {
				return inject(p.Addr, a, "mx."+a.Domain, "alice@"+a.Domain, []string{bruno.Address}, m.Bytes())
			}
			tc.breakIt(t)
			err := send()
			var se *mailtest.StepError
			if !errors.As(err, &se) || se.Step != "DATA" || se.Code < 400 || se.Code > 499 || !strings.Contains(se.Error(), "4.3.0") {
				tc.heal(t)
				t.Fatalf("with %s stopped: %v; want 4xx 4.3.0 at DATA", tc.name, err)
			}
			if last := lastLine(p.log(t), "pec temporary failure"); !containsAny(last, tc.cause) {
				t.Errorf("the temporary failure was not caused by %s: %s", tc.name, last)
			}
			tc.heal(t)
			deadline := time.Now().Add(150 * time.Second) // a CRL is fetched again at most once a minute
			for err = send(); err != nil && time.Now().Before(deadline); err = send() {
				time.Sleep(2 * time.Second)
			}
			if err != nil {
				t.Fatalf("after %s came back: %v", tc.name, err)
			}
			got := waitOne(t, mailbox(b, bruno), tok)
			if tc.forged {
				anomalyOf(t, l, got, nil)
				return
			}
			classify(t, l, got, pec.KindBusta)
			emitted(t, l, waitOne(t, mailbox(a, ricevuteA), tok), pec.KindPresaInCarico)
		})
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// lockDB holds SQLite's write lock on db until the returned transaction ends.
func lockDB(t *testing.T, db string) *sql.Tx {
	t.Helper()
	h, err := sql.Open("sqlite3", "file:"+db+"?_txlock=exclusive")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	tx, err := h.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("CREATE TABLE IF NOT EXISTS rxtest_lock(x)"); err != nil {
		t.Fatal(err)
	}
	return tx
}

func lastLine(log, substr string) string {
	last := ""
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, substr) {
			last = line
		}
	}
	return last
}

// crlServer serves the lab CA's CRL over http (a CRL distribution point), and can stop.
type crlServer struct {
	file, addr string
	srv        *http.Server
}

func serveCRL(t *testing.T, file string) *crlServer {
	t.Helper()
	c := &crlServer{file: file}
	c.start(t)
	t.Cleanup(c.stop)
	return c
}

func (c *crlServer) url() string { return "http://" + c.addr + "/ca1.crl" }

func (c *crlServer) start(t *testing.T) {
	t.Helper()
	addr := c.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, c.file) })}
	go c.srv.Serve(ln)
}

func (c *crlServer) stop() {
	if c.srv != nil {
		c.srv.Close()
		c.srv = nil
	}
}
