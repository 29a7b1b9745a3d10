package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad configuration stops the program at start with an error naming the key, before any
// dependency is touched; so does a doveadm API key that is not in the environment.
func TestRunRejectsBadConfig(t *testing.T) {
	base, err := os.ReadFile("../internal/config/testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PEC_DOVEADM_KEY_A", "")
	for _, tc := range []struct{ old, new, want string }{
		{`listen: "unix:/tmp/pec-lab/a/run/lmtp.sock"`, `listen: ""`, "config: lmtp.listen:"},
		{`listen: "unix:/tmp/pec-lab/a/run/lmtp.sock"`, `listen: "inet:127.0.0.10:2424"`, "config: lmtp.listen: \"inet:127.0.0.10:2424\" is a TCP listener"},
		{`listen: "unix:/tmp/pec-lab/a/run/lmtp.sock"`, `listen: "inet:127.0.0.10:2424", allow_inet_peers: [localhost]`, "config: lmtp.allow_inet_peers[0]:"},
		{`dovecot: "unix:/tmp/pec-lab/a/dovecot/run/lmtp"`, `dovecot: "dovecot"`, "config: lmtp.dovecot:"},
		{`doveadm: {url: "http://127.0.0.10:8080/doveadm/v1", api_key_env: PEC_DOVEADM_KEY_A}`, `doveadm: {}`, "config: lmtp.doveadm.url:"},
		{`api_key_env: PEC_DOVEADM_KEY_A}`, `api_key_env: PEC_DOVEADM_KEY_A, api_key_file: /k}`, "config: lmtp.doveadm.api_key_env:"},
		{`metrics_listen: "127.0.0.10:9101"`, `metrics_listen: "127.0.0.10:9101", lease: 1m`, "config: lmtp.lease:"},
		{`metrics_listen: "127.0.0.10:9101"`, `metrics_listen: "127.0.0.10:9101", max_delay: 1s`, "config: lmtp.max_delay:"},
		{`metrics_listen: "127.0.0.10:9101"`, `metrics_listen: "127.0.0.10:9101", timeouts: 1s`, "lmtp"},
		{"hard_max_size: 100MB", "hard_max_size: lots", "config: limits.hard_max_size:"},
		{"nothing to change", "", "config: lmtp.doveadm.api_key_env: environment variable PEC_DOVEADM_KEY_A is empty or unset"},
	} {
		doc := strings.Replace(string(base), tc.old, tc.new, 1)
		if doc == string(base) && tc.old != "nothing to change" {
			t.Fatalf("case %q does not apply", tc.old)
		}
		p := filepath.Join(t.TempDir(), "pec.yaml")
		os.WriteFile(p, []byte(doc), 0o600)
		if err := run(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: run: %v, want %q", tc.new, err, tc.want)
		}
	}
}
