package hsm_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize, and scans its token directory there too:
// the tests of this package share one process, so TestMain makes one configuration with every
// token the tests need, before anything loads the module. Tests do not run in parallel: the
// recovery tests re-initialise the module, which voids every session of the process.
const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

const (
	testPIN      = "87654321"
	testPINEnv   = "HSM_TEST_PIN"
	testProvider = "Provider A S.p.A."
	testService  = "posta-certificata@pec-a.test"
	testDomain   = "pec-a.test"
)

var softhsm struct {
	dir       string
	tokenDirs map[string]string // token label -> its directory under tokens/
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hsm-test-")
	if err != nil {
		panic(err)
	}
	code := 1
	func() {
		defer os.RemoveAll(dir)
		if err := setupSoftHSM(dir); err != nil {
			fmt.Fprintln(os.Stderr, "hsm tests: SoftHSM2 setup:", err)
			return
		}
		code = m.Run()
	}()
	os.Exit(code)
}

func setupSoftHSM(dir string) error {
	softhsm.dir = dir
	softhsm.tokenDirs = map[string]string{}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)
	if err != nil {
		return err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	os.Setenv(testPINEnv, testPIN)
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	keygen := func(token, label, id, typ string) error {
		return run("pkcs11-tool", "--module", softhsmModule, "--token-label", token, "--login", "--pin", testPIN,
			"--keypairgen", "--key-type", typ, "--id", id, "--label", label)
	}
	for _, tok := range []string{"pec-main", "pec-flap", "pec-pin"} {
		before, _ := os.ReadDir(tokens)
		if err := run("softhsm2-util", "--init-token", "--free", "--label", tok, "--so-pin", "12345678", "--pin", testPIN); err != nil {
			return err
		}
		after, _ := os.ReadDir(tokens)
		for _, e := range after {
			isNew := true
			for _, b := range before {
				isNew = isNew && b.Name() != e.Name()
			}
			if isNew {
				softhsm.tokenDirs[tok] = filepath.Join(tokens, e.Name())
			}
		}
	}
	for _, k := range [][4]string{
		{"pec-main", "rsa", "01", "rsa:2048"},
		{"pec-main", "ec", "02", "EC:prime256v1"},
		{"pec-main", "other", "03", "rsa:2048"},
		{"pec-flap", "flap", "01", "rsa:2048"},
		{"pec-pin", "pin", "01", "rsa:2048"},
	} {
		if err := keygen(k[0], k[1], k[2], k[3]); err != nil {
			return err
		}
	}
	return nil
}

// tokenPub reads the public key of label from the token.
func tokenPub(t testing.TB, token, label string) crypto.PublicKey {
	t.Helper()
	a, err := hsm.OpenAdmin(hsm.PKCS11Config{Module: softhsmModule, Token: token, PINEnv: testPINEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pub, err := a.PublicKey(label, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func writeChain(t testing.TB, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p := filepath.Join(t.TempDir(), "chain.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// goodCert issues a certificate with the RFC 6109 profile for the token key label.
func goodCert(t testing.TB, ca *hsmtest.CA, token, label string) string {
	now := time.Now()
	return writeChain(t, ca.ProviderCert(t, testProvider, testService, tokenPub(t, token, label), now.Add(-time.Hour), now.AddDate(1, 0, 0)))
}

func tokenConfig(token, key, cert string) hsm.Config {
	return hsm.Config{
		PKCS11:      hsm.PKCS11Config{Module: softhsmModule, Token: token, Key: key, PINEnv: testPINEnv},
		Certificate: cert,
	}
}

func testDeps() hsm.Deps {
	return hsm.Deps{
		Provider: hsm.Provider{Name: testProvider, ServiceAddress: testService, Domains: []string{testDomain}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func newKeys(t testing.TB, cfg hsm.Config) *hsm.Keys {
	t.Helper()
	k, err := hsm.New(cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

func newCA(t testing.TB) *hsmtest.CA { return hsmtest.NewCA(t) }
