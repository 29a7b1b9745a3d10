package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/prometheus/client_golang/prometheus"
)

func verify(t testing.TB, cert *x509.Certificate, h crypto.Hash, digest, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(pub, h, digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(pub, h, digest, sig)
		}
		if err != nil {
			t.Fatalf("%v signature does not verify: %v", h, err)
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Fatalf("ECDSA %v signature does not verify", h)
		}
	}
}

func TestSignRSA(t *testing.T) {
	ca := hsmtest.NewCA(t)
	reg := prometheus.NewRegistry()
	deps := testDeps()
	deps.Registerer = reg
	k, err := hsm.New(tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")), deps)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	signer, chain, err := k.SignerFor("PEC-A.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}); err != nil {
		t.Fatal(err)
	}
	msg := []byte("Messaggio di posta certificata")
	d1 := sha1.Sum(msg)
	d256 := sha256.Sum256(msg)
	d512 := sha512.Sum512(msg)
	for _, c := range []struct {
		h    crypto.Hash
		d    []byte
		opts crypto.SignerOpts
	}{
		{crypto.SHA1, d1[:], crypto.SHA1},
		{crypto.SHA256, d256[:], crypto.SHA256},
		{crypto.SHA512, d512[:], crypto.SHA512},
		{crypto.SHA256, d256[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}},
		{crypto.SHA256, d256[:], &rsa.PSSOptions{Hash: crypto.SHA256}},
	} {
		sig, err := signer.Sign(rand.Reader, c.d, c.opts)
		if err != nil {
			t.Fatalf("%v: %v", c.h, err)
		}
		verify(t, chain[0], c.h, c.d, sig, c.opts)
	}
	if _, err := signer.Sign(rand.Reader, d1[:], crypto.SHA256); err == nil || errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("wrong digest length: err = %v, want an input error", err)
	}
	if _, _, err := k.SignerFor("other.test"); !errors.Is(err, hsm.ErrUnknownDomain) {
		t.Fatalf("unknown domain: %v", err)
	}
	// probe + 5 good signatures; one input error
	if got := hsm.SignatureCount(signer, "ok"); got != 6 {
		t.Errorf("ok signatures = %v, want 6", got)
	}
	if got := hsm.ErrorCount(signer, "input"); got != 1 {
		t.Errorf("input errors = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var waits uint64
	for _, mf := range mfs {
		if mf.GetName() == "pec_hsm_session_wait_seconds" {
			waits = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if waits != 7 { // every call that reached the pool: finding the key, the probe, 5 signatures (a bad digest is refused before)
		t.Errorf("session wait observations = %d, want 7", waits)
	}
}

func TestSignECDSA(t *testing.T) {
	ca := hsmtest.NewCA(t)
	k := newKeys(t, tokenConfig("pec-main", "ec", goodCert(t, ca, "pec-main", "ec")))
	signer, chain, _ := k.SignerFor(testDomain)
	d := sha256.Sum256([]byte("x"))
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, chain[0], crypto.SHA256, d[:], sig, crypto.SHA256)
}

func TestConcurrentSigning(t *testing.T) {
	ca := hsmtest.NewCA(t)
	k := newKeys(t, tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")))
	signer, chain, _ := k.SignerFor(testDomain)
	pub := chain[0].PublicKey.(*rsa.PublicKey)
	const goroutines, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				d := sha256.Sum256([]byte{byte(g), byte(i)})
				sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
				if err == nil {
					err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStartupErrors(t *testing.T) {
	ca := hsmtest.NewCA(t)
	now := time.Now()
	rsaPub := tokenPub(t, "pec-main", "rsa")
	profile := func(mod func(*x509.Certificate)) string {
		tmpl, err := hsm.ProviderTemplate(testProvider, testService, rsaPub, now.Add(-time.Hour), now.AddDate(1, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		mod(tmpl)
		return writeChain(t, ca.Issue(t, tmpl, rsaPub))
	}
	good := profile(func(*x509.Certificate) {})
	os.Setenv("HSM_TEST_BAD_PIN", "11111111")
	defer os.Unsetenv("HSM_TEST_BAD_PIN")
	cases := []struct {
		name string
		cfg  func(*hsm.Config)
		want string
	}{
		{"wrong PIN", func(c *hsm.Config) { c.PKCS11.PINEnv = "HSM_TEST_BAD_PIN" }, "CKR_PIN_INCORRECT"},
		{"unset PIN", func(c *hsm.Config) { c.PKCS11.PINEnv = "HSM_TEST_NO_SUCH_VAR" }, "HSM_TEST_NO_SUCH_VAR is empty or unset"},
		{"no token", func(c *hsm.Config) { c.PKCS11.Token = "no-such-token" }, `token "no-such-token": no token with this label`},
		{"missing key", func(c *hsm.Config) { c.PKCS11.Key = "nope" }, `key "nope": private key not found`},
		{"key of another certificate", func(c *hsm.Config) { c.PKCS11.Key = "other" }, "does not match the certificate"},
		{"EC key for an RSA certificate", func(c *hsm.Config) { c.PKCS11.Key = "ec" }, "does not match the certificate"},
		{"expired", func(c *hsm.Config) {
			c.Certificate = writeChain(t, ca.ProviderCert(t, testProvider, testService, rsaPub, now.AddDate(-2, 0, 0), now.AddDate(0, 0, -1)))
		}, "validity: expired on"},
		{"basic constraints", func(c *hsm.Config) {
			c.Certificate = profile(func(x *x509.Certificate) { x.BasicConstraintsValid = true })
		}, "basic_constraints: basicConstraints is present"},
		{"no SAN", func(c *hsm.Config) { c.Certificate = profile(func(x *x509.Certificate) { x.EmailAddresses = nil }) }, "san: no rfc822Name subjectAltName"},
		{"other SAN", func(c *hsm.Config) {
			c.Certificate = profile(func(x *x509.Certificate) { x.EmailAddresses = []string{"x@pec-b.test"} })
		}, "is not the service address"},
		{"other provider", func(c *hsm.Config) {
			c.Certificate = profile(func(x *x509.Certificate) { x.Subject = pkix.Name{Organization: []string{"Provider B S.p.A."}} })
		}, "subject: provider name"},
		{"no SKI", func(c *hsm.Config) {
			c.Certificate = profile(func(x *x509.Certificate) { x.SubjectKeyId = nil })
		}, "ski: subjectKeyIdentifier is missing"},
		{"bad EKU", func(c *hsm.Config) {
			c.Certificate = profile(func(x *x509.Certificate) { x.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
		}, "eku: extKeyUsage is present without emailProtection"},
		{"no certificate file", func(c *hsm.Config) { c.Certificate = filepath.Join(t.TempDir(), "none.pem") }, "no such file"},
		{"bad digest", func(c *hsm.Config) { c.Digest = "md5" }, "signer.digest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := tokenConfig("pec-main", "rsa", good)
			c.cfg(&cfg)
			k, err := hsm.New(cfg, testDeps())
			if err == nil {
				k.Close()
				t.Fatalf("New succeeded, want an error with %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q lacks %q", err, c.want)
			}
			if c.name != "bad digest" && !strings.Contains(err.Error(), "domain pec-a.test") && !strings.Contains(err.Error(), "HSM_TEST_NO") {
				t.Errorf("error %q does not name the domain", err)
			}
			if strings.Contains(err.Error(), testPIN) || strings.Contains(err.Error(), "11111111") {
				t.Errorf("error %q reveals the PIN", err)
			}
		})
	}
	// The good configuration loads, so the cases above fail for their own reason.
	newKeys(t, tokenConfig("pec-main", "rsa", good))
	// While it is open the token is logged in for the whole process, and C_Login answers
	// CKR_USER_ALREADY_LOGGED_IN to any PIN: a wrong one must still be refused.
	cfg := tokenConfig("pec-main", "rsa", good)
	cfg.PKCS11.PINEnv = "HSM_TEST_BAD_PIN"
	if k, err := hsm.New(cfg, testDeps()); err == nil || !strings.Contains(err.Error(), "PIN differs") {
		if k != nil {
			k.Close()
		}
		t.Fatalf("wrong PIN while logged in: %v", err)
	}
}

func TestExpiryWarning(t *testing.T) {
	ca := hsmtest.NewCA(t)
	now := time.Now()
	cert := writeChain(t, ca.ProviderCert(t, testProvider, testService, tokenPub(t, "pec-main", "rsa"), now.AddDate(0, -11, 0), now.AddDate(0, 0, 10)))
	var logs strings.Builder
	deps := testDeps()
	deps.Logger = slogTo(&logs)
	k, err := hsm.New(tokenConfig("pec-main", "rsa", cert), deps)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if !strings.Contains(logs.String(), "check=expiry") || !strings.Contains(logs.String(), "in 9 days") {
		t.Fatalf("no expiry warning in logs:\n%s", logs.String())
	}
	if n := k.WarnExpiring(now.AddDate(0, 0, 5)); n != 1 {
		t.Errorf("5 days later: %d warnings, want 1", n)
	}
	if n := k.WarnExpiring(now.AddDate(0, 0, -60)); n != 0 {
		t.Errorf("60 days earlier: %d warnings, want 0", n)
	}
	if !strings.Contains(logs.String(), "in 4 days") {
		t.Errorf("no periodic warning in logs:\n%s", logs.String())
	}
}

func TestPerDomainKeys(t *testing.T) {
	ca := hsmtest.NewCA(t)
	now := time.Now()
	cfg := tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa"))
	cfg.Keys = []hsm.KeyConfig{{
		Domain:         "pec2-a.test",
		ServiceAddress: "posta-certificata@pec2-a.test",
		PKCS11:         hsm.PKCS11Config{KeyID: "02"},
		Certificate:    writeChain(t, ca.ProviderCert(t, testProvider, "posta-certificata@pec2-a.test", tokenPub(t, "pec-main", "ec"), now.Add(-time.Hour), now.AddDate(1, 0, 0)), ca.Cert),
	}}
	deps := testDeps()
	deps.Provider.Domains = []string{testDomain, "pec2-a.test"}
	k, err := hsm.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	s1, c1, _ := k.SignerFor(testDomain)
	s2, c2, _ := k.SignerFor("pec2-a.test")
	if _, ok := s1.Public().(*rsa.PublicKey); !ok || len(c1) != 1 {
		t.Fatalf("default key: %T, chain %d", s1.Public(), len(c1))
	}
	if _, ok := s2.Public().(*ecdsa.PublicKey); !ok || len(c2) != 2 || c2[0].EmailAddresses[0] != "posta-certificata@pec2-a.test" {
		t.Fatalf("per-domain key: %T, chain %d", s2.Public(), len(c2))
	}
	d := sha256.Sum256(nil)
	sig, err := s2.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c2[0], crypto.SHA256, d[:], sig, crypto.SHA256)
	if hsm.TokenCount(k) != 1 {
		t.Errorf("two keys on one token opened %d tokens, want 1 (one login per token)", hsm.TokenCount(k))
	}
}

func TestPEMSigner(t *testing.T) {
	ca := hsmtest.NewCA(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPath := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	now := time.Now()
	cfg := hsm.Config{PEMKey: keyPath, Certificate: writeChain(t, ca.ProviderCert(t, testProvider, testService, &key.PublicKey, now.Add(-time.Hour), now.AddDate(1, 0, 0))), Digest: "sha1"}
	k := newKeys(t, cfg)
	if k.Digest() != crypto.SHA1 {
		t.Errorf("digest %v", k.Digest())
	}
	s, chain, _ := k.SignerFor(testDomain)
	d := sha1.Sum([]byte("x"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, chain[0], crypto.SHA1, d[:], sig, crypto.SHA1)

	deps := testDeps()
	deps.Provider.Production = true
	if _, err := hsm.New(cfg, deps); err == nil || !strings.Contains(err.Error(), "refused in production") {
		t.Fatalf("production with pem_key: %v", err)
	}
	// A key that is not the certificate's is caught too.
	other := hsm.Config{PEMKey: keyPath, Certificate: goodCert(t, ca, "pec-main", "rsa")}
	if _, err := hsm.New(other, testDeps()); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched pem key: %v", err)
	}
}
