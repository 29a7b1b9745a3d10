package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// newSoftHSM makes a private SoftHSM2 token directory with one empty token. pecctl keys loads
// and finalises the module in each command, and SoftHSM2 reads SOFTHSM2_CONF at C_Initialize,
// so a per-test configuration works as long as nothing else in the process keeps the module.
func newSoftHSM(t *testing.T, label string) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.MkdirAll(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv("PEC_TEST_PIN", "87654321")
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", "87654321").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
}

func pecctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return code, out.String() + errb.String()
}

func TestKeysInitShowCheck(t *testing.T) {
	newSoftHSM(t, "provider-a")
	dir := t.TempDir()
	ca := hsmtest.NewCA(t)
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	os.WriteFile(caCert, ca.PEM(), 0o600)
	os.WriteFile(caKey, ca.KeyPEM(), 0o600)
	chain, csr := filepath.Join(dir, "chain.pem"), filepath.Join(dir, "a.csr")
	config := filepath.Join(dir, "pec.yaml")
	os.WriteFile(config, []byte(`
provider:
  name: "Provider A S.p.A."
  domains: [pec-a.test]
  service_address: posta-certificata@pec-a.test
  production: false
signer:
  pkcs11: {module: `+softhsmModule+`, token: provider-a, key: provider-a, pin_env: PEC_TEST_PIN}
  certificate: `+chain+`
  digest: sha256
  session_wait: 2s
store: {driver: sqlite, dsn: /nonexistent/pec.db}
`), 0o600)

	code, out := pecctl(t, "keys", "init", "-config", config, "-id", "0a", "-csr", csr,
		"-ca-cert", caCert, "-ca-key", caKey, "-out", chain, "-store-cert")
	if code != 0 {
		t.Fatalf("keys init: exit %d\n%s", code, out)
	}
	t.Log(out)

	// The CSR is signed by the token key and carries the profile's subject and address.
	b, _ := os.ReadFile(csr)
	blk, _ := pem.Decode(b)
	req, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || req.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	if req.Subject.Organization[0] != "Provider A S.p.A." || req.EmailAddresses[0] != "posta-certificata@pec-a.test" {
		t.Fatalf("CSR subject %s, SAN %v", req.Subject, req.EmailAddresses)
	}
	certs, err := hsm.ReadChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
		t.Fatal(err)
	}

	// The key was made on the token, never extractable, and the certificate stored next to it.
	lo, err := exec.Command("pkcs11-tool", "--module", softhsmModule, "--token-label", "provider-a", "--login", "--pin", "87654321", "--list-objects").CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, lo)
	}
	for _, want := range []string{"Private Key Object; RSA", "sensitive", "never extractable", "Certificate Object", "label:      provider-a", "ID:         0a"} {
		if !strings.Contains(string(lo), want) {
			t.Errorf("token objects lack %q:\n%s", want, lo)
		}
	}

	// A second init with the same label is refused.
	if code, out := pecctl(t, "keys", "init", "-config", config, "-id", "0b"); code == 0 || !strings.Contains(out, "already has a private key") {
		t.Fatalf("second init: exit %d\n%s", code, out)
	}

	code, out = pecctl(t, "keys", "show", "-config", config)
	if code != 0 {
		t.Fatalf("keys show: exit %d\n%s", code, out)
	}
	for _, want := range []string{hsm.Fingerprint(certs[0]), "san         posta-certificata@pec-a.test", "issuer      CN=Test PEC CA", "days left   364"} {
		if !strings.Contains(out, want) {
			t.Errorf("keys show lacks %q:\n%s", want, out)
		}
	}

	code, out = pecctl(t, "keys", "check", "-config", config)
	if code != 0 || !strings.Contains(out, "all keys OK") {
		t.Fatalf("keys check: exit %d\n%s", code, out)
	}

	// A certificate without the service address fails the check, and says why.
	tmpl, _ := hsm.ProviderTemplate("Provider A S.p.A.", "posta-certificata@pec-a.test", certs[0].PublicKey, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
	tmpl.EmailAddresses = nil
	bad := ca.Issue(t, tmpl, certs[0].PublicKey)
	os.WriteFile(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bad.Raw}), 0o600)
	code, out = pecctl(t, "keys", "check", "-config", config)
	if code != 1 || !strings.Contains(out, "PROBLEM      san: no rfc822Name subjectAltName") || !strings.Contains(out, "FAILED") {
		t.Fatalf("keys check of a bad certificate: exit %d\n%s", code, out)
	}

	// A wrong PIN is an error of the key, reported as such.
	t.Setenv("PEC_TEST_PIN", "00000000")
	code, out = pecctl(t, "keys", "check", "-config", config)
	if code != 1 || !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Fatalf("keys check with a wrong PIN: exit %d\n%s", code, out)
	}
}

func TestKeysUsage(t *testing.T) {
	for _, args := range [][]string{{"keys"}, {"keys", "nope"}, {"keys", "check"}, {"keys", "show"}} {
		if code, _ := pecctl(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	newSoftHSM(t, "lab")
	if code, out := pecctl(t, "keys", "init", "-module", softhsmModule, "-token", "lab", "-pin-env", "PEC_TEST_PIN", "-label", "k", "-ca-cert", "x"); code != 1 || !strings.Contains(out, "go together") {
		t.Errorf("init with half the CA flags: exit %d\n%s", code, out)
	}
}
