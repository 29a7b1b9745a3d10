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
