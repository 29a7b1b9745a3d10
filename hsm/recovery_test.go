package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

func signOnce(s crypto.Signer) error {
	d := sha256.Sum256([]byte(time.Now().String()))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	return rsa.VerifyPKCS1v15(s.Public().(*rsa.PublicKey), crypto.SHA256, d[:], sig)
}

// waitRecovered signs until it works, failing the test after limit; every failure on the way
// must be a temporary ErrUnavailable.
func waitRecovered(t *testing.T, s crypto.Signer, limit time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(limit)
	for n := 0; ; n++ {
		err := signOnce(s)
		if err == nil {
			return n
		}
		if !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("while recovering: %v, want ErrUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered after %v: %v", limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRecoveryTokenDirectoryRemoved moves a SoftHSM2 token directory away and back, as an HSM
// that goes away and returns.
//
// What SoftHSM2 2.6.1 does (measured, and shown by the steps below): sessions stay open, but
// C_SignInit answers CKR_OBJECT_HANDLE_INVALID because the key's object file is gone;
// C_GetTokenInfo on the slot answers CKR_GENERAL_ERROR and the label no longer shows. When
// the directory comes back, the token stays invisible until C_Finalize + C_Initialize,
// because SoftHSM2 scans the token directory only in C_Initialize. So recovery needs the
// module re-initialised, which the signer does when it cannot find the token by label; that
// voids the sessions of every other token of the module too, and those recover by themselves.
func TestRecoveryTokenDirectoryRemoved(t *testing.T) {
	ca := hsmtest.NewCA(t)
	cfg := tokenConfig("pec-flap", "flap", goodCert(t, ca, "pec-flap", "flap"))
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	flap := newKeys(t, cfg)
	other := newKeys(t, tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")))
	fs, _, _ := flap.SignerFor(testDomain)
	ots, _, _ := other.SignerFor(testDomain)
	for _, s := range []crypto.Signer{fs, ots} {
		if err := signOnce(s); err != nil {
			t.Fatal(err)
		}
	}

	dir := softhsm.tokenDirs["pec-flap"]
	away := filepath.Join(softhsm.dir, "away")
	if err := rename(dir, away); err != nil {
		t.Fatal(err)
	}
	restored := false
	defer func() {
		if !restored {
			rename(away, dir)
		}
	}()

	err := signOnce(fs)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("token gone: %v, want ErrUnavailable", err)
	}
	var ue *hsm.UnavailableError
	if !errors.As(err, &ue) || !ue.Temporary() {
		t.Fatalf("token gone: %T %v, want a temporary *UnavailableError", err, err)
	}
	t.Logf("token gone: %v", err)
	// While it is down, calls fail fast and stay temporary.
	for range 20 {
		start := time.Now()
		err := signOnce(fs)
		if !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("token still gone: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("a failing call took %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The other token lost its sessions to the module re-initialisation, and recovered
	// within the call (the signer retries a lost token once).
	if err := signOnce(ots); err != nil {
		t.Fatalf("other token while pec-flap is gone: %v", err)
	}

	if n := hsm.ErrorCount(fs, "token_down") + hsm.ErrorCount(fs, "reopen"); n < 20 {
		t.Errorf("errors{kind=token_down|reopen} = %v, want at least 20", n)
	}
	if err := rename(away, dir); err != nil {
		t.Fatal(err)
	}
	restored = true
	n := waitRecovered(t, fs, 5*time.Second)
	t.Logf("recovered after %d failed attempts", n)
	for range 10 {
		if err := signOnce(fs); err != nil {
			t.Fatal(err)
		}
	}
	if err := signOnce(ots); err != nil {
		t.Fatal(err)
	}
}

func rename(from, to string) error { return os.Rename(from, to) }

// TestRecoveryModuleFinalized finalises the module under the signers' feet (another library in
// the process calling C_Finalize, or a network HSM client resetting), then also initialises it
// again behind their back. Signing goroutines running meanwhile see only hsm.ErrUnavailable or
// success, and signing works afterwards without a restart.
func TestRecoveryModuleFinalized(t *testing.T) {
	ca := hsmtest.NewCA(t)
	cfg := tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa"))
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	k := newKeys(t, cfg)
	s, _, _ := k.SignerFor(testDomain)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, unavailable int
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := signOnce(s)
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, hsm.ErrUnavailable):
					unavailable++
				default:
					t.Errorf("during module reset: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	// C_Finalize only: the signer must initialise the module again itself.
	if err := hsm.FinalizeModule(k, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// C_Finalize + C_Initialize behind the signer's back: its handles are void.
	if err := hsm.FinalizeModule(k, true); err != nil {
		t.Error(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d signatures, %d temporary failures", ok, unavailable)
	waitRecovered(t, s, 2*time.Second)
	if ok == 0 {
		t.Fatal("no signature succeeded")
	}
}

// TestSessionWaitBounded holds the only session and checks that a signer gives up after
// SessionWait with hsm.ErrUnavailable instead of hanging.
func TestSessionWaitBounded(t *testing.T) {
	ca := hsmtest.NewCA(t)
	cfg := tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa"))
	cfg.PoolSize, cfg.SessionWait = 1, 50*time.Millisecond
	k := newKeys(t, cfg)
	s, _, _ := k.SignerFor(testDomain)
	release, err := hsm.HoldSession(s)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = signOnce(s)
	d := time.Since(start)
	var ue *hsm.UnavailableError
	if !errors.Is(err, hsm.ErrUnavailable) || !errors.As(err, &ue) || ue.Kind != "session_wait" {
		t.Fatalf("pool exhausted: %v, want hsm.ErrUnavailable (session_wait)", err)
	}
	if d < 50*time.Millisecond || d > time.Second {
		t.Fatalf("gave up after %v, want about 50ms", d)
	}
	release()
	if err := signOnce(s); err != nil {
		t.Fatal(err)
	}
}

// TestCloseWhileSigning closes the keyring under running signers: no crash, no hang, and every
// call after Close fails with ErrUnavailable.
func TestCloseWhileSigning(t *testing.T) {
	ca := hsmtest.NewCA(t)
	k, err := hsm.New(tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")), testDeps())
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := k.SignerFor(testDomain)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if err := signOnce(s); err != nil && !errors.Is(err, hsm.ErrUnavailable) {
					t.Errorf("during Close: %v", err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	k.Close()
	wg.Wait()
	if err := signOnce(s); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("after Close: %v", err)
	}
}
