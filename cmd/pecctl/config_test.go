package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pecctl reads the same strict configuration as the daemons: a misspelt key is an error that
// names it, for every subcommand that takes -config, not a silently ignored setting.
func TestConfigMisspeltKeyRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pec.yaml")
	yaml := "provider:\n  name: Provider A S.p.A.\n  domains: [pec-a.test]\n  servce_address: posta-certificata@pec-a.test\n" +
		"store: {driver: sqlite, dsn: " + filepath.Join(t.TempDir(), "pec.db") + "}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"keys", "check", "-config", path},
		{"index", "lookup", "-config", path, "pec-a.test"},
		{"log", "search", "-config", path},
		{"stats", "-config", path, "-quadrimestre", "2026-3"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "servce_address") {
			t.Errorf("pecctl %s: exit %d, stderr %q; want a failure naming servce_address", strings.Join(args, " "), code, errb.String())
		}
	}
}
