package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
)

func clamdDaemon(t *testing.T, addr string, hardMax config.Size, wait time.Duration) *Daemon {
	t.Helper()
	cfg := &config.Config{Clamd: clamd.Config{Addr: addr, Timeout: time.Second, StartupWait: wait}}
	cfg.Limits.HardMaxSize = hardMax
	sc, err := clamd.New(cfg.Clamd)
	if err != nil {
		t.Fatal(err)
	}
	return &Daemon{Cfg: cfg, Scanner: sc, Log: slog.New(slog.DiscardHandler)}
}

// TestCheckClamd: pec-milter starts only when clamd's StreamMaxLength covers
// limits.hard_max_size, and says which clamd.conf setting to raise otherwise (issue 12 item 9).
func TestCheckClamd(t *testing.T) {
	srv := clamdtest.New(t)
	srv.SetStreamMaxLength(25 << 20) // Debian's clamd.conf: StreamMaxLength 25M
	err := clamdDaemon(t, srv.Addr(), 100_000_000, time.Second).CheckClamd(context.Background())
	if err == nil || !strings.Contains(err.Error(), "StreamMaxLength 96M") || !strings.Contains(err.Error(), "clamd.conf") {
		t.Fatalf("StreamMaxLength 25M, hard_max_size 100MB: %v; want a refusal naming StreamMaxLength in clamd.conf", err)
	}
	if err := clamdDaemon(t, srv.Addr(), 25<<20, time.Second).CheckClamd(context.Background()); err != nil {
		t.Fatalf("StreamMaxLength 25M, hard_max_size 25MiB: %v", err)
	}

	// clamd down: wait for it up to clamd.startup_wait, then refuse.
	srv.Close()
	start := time.Now()
	err = clamdDaemon(t, srv.Addr(), 1000, 1500*time.Millisecond).CheckClamd(context.Background())
	if err == nil || !strings.Contains(err.Error(), "startup_wait") {
		t.Fatalf("clamd down: %v", err)
	}
	if d := time.Since(start); d < 1400*time.Millisecond || d > 5*time.Second {
		t.Errorf("gave up after %v, want about clamd.startup_wait (1.5s)", d)
	}
}
