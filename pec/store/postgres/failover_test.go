package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestFailoverToPromotedStandby: a primary with a synchronous streaming standby; the store
// names both in its DSN. Writers commit while the primary is stopped and the standby
// promoted: during the switch Commits fail as temporary failures (Postfix would retry),
// then succeed on the new primary with no configuration change. Afterwards every Commit
// that returned nil is in the log once, a Commit that failed is there at most once (its
// commit may have landed before the answer was lost), and the sequence numbers run 1..N
// without a gap across the switch.
func TestFailoverToPromotedStandby(t *testing.T) {
	ctx := context.Background()
	primary, err := pgtest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Stop() //nolint:errcheck
	standby, err := primary.Standby()
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Stop() //nolint:errcheck
	// Synchronous replication: a commit returns once the standby has it (without it, the
	// commits of the last moments before a failover may be lost).
	cluster.Exec(t, primary.DSN, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	cluster.Exec(t, primary.DSN, `SELECT pg_reload_conf()`)
	waitSync(t, primary.DSN)

	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2",
		primary.Port, standby.Port)
	s := openDSN(t, dsn, Deps{})
	type result struct {
		id  string
		ok  bool
		end time.Time
	}
	var mu sync.Mutex
	var results []result
	var problems []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("opec.failover.%d.%d@pec-a.test", w, i)
				e := storetest.SampleEvent(i, storetest.T0)
				e.Identificativo = id
				b := &store.Batch{Events: []store.Event{e}}
				b.Send(store.OutboxItem{MessageID: "<" + id + ">", Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte("x")})
				err := s.Commit(ctx, b)
				var tmp *store.Temporary
				mu.Lock()
				if err != nil && !errors.As(err, &tmp) {
					problems = append(problems, fmt.Errorf("%s: %v is not a temporary failure", id, err))
				}
				results = append(results, result{id, err == nil, time.Now()})
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Second)
	if err := primary.Halt(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // no primary at all for a while
	if err := standby.Promote(); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if err := errors.Join(problems...); err != nil {
		t.Fatal(err)
	}

	failed, after := 0, 0
	for _, r := range results {
		if !r.ok {
			failed++
		} else if r.end.After(promoted) {
			after++
		}
	}
	if failed == 0 || after == 0 {
		t.Fatalf("%d commits, %d failed during the switch, %d succeeded after the promotion: want some of each", len(results), failed, after)
	}
	check := openDSN(t, standby.DSN, Deps{})
	seen := map[string]int{}
	var seqs []int64
	if err := check.ScanLog(ctx, store.Query{}, func(e *store.Event) error {
		seen[e.Identificativo]++
		seqs = append(seqs, e.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if n := seen[r.id]; r.ok && n != 1 || !r.ok && n > 1 {
			t.Errorf("%s: committed %v, %d times in the log", r.id, r.ok, n)
		}
	}
	for i, q := range seqs {
		if q != int64(i+1) {
			t.Fatalf("event %d has sequence number %d across the failover", i, q)
		}
	}
	t.Logf("%d commits: %d failed during the switch, %d succeeded after the promotion; log 1..%d", len(results), failed, after, len(seqs))
}

// waitSync waits until the primary reports a synchronous standby.
func waitSync(t *testing.T, dsn string) {
	t.Helper()
	s := openDSN(t, dsn, Deps{})
	for i := 0; i < 100; i++ {
		var n int
		if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'`).Scan(&n); err == nil && n == 1 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the standby never became synchronous")
}
