package inspect

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gestore-pec/gestore/internal/corpus"
)

// TestCorpus: real bustas, receipts and REM messages carry nothing the default policy
// refuses or flags (no false positive on what providers really send).
func TestCorpus(t *testing.T) {
	var files []string
	err := filepath.WalkDir(corpus.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && filepath.Ext(p) == ".eml" {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 20 {
		t.Fatalf("%d corpus messages: %v", len(files), err)
	}
	in := newInspector(t, DefaultPolicy(), Limits{})
	for _, f := range files {
		msg, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := in.Inspect(msg)
		if r.Verdict != Clean || r.Parts < 2 {
			t.Errorf("%s: %v, %d parts, %+v", filepath.Base(f), r.Verdict, r.Parts, r.Findings)
		}
	}
}
