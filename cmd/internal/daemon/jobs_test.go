package daemon

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store/storetest"
)

type countingStore struct {
	*storetest.Memory
	quarantine, tracking, outbox atomic.Int32
	before, outboxBefore         atomic.Int64
	purged                       chan struct{}
}

func (c *countingStore) PurgeQuarantine(ctx context.Context, now time.Time) (int64, error) {
	c.quarantine.Add(1)
	return c.Memory.PurgeQuarantine(ctx, now)
}

func (c *countingStore) PurgeTracking(ctx context.Context, before time.Time) (int64, error) {
	c.tracking.Add(1)
	c.before.Store(before.UnixNano())
	return c.Memory.PurgeTracking(ctx, before)
}

func (c *countingStore) PurgeSentOutbox(ctx context.Context, before time.Time) (int64, error) {
	c.outbox.Add(1)
	c.outboxBefore.Store(before.UnixNano())
	n, err := c.Memory.PurgeSentOutbox(ctx, before)
	c.purged <- struct{}{}
	return n, err
}

// TestRetentionOneNode: the first owner takes the lease and purges the quarantine, the
// tracking rows and the sent outbox items' bytes; a second
// owner sharing the store does not purge while the lease holds.
func TestRetentionOneNode(t *testing.T) {
	st := &countingStore{Memory: storetest.NewMemory(), purged: make(chan struct{}, 4)}
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	log := slog.New(slog.DiscardHandler)
	retention := func(ctx context.Context, st *countingStore, owner string, log *slog.Logger, clock func() time.Time) {
		d := &Daemon{Store: st, Owner: owner, Log: log}
		js := &Jobs{d: d}
		js.Start(ctx, d.RetentionJob(clock))
		<-ctx.Done()
		js.Wait()
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); retention(ctx, st, "node-1", log, clock) }()
	select {
	case <-st.purged:
	case <-time.After(10 * time.Second):
		t.Fatal("node-1 did not purge")
	}
	cancel()
	<-done
	if st.quarantine.Load() != 1 || st.tracking.Load() != 1 || st.outbox.Load() != 1 {
		t.Fatalf("purges: quarantine %d tracking %d outbox %d, want 1 each", st.quarantine.Load(), st.tracking.Load(), st.outbox.Load())
	}
	if got := time.Unix(0, st.before.Load()).UTC(); !got.Equal(now.Add(-trackingKeep)) {
		t.Errorf("PurgeTracking before %v, want %v", got, now.Add(-trackingKeep))
	}
	if got := time.Unix(0, st.outboxBefore.Load()).UTC(); !got.Equal(now.Add(-outboxKeep)) {
		t.Errorf("PurgeSentOutbox before %v, want %v", got, now.Add(-outboxKeep))
	}

	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); retention(ctx, st, "node-2", log, clock) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	if st.quarantine.Load() != 1 || st.tracking.Load() != 1 {
		t.Errorf("node-2 purged while node-1 holds the lease: quarantine %d tracking %d", st.quarantine.Load(), st.tracking.Load())
	}
}
