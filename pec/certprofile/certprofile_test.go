package certprofile_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec/certprofile"
	"github.com/gestore-pec/gestore/pec/smime"
)

const (
	name    = "Provider A S.p.A."
	service = "posta-certificata@pec-a.test"
)

// issue makes a certificate from tmpl, signed by a throw-away CA key (the profile check
// does not look at the issuer).
func issue(t *testing.T, edit func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"}, SubjectKeyId: []byte{1, 2, 3, 4},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(2),
		Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: "Posta Certificata " + name},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{service},
		SubjectKeyId:   []byte{5, 6, 7, 8},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func checks(fs []certprofile.Finding) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.String())
	}
	return strings.Join(s, "\n")
}

func TestGoodCertificate(t *testing.T) {
	c := issue(t, nil)
	for _, role := range []certprofile.Role{certprofile.Own, certprofile.Peer} {
		if fs := certprofile.Check(c, certprofile.Options{Role: role, ProviderName: name, ServiceAddress: service}); fs != nil {
			t.Errorf("role %d: %s", role, checks(fs))
		}
	}
	// Without expectations only the shape is checked.
	if fs := certprofile.Check(c, certprofile.Options{}); fs != nil {
		t.Errorf("no expectations: %s", checks(fs))
	}
}

// Each fault is an Error for our own certificate and a Warning for a peer's; the SHOULD NOT
// (emailAddress in the subject) is a Warning for both.
func TestFaults(t *testing.T) {
	kuNotCritical, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})
	for _, tc := range []struct {
		check  string
		must   bool
		edit   func(*x509.Certificate)
		opts   certprofile.Options
		detail string
	}{
		{"basic_constraints", true, func(c *x509.Certificate) { c.BasicConstraintsValid = true }, certprofile.Options{}, "basicConstraints is present"},
		{"key_usage", true, func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Value: kuNotCritical}}
		}, certprofile.Options{}, "keyUsage is not critical"},
		{"key_usage", true, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }, certprofile.Options{}, "lacks digitalSignature"},
		{"key_usage", true, func(c *x509.Certificate) { c.KeyUsage = 0 }, certprofile.Options{}, "keyUsage is missing"},
		{"san", true, func(c *x509.Certificate) { c.EmailAddresses = nil }, certprofile.Options{}, "no rfc822Name"},
		{"san", true, nil, certprofile.Options{ServiceAddress: "posta-certificata@pec-z.test"}, "is not the service address"},
		{"subject", true, nil, certprofile.Options{ProviderName: "Provider Z S.p.A."}, "neither the O nor in the CN"},
		{"subject", false, func(c *x509.Certificate) {
			c.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: service}}
		}, certprofile.Options{}, "emailAddress"},
		{"ski", true, func(c *x509.Certificate) { c.SubjectKeyId = nil }, certprofile.Options{}, "subjectKeyIdentifier is missing"},
		{"eku", true, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, certprofile.Options{}, "without emailProtection"},
		{"critical", true, func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}}
		}, certprofile.Options{}, "is critical"},
	} {
		c := issue(t, tc.edit)
		for _, role := range []certprofile.Role{certprofile.Own, certprofile.Peer} {
			opts := tc.opts
			opts.Role = role
			fs := certprofile.Check(c, opts)
			if len(fs) != 1 || fs[0].Check != tc.check || !strings.Contains(fs[0].Detail, tc.detail) {
				t.Errorf("%s (%s), role %d: got\n%s", tc.check, tc.detail, role, checks(fs))
				continue
			}
			want := certprofile.Warning
			if role == certprofile.Own && tc.must {
				want = certprofile.Error
			}
			if fs[0].Severity != want {
				t.Errorf("%s (%s), role %d: severity %s, want %s", tc.check, tc.detail, role, fs[0].Severity, want)
			}
		}
	}
}

func signer(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(corpus.Path("real", file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := smime.Verify(raw, smime.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v.Signer
}

// The real certificates (pec-spec.md §8.2): the DigitPA-era one violates §5.5.2 twice, and as
// a peer's certificate that is two warnings; the AgID CA1-era one conforms.
func TestRealCertificates(t *testing.T) {
	old := certprofile.Check(signer(t, "aruba-2014-busta.eml"), certprofile.Options{Role: certprofile.Peer, ProviderName: "Aruba PEC S.p.A.", ServiceAddress: "posta-certificata@pec.aruba.it"})
	got := checks(old)
	if len(old) != 2 || !strings.Contains(got, "warning: basic_constraints") || !strings.Contains(got, "warning: key_usage: keyUsage is not critical") {
		t.Errorf("2014 certificate:\n%s", got)
	}
	for _, f := range []string{"aruba-2021-consegna.eml", "sogei-2018-busta-breve-1.eml"} {
		if fs := certprofile.Check(signer(t, f), certprofile.Options{Role: certprofile.Own}); fs != nil {
			t.Errorf("%s: %s", f, checks(fs))
		}
	}
}
