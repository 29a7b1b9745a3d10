package hsm_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// TestPINRefusedStopsLogins: when the token refuses the PIN at a new login (the PIN was
// changed on the HSM while the process runs, or expired), the signer does not log in again
// (issue 12 item 10): every further C_Login would count towards locking the token. Signing
// keeps failing with a temporary ErrUnavailable of kind "pin" (4xx) that says why, and the
// refusal is logged as an error once.
func TestPINRefusedStopsLogins(t *testing.T) {
	ca := hsmtest.NewCA(t)
	cfg := tokenConfig("pec-pin", "pin", goodCert(t, ca, "pec-pin", "pin"))
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 20*time.Millisecond
	var logs strings.Builder
	deps := testDeps()
	deps.Logger = slogTo(&logs)
	k, err := hsm.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	s, _, _ := k.SignerFor(testDomain)
	if err := signOnce(s); err != nil {
		t.Fatal(err)
	}
	const changed = "11223344"
	if err := hsm.SetUserPIN(s, testPIN, changed); err != nil {
		t.Fatal(err)
	}
	defer func() { // give the token its PIN back, for -count > 1
		t.Setenv("HSM_TEST_PIN_CHANGED", changed)
		a, err := hsm.OpenAdmin(hsm.PKCS11Config{Module: softhsmModule, Token: "pec-pin", PINEnv: "HSM_TEST_PIN_CHANGED"})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := hsm.AdminSetPIN(a, changed, testPIN); err != nil {
			t.Fatal(err)
		}
	}()
	logins := hsm.LoginCount(k)
	// The HSM restarts: the sessions and the login are gone, and the signer logs in again
	// with the PIN it has, which the token now refuses.
	if err := hsm.FinalizeModule(k, true); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		err := signOnce(s)
		var ue *hsm.UnavailableError
		if !errors.Is(err, hsm.ErrUnavailable) || !errors.As(err, &ue) || !ue.Temporary() {
			t.Fatalf("signature %d after the PIN change: %v, want a temporary ErrUnavailable", i, err)
		}
		if ue.Kind != "pin" || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") || !strings.Contains(err.Error(), "no further login") {
			t.Fatalf("signature %d after the PIN change: %v, want kind pin naming CKR_PIN_INCORRECT", i, err)
		}
		time.Sleep(5 * time.Millisecond) // several times retry_max over the loop
	}
	if n := hsm.LoginCount(k) - logins; n != 1 {
		t.Errorf("%d logins after the PIN was changed, want exactly 1 (no retry of a refused PIN)", n)
	}
	if n := strings.Count(logs.String(), "refused the PIN"); n != 1 || !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("want one error log of the refused PIN, got %d:\n%s", n, logs.String())
	}
	if n := hsm.ErrorCount(s, "pin"); n < 40 {
		t.Errorf("errors{kind=pin} = %v, want at least 40", n)
	}
}

// TestForgetPINEnv: after ForgetPINEnv the PIN is no longer in the process environment, and
// the keyring still logs in again when the token comes back (issue 12 item 10).
func TestForgetPINEnv(t *testing.T) {
	ca := hsmtest.NewCA(t)
	const env = "HSM_TEST_PIN_FORGET"
	t.Setenv(env, testPIN)
	cfg := tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa"))
	cfg.PKCS11.PINEnv = env
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 20*time.Millisecond
	k := newKeys(t, cfg)
	if got, err := k.ForgetPINEnv(); len(got) != 1 || got[0] != env || err != nil {
		t.Fatalf("ForgetPINEnv() = %v, %v; want [%s]", got, err, env)
	}
	if v, ok := os.LookupEnv(env); ok {
		t.Fatalf("%s is still in the environment (%d bytes)", env, len(v))
	}
	for _, kv := range os.Environ() {
		if strings.Contains(kv, testPIN) && !strings.HasPrefix(kv, testPINEnv+"=") {
			t.Fatalf("the PIN is still in the environment: %s=...", strings.SplitN(kv, "=", 2)[0])
		}
	}
	s, _, _ := k.SignerFor(testDomain)
	logins := hsm.LoginCount(k)
	if err := hsm.FinalizeModule(k, true); err != nil {
		t.Fatal(err)
	}
	waitRecovered(t, s, 5*time.Second)
	if hsm.LoginCount(k) == logins {
		t.Fatal("no new login after the module was reset")
	}
}
