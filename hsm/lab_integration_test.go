//go:build integration

package hsm_test

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/lab"
)

// TestLabTokens loads each lab provider's key from the shared lab SoftHSM2 (read-only: it
// only signs), checks its certificate chain and profile, and signs with it. The module is
// finalised between tests (no keyring stays open), so pointing SOFTHSM2_CONF at the lab's
// configuration for this test works even though TestMain set up a private one.
func TestLabTokens(t *testing.T) {
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
	for _, p := range l.Providers {
		if p.Token == nil {
			continue
		}
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
			s, chain, err := k.SignerFor(p.Domain)
			if err != nil {
				t.Fatal(err)
			}
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("chain: %v", err)
			}
			if got := hsm.Fingerprint(chain[0]); !strings.EqualFold(got, p.CertSHA1) {
				t.Errorf("fingerprint %s, lab.json says %s", got, p.CertSHA1)
			}
			if err := signOnce(s); err != nil {
				t.Fatal(err)
			}
		})
	}
}
