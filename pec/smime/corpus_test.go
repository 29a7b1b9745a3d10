package smime

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
)

func readCorpus(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(corpus.Path(elem...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func realMessages(t testing.TB) []string {
	t.Helper()
	m, err := filepath.Glob(corpus.Path("real", "*.eml"))
	if err != nil || len(m) < 12 {
		t.Fatalf("corpus: %v, %d files", err, len(m))
	}
	return m
}

const editedUpstream = "sogei-2019-busta-edited-upstream.eml"

func TestVerifyRealIntegrity(t *testing.T) {
	for _, p := range realMessages(t) {
		name := filepath.Base(p)
		t.Run(name, func(t *testing.T) {
			msg := readCorpus(t, "real", name)
			v, err := Verify(msg, VerifyOptions{})
			if name == editedUpstream {
				if !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "messageDigest") {
					t.Fatalf("edited message: got %v, want ErrBadSignature on messageDigest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("signer %q issuer %q hash %v micalg %q signed %s", v.Signer.Subject.CommonName, v.Signer.Issuer.CommonName, v.Hash, v.Micalg, v.SigningTime)
		})
	}
}

// caPool loads PEM certificates from pec/smime/testdata.
func caPool(t testing.TB, files ...string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if !p.AppendCertsFromPEM(b) {
			t.Fatalf("%s: no certificate", f)
		}
	}
	return p
}

// AgID CA1 was re-issued in 2021 with the same key; both certificates are anchors.
var agidCA1 = []string{"agid-ca1-2018.pem", "agid-ca1-2021.pem"}

func TestVerifyRealChain(t *testing.T) {
	roots := caPool(t, agidCA1...)
	digitpa := caPool(t, "digitpa-ca1.pem")
	for _, p := range realMessages(t) {
		name := filepath.Base(p)
		if name == editedUpstream {
			continue
		}
		t.Run(name, func(t *testing.T) {
			msg := readCorpus(t, "real", name)
			if strings.HasPrefix(name, "aruba-2014") {
				// DigitPA CA1 era: SHA-1 certificate signatures, which crypto/x509 refuses.
				_, err := Verify(msg, VerifyOptions{Roots: digitpa})
				if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "SHA-1") {
					t.Fatalf("DigitPA chain: got %v, want ErrUntrusted naming SHA-1", err)
				}
				return
			}
			v, err := Verify(msg, VerifyOptions{Roots: roots}) // At zero: the signingTime
			if err != nil {
				t.Fatal(err)
			}
			if len(v.Chains) == 0 || !v.VerifiedAt.Equal(v.SigningTime) {
				t.Fatalf("chains %d, verified at %v, signed %v", len(v.Chains), v.VerifiedAt, v.SigningTime)
			}
			_, err = Verify(msg, VerifyOptions{Roots: roots, At: time.Now()})
			if !errors.Is(err, ErrUntrusted) || !errors.Is(err, ErrExpired) {
				t.Fatalf("at now: got %v, want ErrUntrusted and ErrExpired", err)
			}
			// A foreign root does not anchor it.
			_, err = Verify(msg, VerifyOptions{Roots: digitpa})
			if !errors.Is(err, ErrUntrusted) || errors.Is(err, ErrExpired) {
				t.Fatalf("foreign root: got %v, want ErrUntrusted", err)
			}
		})
	}
}

func TestVerifyREMPolicyIT(t *testing.T) {
	m, err := filepath.Glob(corpus.Path("agid-rem-policy-it", "*", "*.eml"))
	if err != nil || len(m) != 11 {
		t.Fatalf("REM corpus: %v, %d files", err, len(m))
	}
	certs := func(name string) []byte { return readCorpus(t, "agid-rem-policy-it", "certificates", name) }
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(certs("REM-ROOT-CA.crt"))
	inter.AppendCertsFromPEM(certs("REM-POLICY-IT-INTERMEDIATE-CERTIFICATE.crt"))
	for _, p := range m {
		rel, _ := filepath.Rel(corpus.Path("agid-rem-policy-it"), p)
		t.Run(rel, func(t *testing.T) {
			msg, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			v, err := Verify(msg, VerifyOptions{Roots: roots, Intermediates: inter})
			if err != nil {
				t.Fatal(err)
			}
			if v.Protocol != "application/pkcs7-signature" || !strings.HasSuffix(v.Signer.Subject.CommonName, "-REMS provider") || len(v.Chains) == 0 {
				t.Fatalf("protocol %q signer %q chains %d", v.Protocol, v.Signer.Subject.CommonName, len(v.Chains))
			}
			// The test CA is valid until 2036, so the chain also builds today.
			if _, err := Verify(msg, VerifyOptions{Roots: roots, Intermediates: inter, At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			// Without the intermediate the leaf cannot reach the root, unless the CMS has it.
			if _, err := Verify(msg, VerifyOptions{Roots: caPool(t, agidCA1...)}); !errors.Is(err, ErrUntrusted) {
				t.Fatalf("AgID roots: got %v, want ErrUntrusted", err)
			}
		})
	}
}
