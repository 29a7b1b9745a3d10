package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestAppendOnlyTriggers: the log has no update or delete path in the API, and the schema
// refuses a raw UPDATE, DELETE or TRUNCATE too, on the partitioned tables and on a month's
// partition; seals refuse UPDATE and DELETE; outbox items are never deleted, nor the bytes of
// an item not sent.
func TestAppendOnlyTriggers(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	if err := s.Commit(ctx, &store.Batch{Events: []store.Event{storetest.SampleEvent(1, storetest.T0)},
		Outbox: []store.OutboxItem{{MessageID: "<m@x>", Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSeal(ctx, store.Seal{Day: "2026-11-19", Hash: []byte{1}, Signed: []byte{2}, Token: []byte{3}}); err != nil {
		t.Fatal(err)
	}
	part := "events_" + partitionSuffix(month(storetest.T0.UnixNano()))
	for _, q := range []string{
		`UPDATE events SET subject = 'changed'`,
		`DELETE FROM events`,
		`UPDATE ` + part + ` SET subject = 'changed'`,
		`DELETE FROM ` + part,
		`TRUNCATE ` + part,
		`TRUNCATE event_addrs_` + partitionSuffix(month(storetest.T0.UnixNano())),
		`UPDATE event_addrs SET addr = 'x@y'`,
		`DELETE FROM event_addrs`,
		`UPDATE log_seq SET last = 0`,
		`DELETE FROM log_seq`,
		`DELETE FROM outbox`,
		`TRUNCATE outbox`,
		`UPDATE outbox SET raw = ''::bytea`, // a pending item's bytes (only a sent item's may go)
		`UPDATE seals SET hash = '\x00'`,
		`DELETE FROM seals`,
		`TRUNCATE seals`,
	} {
		_, err := s.pool.Exec(ctx, q)
		if err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "never deleted") &&
			!strings.Contains(err.Error(), "immutable") && !strings.Contains(err.Error(), "never changed") {
			t.Errorf("%s: err %v, want the trigger's abort", q, err)
		}
	}
	evs := storetest.Search(t, s, store.Query{})
	if len(evs) != 1 || evs[0].Subject != storetest.SampleEvent(1, storetest.T0).Subject || evs[0].Seq != 1 {
		t.Errorf("log changed: %+v", evs)
	}
	if x, err := s.GetSeal(ctx, "2026-11-19"); err != nil || x.Hash[0] != 1 {
		t.Errorf("seal changed: %+v %v", x, err)
	}
}

// TestMigrationVersionAndReopen: the schema is versioned, a second Open (another process)
// changes nothing, and a schema newer than the program is refused.
func TestMigrationVersionAndReopen(t *testing.T) {
	dsn := freshDSN(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs { // processes starting together migrate once
		wg.Go(func() {
			s, err := Open(context.Background(), dsn, Deps{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s := openDSN(t, dsn, Deps{})
	var v int
	if err := s.pool.QueryRow(context.Background(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d (%v), want %d", v, err, len(migrations))
	}
	if _, err := s.pool.Exec(context.Background(), `UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), dsn, Deps{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema: %v", err)
	}
}

// TestLeasesOnTheDatabaseClock: without an injected clock, lease expiry and claims are
// decided by PostgreSQL's clock, whatever time the caller believes it is.
func TestLeasesOnTheDatabaseClock(t *testing.T) {
	ctx := context.Background()
	dsn := freshDSN(t)
	a, b := openDSN(t, dsn, Deps{}), openDSN(t, dsn, Deps{})
	if ok, err := a.TryLease(ctx, "sweeper", "node-1", 600*time.Millisecond); !ok || err != nil {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	if ok, _ := b.TryLease(ctx, "sweeper", "node-2", time.Minute); ok {
		t.Fatal("second owner took a held lease")
	}
	if err := a.Commit(ctx, &store.Batch{Outbox: []store.OutboxItem{{MessageID: "<m@x>", Kind: "accettazione",
		Rcpts: []string{"a@x"}, Raw: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	items, err := a.ClaimOutbox(ctx, store.Claim{Owner: "node-1", Lease: 600 * time.Millisecond})
	after := time.Now()
	if err != nil || len(items) != 1 {
		t.Fatalf("claim: %d %v", len(items), err)
	}
	// now() has microsecond precision and is the transaction's start.
	if lu := items[0].LeaseUntil; lu.Before(before.Add(600*time.Millisecond-time.Millisecond)) || lu.After(after.Add(600*time.Millisecond)) {
		t.Errorf("lease until %v, want now + 600ms (%v .. %v)", lu, before, after)
	}
	if got, _ := b.ClaimOutbox(ctx, store.Claim{Owner: "node-2", Lease: time.Minute}); len(got) != 0 {
		t.Fatal("second owner claimed a leased item")
	}
	time.Sleep(700 * time.Millisecond)
	if ok, err := b.TryLease(ctx, "sweeper", "node-2", time.Minute); !ok || err != nil {
		t.Fatalf("expired lease not taken over: %v %v", ok, err)
	}
	if got, _ := b.ClaimOutbox(ctx, store.Claim{Owner: "node-2", Lease: time.Minute}); len(got) != 1 {
		t.Fatal("expired claim not taken over")
	}
}

// TestLogOrderedByCommit: many writers on two handles commit at once while a reader tails
// the log by AfterSeq, as an export does. Sequence numbers end 1..N without a gap, and the
// reader, never going back, sees every event: no event commits with a number below one
// already visible.
func TestLogOrderedByCommit(t *testing.T) {
	ctx := context.Background()
	dsn := freshDSN(t)
	h := [2]*Store{openDSN(t, dsn, Deps{}), openDSN(t, dsn, Deps{MaxGroup: 1})}
	const writers, per = 8, 40
	done := make(chan struct{})
	var seen []int64
	var readErr error
	var rw sync.WaitGroup
	rw.Go(func() {
		var after int64
		for last := false; ; {
			select {
			case <-done:
				last = true
			default:
			}
			readErr = h[1].ScanLog(ctx, store.Query{AfterSeq: after}, func(e *store.Event) error {
				seen, after = append(seen, e.Seq), e.Seq
				return nil
			})
			if readErr != nil || last {
				return
			}
		}
	})
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < per; i++ {
				e := storetest.SampleEvent(w*per+i, storetest.T0)
				b := &store.Batch{Events: []store.Event{e, e}}
				if err := h[w%2].Commit(ctx, b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	rw.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	if len(seen) != 2*writers*per {
		t.Fatalf("the tailing reader saw %d events, want %d", len(seen), 2*writers*per)
	}
	for i, s := range seen {
		if s != int64(i+1) {
			t.Fatalf("event %d has sequence number %d: gap or disorder", i, s)
		}
	}
}

// TestPartitionsAndRetention: events of any month land in that month's partition, created
// on the way (also when a held step releases them); searches span months; DropExpiredLog
// drops whole months past the 30-month retention and nothing younger.
func TestPartitionsAndRetention(t *testing.T) {
	ctx := context.Background()
	dsn := freshDSN(t)
	s, other := openDSN(t, dsn, Deps{}), openDSN(t, dsn, Deps{})
	times := []time.Time{
		time.Date(2023, 1, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2023, 2, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 6, 15, 12, 0, 0, 0, time.UTC),
		storetest.T0,
	}
	for i, at := range times {
		if err := s.Commit(ctx, &store.Batch{Events: []store.Event{storetest.SampleEvent(i, at)}}); err != nil {
			t.Fatal(err)
		}
	}
	// A held step whose OnConfirm logs in a month without a partition, confirmed through a
	// handle that has never seen that month.
	h := storetest.HeldStep(9, storetest.T0)
	for i := range h.OnConfirm.Events {
		h.OnConfirm.Events[i].Time = time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	}
	if err := s.Commit(ctx, &store.Batch{Holds: []store.Held{h}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Confirm(ctx, h.Token, storetest.T0); err != nil {
		t.Fatal(err)
	}
	n := len(h.OnConfirm.Events)
	if got := storetest.Search(t, other, store.Query{From: times[1], To: time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)}); len(got) != 3+n {
		t.Fatalf("search across months: %d events, want %d", len(got), 3+n)
	}
	now := time.Date(2025, 8, 10, 0, 0, 0, 0, time.UTC) // cutoff 2023-02-10: January 2023 is over
	dropped, err := other.DropExpiredLog(ctx, now)
	if err != nil || fmt.Sprint(dropped) != "[2023-01]" {
		t.Fatalf("DropExpiredLog: %v %v, want [2023-01]", dropped, err)
	}
	got := storetest.Search(t, s, store.Query{})
	if len(got) != 3+n || !got[0].Time.Equal(times[1]) {
		t.Fatalf("after retention: %d events, first at %v", len(got), got[0].Time)
	}
	if got := storetest.Search(t, s, store.Query{Recipient: "dest0@pec-b.test"}); len(got) != 0 {
		t.Errorf("addresses of the dropped month still found: %d", len(got))
	}
	// The month comes back when an event of it is written again (a late import).
	if err := s.Commit(ctx, &store.Batch{Events: []store.Event{storetest.SampleEvent(0, times[0])}}); err != nil {
		t.Fatal(err)
	}
}

// TestMultiHostDSN: a DSN naming several hosts reaches the one that answers and accepts
// writes; a failed first host is skipped.
func TestMultiHostDSN(t *testing.T) {
	dsn := freshDSN(t)
	port, err := freePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	multi := strings.Replace(dsn, "@127.0.0.1:", fmt.Sprintf("@127.0.0.1:%d,127.0.0.1:", port), 1)
	s := openDSN(t, multi, Deps{})
	if err := s.Commit(context.Background(), &store.Batch{Events: []store.Event{storetest.SampleEvent(1, storetest.T0)}}); err != nil {
		t.Fatal(err)
	}
	if s.pool.Config().ConnConfig.ValidateConnect == nil {
		t.Error("no target_session_attrs=read-write check on a DSN that did not ask for one")
	}
}
