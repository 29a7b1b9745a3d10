package pec

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// TestGolden builds every kind with a fixed clock, identificativo and boundary, and compares
// the header and the signed entity (everything before the signature part) with
// testdata/golden/<kind>.eml. The CMS itself changes with the throw-away key, so the
// signature is checked by verifying it. Run with -update after an intended change.
func TestGolden(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	const base = "=_pec_golden"
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			msg := f.build(t, k, Options{Boundary: base, HTML: k == KindConsegnaCompleta})
			if _, err := smime.Verify(msg, smime.VerifyOptions{}); err != nil {
				t.Fatalf("signature: %v", err)
			}
			i := bytes.Index(msg, []byte("\r\n--"+base+".s\r\nContent-Type: application/x-pkcs7-signature"))
			if i < 0 {
				t.Fatal("signature part not found")
			}
			got := msg[:i]
			path := filepath.Join("testdata", "golden", k.String()+".eml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the golden file; run with -update if intended.\ngot:\n%s", path, got)
			}
		})
	}
}
