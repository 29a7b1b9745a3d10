//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPINNotVisible (issue 12 item 10): the token PIN of a running pec-milter is neither in its
// environment as the kernel shows it (/proc/PID/environ, `ps e`) nor on the command line of
// any process.
func TestPINNotVisible(t *testing.T) {
	t.Parallel()
	_, a, _, _ := pecLab(t)
	if len(a.Token.PIN) < 4 {
		t.Fatalf("lab.json has no PIN for provider a")
	}
	pid, err := os.ReadFile(filepath.Join(filepath.Dir(a.MilterSocket), "pec-milter.pid"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(pid)), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "SOFTHSM2_CONF=") {
		t.Fatalf("not the environment of pec-milter: %d bytes without SOFTHSM2_CONF", len(env))
	}
	if strings.Contains(string(env), a.Token.PIN) {
		t.Errorf("/proc/%s/environ of pec-milter shows the token PIN", strings.TrimSpace(string(pid)))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), a.Token.PIN) {
			t.Errorf("%s shows the token PIN: %q", p, strings.ReplaceAll(string(b), a.Token.PIN, "<PIN>"))
		}
	}
}
