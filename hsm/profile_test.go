package hsm_test

import (
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec/smime"
)

// signerCert extracts the signer certificate of a real multipart/signed PEC message
// (smime.Verify checks the signature over the exact bytes and returns its signer).
func signerCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(corpus.Path("real", name))
	if err != nil {
		t.Fatal(err)
	}
	v, err := smime.Verify(raw, smime.VerifyOptions{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v.Signer
}

func checks(ps []hsm.Problem) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, "\n")
}

// TestCheckProfileReal runs the profile check on real provider certificates (pec-spec §8.2):
// the 2014 one violates RFC 6109 §5.5.2 twice, the 2020 one is clean.
func TestCheckProfileReal(t *testing.T) {
	old := signerCert(t, "aruba-2014-busta.eml")
	got := checks(hsm.CheckProfile(old, "Aruba PEC S.p.A.", "posta-certificata@pec.aruba.it"))
	for _, want := range []string{"basic_constraints: basicConstraints is present", "key_usage: keyUsage is not critical"} {
		if !strings.Contains(got, want) {
			t.Errorf("2014 certificate: %q not in\n%s", want, got)
		}
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("2014 certificate: want exactly two problems, got\n%s", got)
	}
	if hsm.Fingerprint(old) != "AAA71BFD2DBC9FE67AA23C9F33AAF3316DF1AA66" {
		t.Errorf("fingerprint %s", hsm.Fingerprint(old))
	}

	cur := signerCert(t, "aruba-2021-consegna.eml")
	if ps := hsm.CheckProfile(cur, "Aruba PEC S.p.A.", "posta-certificata@pec.aruba.it"); ps != nil {
		t.Errorf("2020 certificate: %s", checks(ps))
	}
	if ps := hsm.CheckProfile(cur, "Provider A S.p.A.", "posta-certificata@pec-a.test"); len(ps) != 2 {
		t.Errorf("2020 certificate for another provider: want subject and san problems, got\n%s", checks(ps))
	}
	if hsm.Fingerprint(cur) != "06B2539D100FEF15BBCC875739385BCAFB07E85D" {
		t.Errorf("fingerprint %s", hsm.Fingerprint(cur))
	}
	at := time.Date(2021, 12, 1, 0, 0, 0, 0, time.UTC)
	if ps := hsm.CheckValidity(cur, at, 30*24*time.Hour); ps != nil {
		t.Errorf("valid in Dec 2021: %s", checks(ps))
	}
	if ps := hsm.CheckValidity(cur, time.Date(2023, 9, 20, 0, 0, 0, 0, time.UTC), 30*24*time.Hour); len(ps) != 1 || !ps[0].Warning {
		t.Errorf("18 days before expiry: %s", checks(ps))
	}
	if ps := hsm.CheckValidity(cur, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), 0); len(ps) != 1 || ps[0].Warning {
		t.Errorf("after expiry: %s", checks(ps))
	}
}
