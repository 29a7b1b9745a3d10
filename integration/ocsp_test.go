//go:build integration

package integration

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// TestReceptionOCSP: a reception point of B with trust.ocsp and no CRL, on the lab's real
// Postfix, asks the OCSP responder each signer's certificate names. The responses come from
// openssl ocsp with the lab's CA1 (the intermediate, as AgID CA1 is under its root) signing
// them and its certificate in them. Provider Q's certificate, valid in the responder's index,
// is trusted: its busta is taken in charge. Provider Q2's, revoked there for a key
// compromise (and on no CRL at all), makes its busta a busta di anomalia with the reason in
// the log.
func TestReceptionOCSP(t *testing.T) {
	t.Parallel()
	l, a, b, o := pecLab(t)
	bruno := user(t, b, "bruno")
	rsp := startOCSPResponder(t, l)
	good := ocspSigner(t, l, rsp.url, "Provider Q S.p.A.", "pec-q.test", user(t, o, "olga").Address)
	bad := ocspSigner(t, l, rsp.url, "Provider Q2 S.p.A.", "pec-q2.test", user(t, o, "olga").Address)
	rsp.index(t, good.cert, "V", "")
	rsp.index(t, bad.cert, "R", time.Now().Add(-48*time.Hour).UTC().Format("060102150405Z")+",keyCompromise")

	// The index: the lab's providers and Q, Q2.
	ldif := filepath.Join(t.TempDir(), "index.ldif")
	f, err := os.Create(ldif)
	if err != nil {
		t.Fatal(err)
	}
	if err := igpec.WriteLDIF(f, append(labRecords(t, l), good.rec, bad.rec)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	p := startPrivateRXWith(t, l, b, func(y map[string]any) {
		y["index"] = map[string]any{"source": ldif}
		y["trust"] = map[string]any{"anchors": []string{l.CA.Cert}, "ocsp": true}
	})
	for _, tc := range []struct {
		name    string
		s       *ocspTestSigner
		outcome string
		reason  string
	}{
		{"valid", good, "accepted", ""},
		{"revoked", bad, "anomaly", "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := mailtest.Token("ocsp")
			sender := "quinto@" + tc.s.bd.ID.Domain
			m, tx := bustaOf(t, tc.s.bd, sender, []string{bruno.Address}, tok, "stato via OCSP\n")
			if err := inject(p.Addr, a, "mx."+a.Domain, sender, []string{bruno.Address}, m.Bytes()); err != nil {
				t.Fatalf("inject: %v", err)
			}
			line := receivedLine(t, p, tx.ID, sender)
			if line.Outcome != tc.outcome || !strings.Contains(line.Reason+line.Detail, tc.reason) {
				t.Fatalf("outcome %q reason %q %q; want %q with %q", line.Outcome, line.Reason, line.Detail, tc.outcome, tc.reason)
			}
		})
	}
	if n := rsp.requests.Load(); n < 2 {
		t.Errorf("the responder was asked %d times, want one per signer", n)
	}
}

// receivedLine waits for the private reception point's "pec received" line about the
// transaction id, or from sender (the line of a busta di anomalia has no identificativo).
func receivedLine(t *testing.T, p *privateRX, id, sender string) (line struct {
	Msg, Outcome, Reason, Detail, Identificativo, Subject string
}) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range strings.Split(p.log(t), "\n") {
			if !strings.Contains(s, `"pec received"`) || !(strings.Contains(s, id) || strings.Contains(s, `"mail_from":"`+sender+`"`)) {
				continue
			}
			if err := json.Unmarshal([]byte(s), &line); err != nil {
				t.Fatalf("%v: %s", err, s)
			}
			return line
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no \"pec received\" line for %s in the private reception point's log:\n%s", id, tail([]byte(p.log(t)), 3000))
	return line
}

// ocspResponderLab serves OCSP for the lab's CA1 on 127.0.0.1: each request is answered by
// openssl ocsp (-reqin/-respout) from an index file, signed with CA1's key.
type ocspResponderLab struct {
	url, dir, idx string
	requests      atomic.Int64
}

func startOCSPResponder(t *testing.T, l *lab.Lab) *ocspResponderLab {
	t.Helper()
	r := &ocspResponderLab{dir: t.TempDir()}
	r.idx = filepath.Join(r.dir, "index.txt")
	if err := os.WriteFile(r.idx, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		body, _ := io.ReadAll(req.Body)
		in := filepath.Join(r.dir, fmt.Sprintf("req-%d.der", r.requests.Load()))
		os.WriteFile(in, body, 0o600)
		out := in + ".resp"
		cmd := exec.Command("openssl", "ocsp", "-index", r.idx, "-CA", l.CA.Intermediate, "-rsigner", l.CA.Intermediate,
			"-rkey", l.CA.IntermediateKey, "-reqin", in, "-respout", out, "-ndays", "1")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("openssl ocsp: %v: %s", err, msg)
			http.Error(w, "openssl failed", http.StatusInternalServerError)
			return
		}
		resp, _ := os.ReadFile(out)
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// index adds cert to the responder's index with status V or R (rev: time[,reason]).
func (r *ocspResponderLab) index(t *testing.T, cert *x509.Certificate, status, rev string) {
	t.Helper()
	f, err := os.OpenFile(r.idx, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\t%s\t%X\tunknown\t/CN=%s\n", status, cert.NotAfter.UTC().Format("060102150405Z"), rev, cert.SerialNumber, cert.Subject.CommonName)
}

// ocspTestSigner is a provider certificate from the lab's CA1 that names the responder in
// its AIA, its index record and a builder that signs with it.
type ocspTestSigner struct {
	cert *x509.Certificate
	rec  *igpec.Record
	bd   *pec.Builder
}

func ocspSigner(t *testing.T, l *lab.Lab, responder, name, domain, receipt string) *ocspTestSigner {
	t.Helper()
	chain, err := hsm.ReadChain(l.CA.Intermediate)
	if err != nil || len(chain) == 0 {
		t.Fatalf("%s: %v", l.CA.Intermediate, err)
	}
	raw, err := os.ReadFile(l.CA.IntermediateKey)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatalf("%s: no PEM", l.CA.IntermediateKey)
	}
	caKey, err := parseAnyKey(blk)
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	ski := sha1.Sum(spki)
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	service := "posta-certificata@" + domain
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: "Posta Certificata " + name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{service}, SubjectKeyId: ski[:], OCSPServer: []string{responder},
	}, chain[0], k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := igpec.NewRecord(name, "", receipt, []*x509.Certificate{cert}, domain)
	if err != nil {
		t.Fatal(err)
	}
	return &ocspTestSigner{cert: cert, rec: rec, bd: &pec.Builder{
		ID:   pec.Identity{Name: name, Domain: domain, ServiceAddress: service, ReceiptAddress: receipt},
		Keys: signerKeys{k, []*x509.Certificate{cert, chain[0]}}}}
}

// parseAnyKey reads a PKCS#8, PKCS#1 or SEC 1 private key.
func parseAnyKey(blk *pem.Block) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		return k.(crypto.Signer), nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}
