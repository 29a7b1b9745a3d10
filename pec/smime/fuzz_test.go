package smime

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gestore-pec/gestore/internal/corpus"
)

func seedCorpus(f *testing.F) {
	paths, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	rem, _ := filepath.Glob(corpus.Path("agid-rem-policy-it", "*", "*.eml"))
	for _, p := range append(paths, rem...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzVerify feeds arbitrary messages to Verify: it must not panic, and every error must
// wrap one of the package sentinels.
func FuzzVerify(f *testing.F) {
	seedCorpus(f)
	for _, sc := range signers(f) {
		f.Add(signedMessage(f, sc, crypto.SHA256, 600))
		f.Add(signedMessage(f, sc, crypto.SHA1, 100))
	}
	f.Add([]byte("Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABAVjaWFvCgAAAAAAAA==\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		v, err := Verify(msg, VerifyOptions{})
		if err != nil {
			if !errors.Is(err, ErrNotSigned) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUntrusted) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if v.Signer == nil || v.Entity == nil || v.Hash == 0 {
			t.Fatalf("incomplete result %+v", v)
		}
	})
}

// FuzzParseCMS feeds arbitrary DER/BER to the CMS parser.
func FuzzParseCMS(f *testing.F) {
	paths, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if _, err := Verify(b, VerifyOptions{}); err == nil {
			f.Add(p7sOf(f, canonicalCRLF(b)))
		}
	}
	for _, sc := range signers(f) {
		f.Add(p7sOf(f, signedMessage(f, sc, crypto.SHA256, 100)))
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := parseSignedData(der)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		v := &Verified{}
		_ = sd.verifySigners([][]byte{[]byte("x\r\n")}, v)
	})
}

// FuzzVerifyCMS feeds arbitrary DER/BER to VerifyCMS, attached and detached (a .ldif.p7m
// from another provider, a TSA answer): it must not panic, and every error must wrap a
// package sentinel.
func FuzzVerifyCMS(f *testing.F) {
	logs, _ := filepath.Glob(corpus.Path("ulib-pec-log", "*", "*", "*.log.p7m"))
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	for _, sc := range signers(f) {
		for _, detached := range []bool{false, true} {
			p7, err := SignCMS([]byte("pec-log-seal/1\n"), sc.signer, sc.chain, CMSOptions{Detached: detached})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p7, detached)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte, detached bool) {
		var content []byte
		if detached {
			content = []byte("pec-log-seal/1\n")
		}
		v, err := VerifyCMS(der, content, VerifyOptions{})
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUntrusted) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if v.Signer == nil || v.Entity == nil || v.Hash == 0 || v.Signers == 0 {
			t.Fatalf("incomplete result %+v", v)
		}
	})
}
