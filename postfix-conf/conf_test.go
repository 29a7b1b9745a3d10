// Package postfixconf holds no code: its tests check the files a sysadmin installs from this
// directory (systemd units, Prometheus rules) against the programs they go with.
package postfixconf

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every metric an alert rule or the dashboard uses is one the programs export (a renamed metric would leave
// an alert that never fires).
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	rules, err := os.ReadFile("prometheus/pec-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile("grafana/pec-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ Panels []json.RawMessage }
	if err := json.Unmarshal(dash, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("dashboard: %v", err)
	}
	rules = append(rules, dash...)
	exported := map[string]bool{}
	def := regexp.MustCompile(`Name:\s+"(pec_[a-z0-9_]+)"`)
	err = filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		for _, m := range def.FindAllSubmatch(b, -1) {
			exported[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`\bpec_[a-z0-9_]+`).FindAllString(string(rules), -1)
	if len(used) == 0 {
		t.Fatal("no pec_ metric in the rules")
	}
	for _, m := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if !exported[base] {
			t.Errorf("alert rule uses %s, which no program exports", m)
		}
	}
}

// The systemd units are valid (systemd-analyze verify), with the binary path replaced by one
// that exists here.
func TestSystemdUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: install systemd (Debian's default init)")
	}
	for _, unit := range []string{"pec-milter.service", "pec-lmtpd.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		s := strings.ReplaceAll(string(b), "/usr/local/bin/", "/bin/true # ")
		s = regexp.MustCompile(`(?m)^ExecStart=/bin/true # .*$`).ReplaceAllString(s, "ExecStart=/bin/true")
		if err := os.WriteFile(filepath.Join(dir, unit), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, unit)).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s: %v\n%s", unit, err, out)
		}
	}
}
