package pec_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// TestTrustOCSPOpenSSL: the responses come from OpenSSL's own OCSP responder (openssl ocsp
// with an index file, the CA's key and certificate), so that what we parse and verify is
// another implementation's output, not ours. openssl runs once per request on the request
// we posted (-reqin/-respout), served from 127.0.0.1 (its -port listener would bind every
// address). A certificate the index lists as valid is trusted without any CRL; one it lists
// as revoked (keyCompromise) is refused; one it does not list is unknown: a 4xx.
func TestTrustOCSPOpenSSL(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().Truncate(time.Second)
	ca := trNewCA(t, 10, now.AddDate(-1, 0, 0), now.AddDate(5, 0, 0))
	keyDER, err := x509.MarshalPKCS8PrivateKey(trKey(10))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caPEM := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	caKey := write("ca.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	index := filepath.Join(dir, "index.txt")

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f, err := os.CreateTemp(dir, "req-*.der")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		f.Write(body)
		f.Close()
		out := f.Name() + ".resp"
		cmd := exec.Command("openssl", "ocsp", "-index", index, "-CA", caPEM, "-rsigner", caPEM, "-rkey", caKey,
			"-reqin", f.Name(), "-respout", out, "-ndays", "1")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("openssl ocsp: %v: %s", err, msg)
			http.Error(w, "openssl failed", 500)
			return
		}
		resp, _ := os.ReadFile(out)
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)

	issue := func(keyIndex int) *x509.Certificate {
		k := trKey(keyIndex)
		return trCreate(t, &x509.Certificate{
			Subject:   pkix.Name{Country: []string{"IT"}, Organization: []string{trProvider}, CommonName: "Posta Certificata " + trProvider},
			NotBefore: now.AddDate(0, -1, 0), NotAfter: now.AddDate(1, 0, 0),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
			EmailAddresses: []string{"posta-certificata@pec-b.test"}, SubjectKeyId: trSKI(k),
			OCSPServer: []string{srv.URL},
		}, ca.cert, k.Public(), ca.key)
	}
	valid, revoked, unlisted := issue(11), issue(12), issue(13)
	// openssl's index: status, expiry, revocation[,reason], serial in hex, file, subject.
	ts := func(t time.Time) string { return t.UTC().Format("060102150405Z") }
	line := func(c *x509.Certificate, status, rev string) string {
		return fmt.Sprintf("%s\t%s\t%s\t%X\tunknown\t/CN=%s\n", status, ts(c.NotAfter), rev, c.SerialNumber, c.Subject.CommonName)
	}
	write("index.txt", []byte(line(valid, "V", "")+line(revoked, "R", ts(now.Add(-48*time.Hour))+",keyCompromise")))

	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		key  int
		want string // "" trusted, "revoked", "unknown"
	}{{"valid", valid, 11, ""}, {"revoked", revoked, 12, "revoked"}, {"not in the index", unlisted, 13, "unknown"}} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{tc.cert}, "pec-b.test")
			if err != nil {
				t.Fatal(err)
			}
			tr, err := pec.NewTrust(pec.TrustConfig{Anchors: []*x509.Certificate{ca.cert}, OCSP: true, SigningWindow: 24 * time.Hour},
				pec.TrustDeps{Index: igpec.NewSnapshot("test", now, rec)})
			if err != nil {
				t.Fatal(err)
			}
			raw := trMsg{key: trKey(tc.key), chain: []*x509.Certificate{tc.cert}, from: "posta-certificata@pec-b.test",
				mittente: "bruno@pec-b.test", at: now.Add(-time.Hour)}.bytes(t)
			switch tc.want {
			case "":
				if r := trCheck(t, tr, raw); !r.Trusted || len(r.Findings) != 0 {
					t.Fatalf("trusted %v: %+v", r.Trusted, r.Findings)
				}
			case "revoked":
				r := trCheck(t, tr, raw)
				wantError(t, r, "revoked")
				if !strings.Contains(fmt.Sprint(r.Findings), "reason 1") {
					t.Errorf("not revoked for a key compromise: %+v", r.Findings)
				}
			default:
				wantUnknown(t, tr, raw, "does not know the certificate")
			}
		})
	}
}
