package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad configuration stops the program at start with an error naming the key, before any
// dependency is touched.
func TestRunRejectsBadConfig(t *testing.T) {
	base, err := os.ReadFile("../internal/config/testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`milter: {listen: "unix:/tmp/pec-lab/a/run/milter.sock"}`, `milter: {listen: ""}`, "config: milter.listen:"},
		{"hard_max_size: 100MB", "hard_max_size: lots", "config: limits.hard_max_size:"},
	} {
		doc := strings.Replace(string(base), tc.old, tc.new, 1)
		if doc == string(base) {
			t.Fatalf("case %q does not apply", tc.old)
		}
		p := filepath.Join(t.TempDir(), "pec.yaml")
		os.WriteFile(p, []byte(doc), 0o600)
		if err := run(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run: %v, want %q", err, tc.want)
		}
	}
	if err := run(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}
