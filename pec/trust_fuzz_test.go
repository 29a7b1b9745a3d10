package pec_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
)

// FuzzTrust runs the trust check on arbitrary message bytes, with an index, anchors and a
// CRL configured, so every step can be reached. Seeds: a valid message of the test PKI,
// variants of it, and the real corpus. Invariants: no panic; a result always; the only error
// is a temporary ErrRevocationUnknown; Trusted agrees with the findings; a trusted message
// has a provider, a signer and a chain.
func FuzzTrust(f *testing.F) {
	fx := newTrFix(f)
	f.Add(fx.msg.bytes(f))
	m := fx.msg
	m.from = "posta-certificata@pec-z.test"
	f.Add(m.bytes(f))
	m = fx.msg
	m.mittente = "x@pec-a.test"
	f.Add(m.bytes(f))
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("From: a@b\r\nContent-Type: multipart/signed; boundary=x; protocol=\"application/pkcs7-signature\"\r\n\r\n--x\r\n\r\nhi\r\n--x\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--x--\r\n"))
	tr := fx.trust(f, fx.index)
	f.Fuzz(func(t *testing.T, msg []byte) {
		tm := time.AfterFunc(5*time.Second, func() { panic("WATCHDOG: Trust.Check hangs") })
		defer tm.Stop()
		for _, c := range []*pec.Classified{nil, pec.Classify(msg, pec.ClassifyOptions{SkipSignature: true})} {
			r, err := tr.Check(context.Background(), msg, c)
			if r == nil {
				t.Fatal("no result")
			}
			if err != nil && !errors.Is(err, pec.ErrRevocationUnknown) {
				t.Fatalf("unexpected error %v", err)
			}
			errs := 0
			for _, d := range r.Findings {
				if d.Code == "" || d.Message == "" {
					t.Fatalf("empty finding %+v", d)
				}
				if d.Severity == pec.Error {
					errs++
				}
			}
			if r.Trusted != (errs == 0) {
				t.Fatalf("Trusted %v with %d errors", r.Trusted, errs)
			}
			if r.Trusted && (r.Provider == nil || r.Signer == nil || len(r.Chain) < 2) {
				t.Fatalf("trusted without provider, signer or chain: %+v", r)
			}
		}
	})
}
