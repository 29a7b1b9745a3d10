//go:build integration

package smime_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/pec/smime"
)

// TestLabPKCS11 signs with each lab provider's SoftHSM2 key through hsm (a crypto.Signer
// that is nothing but PKCS#11 underneath), then verifies with Verify and with
// openssl cms -verify against the lab CA, for SHA-256 and SHA-1.
func TestLabPKCS11(t *testing.T) {
	l := lab.ForTest(t)
	t.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	roots, err := hsm.ReadChain(l.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	caPEM, err := os.ReadFile(l.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range l.Providers {
		if p.Token == nil {
			continue
		}
		n++
		t.Run(p.ID, func(t *testing.T) {
			t.Setenv("PEC_TEST_LAB_PIN", p.Token.PIN)
			k, err := hsm.New(hsm.Config{
				PKCS11:      hsm.PKCS11Config{Module: l.SoftHSM.Module, Token: p.Token.Label, Key: p.Token.KeyLabel, KeyID: p.Token.KeyID, PINEnv: "PEC_TEST_LAB_PIN"},
				Certificate: p.CertChain,
			}, hsm.Deps{Provider: hsm.Provider{Name: p.Name, ServiceAddress: p.ServiceAddress, Domains: []string{p.Domain}}})
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			signer, chain, err := k.SignerFor(p.Domain)
			if err != nil {
				t.Fatal(err)
			}
			entity := []byte("Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nRicevuta di accettazione\r\n")
			for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
				ct, body, err := smime.Sign(entity, signer, chain, smime.SignOptions{Hash: h, SigningTime: time.Now()})
				if err != nil {
					t.Fatal(err)
				}
				msg := append([]byte("From: "+p.ServiceAddress+"\r\nMIME-Version: 1.0\r\nContent-Type: "+ct+"\r\n\r\n"), body...)
				v, err := smime.Verify(msg, smime.VerifyOptions{Roots: pool})
				if err != nil {
					t.Fatalf("%v: %v", h, err)
				}
				if !bytes.Equal(v.Entity, entity) || !v.Signer.Equal(chain[0]) {
					t.Fatalf("%v: wrong entity or signer", h)
				}
				dir := t.TempDir()
				mf, cf := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "ca.pem")
				if err := os.WriteFile(mf, msg, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cf, caPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command("openssl", "cms", "-verify", "-CAfile", cf, "-purpose", "any", "-in", mf, "-out", os.DevNull).CombinedOutput(); err != nil {
					t.Fatalf("%v: openssl: %v\n%s", h, err, out)
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("lab has no provider with a token")
	}
}
