package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/cmd/internal/daemon"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/igpec"
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
		// No clamd section: the delivery point does not scan, so validation passes and the
		// run stops only at the next check, the missing doveadm key.
		{"clamd: {addr: \"127.0.0.1:3310\", timeout: 30s}\n", "", "config: lmtp.doveadm.api_key_env: environment variable PEC_DOVEADM_KEY_A is empty or unset"},
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

// The delivery point scans nothing, so a file without a clamd section passes pec-lmtpd's
// validation and opens every dependency it needs (a PEM key, an LDIF index, a SQLite store):
// clamd is not opened. pec-milter, which scans, still requires it: the same file is refused
// by its validation and by daemon.Open without WithoutScanner.
func TestOpenWithoutClamd(t *testing.T) {
	dir := t.TempDir()
	const name, domain = "Provider A S.p.A.", "pec-a.test"
	kr := hsmtest.New(t, name, domain)
	key, chain, err := kr.SignerFor(domain)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("a.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	certFile := write("a-chain.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}))
	var ldif bytes.Buffer
	igpec.WriteLDIF(&ldif, []*igpec.Record{{DN: "providerName=" + name + ",o=postacert", Name: name,
		Certificates: chain[:1], Hashes: []string{igpec.CertificateHash(chain[0].Raw)},
		MailReceipt: "ricevute@" + domain, Domains: []string{domain}}})
	index := write("igpec.ldif", ldif.Bytes())
	apiKey := write("doveadm.key", []byte("secret"))
	doc := `
provider: {name: "` + name + `", domains: [` + domain + `], service_address: posta-certificata@` + domain + `, receipt_address: ricevute@` + domain + `}
signer: {pem_key: ` + keyFile + `, certificate: ` + certFile + `}
index: {source: ` + index + `, cache: "off"}
store: {driver: sqlite, dsn: ` + filepath.Join(dir, "pec.db") + `}
lmtp: {listen: "unix:` + filepath.Join(dir, "lmtp.sock") + `", dovecot: "unix:/run/dovecot/lmtp", doveadm: {url: "http://127.0.0.1:1/doveadm/v1", api_key_file: ` + apiKey + `}}
reinject: {addr: "unix:` + filepath.Join(dir, "pec-reinject") + `"}
confirm: {listen: "unix:` + filepath.Join(dir, "confirm.sock") + `"}
milter: {listen: "unix:` + filepath.Join(dir, "milter.sock") + `"}
log: {level: error}
`
	path := write("pec.yaml", []byte(doc))
	d, err := open(path)
	if err != nil {
		t.Fatalf("pec-lmtpd without clamd: %v", err)
	}
	if d.Scanner != nil || d.Engine == nil {
		t.Errorf("opened scanner %v, engine %v: want no scanner and an engine", d.Scanner, d.Engine)
	}
	if err := d.Close(); err != nil {
		t.Error(err)
	}

	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ValidateMilter(); err == nil || !strings.Contains(err.Error(), "clamd.addr") {
		t.Errorf("pec-milter validation without clamd: %v, want clamd.addr required", err)
	}
	if d, err := daemon.Open(cfg, "pec-milter"); err == nil || !strings.Contains(err.Error(), "clamd.addr") {
		if d != nil {
			d.Close()
		}
		t.Errorf("daemon.Open without clamd and without WithoutScanner: %v, want clamd.addr required", err)
	}
}
