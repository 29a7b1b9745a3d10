package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// TestSignOutsideValidity: a keyring started with a valid certificate stops signing once the
// certificate has expired, or when the clock is before NotBefore (issue 12 item 10): a
// temporary hsm.ErrUnavailable of kind "certificate" (4xx for the client), an error log at
// most once a minute, and pec_hsm_errors_total{kind="certificate"}.
func TestSignOutsideValidity(t *testing.T) {
	ca := hsmtest.NewCA(t)
	start := time.Now()
	notBefore, notAfter := start.Add(-time.Hour), start.AddDate(0, 2, 0)
	cert := writeChain(t, ca.ProviderCert(t, testProvider, testService, tokenPub(t, "pec-main", "rsa"), notBefore, notAfter))
	var mu sync.Mutex
	now := start
	var logs strings.Builder
	deps := testDeps()
	deps.Logger = slogTo(&logs)
	deps.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	k, err := hsm.New(tokenConfig("pec-main", "rsa", cert), deps)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	s, _, err := k.SignerFor(testDomain)
	if err != nil {
		t.Fatal(err)
	}
	if err := signOnce(s); err != nil {
		t.Fatalf("valid certificate: %v", err)
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want string
	}{
		{"expired", notAfter.Add(time.Second), "expired on"},
		{"not yet valid", notBefore.Add(-time.Second), "not valid before"},
	} {
		set(tc.at)
		before := hsm.ErrorCount(s, "certificate")
		for range 3 {
			err := signOnce(s)
			var ue *hsm.UnavailableError
			if !errors.Is(err, hsm.ErrUnavailable) || !errors.As(err, &ue) || ue.Kind != "certificate" || !ue.Temporary() ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: %v, want a temporary ErrUnavailable (certificate, %q)", tc.name, err, tc.want)
			}
		}
		if n := hsm.ErrorCount(s, "certificate") - before; n != 3 {
			t.Errorf("%s: errors{kind=certificate} grew by %v, want 3", tc.name, n)
		}
	}
	if n := strings.Count(logs.String(), "signing refused"); n != 2 {
		t.Errorf("%d error logs for 6 refusals a minute apart at most, want 2 (one per clock jump):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the refusal is not logged as an error:\n%s", logs.String())
	}
	set(start)
	d := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("valid again: %v", err)
	}
}
