package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The same benchmarks as the SQLite store's (pec/store/sqlite/bench_test.go), on the same
// data (storetest.BenchBatch, storetest.BenchEvent): `make bench-store` runs both in one
// go test, one package after the other, on the same machine.

// BenchmarkCommit measures Commits of realistic batches (2 events each) with 1, 4 and 16
// concurrent callers, with and without group commit. events/s is the figure; commits/s is
// events/s / 2.
func BenchmarkCommit(b *testing.B) {
	for _, c := range []struct {
		name     string
		callers  int
		maxGroup int
	}{{"1caller", 1, 0}, {"4callers-group", 4, 0}, {"4callers-nogroup", 4, 1}, {"16callers-group", 16, 0}, {"16callers-nogroup", 16, 1}} {
		b.Run(c.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			s := openDSN(b, freshDSN(b), Deps{MaxGroup: c.maxGroup, Registerer: reg, MaxConns: 20})
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < c.callers; w++ {
				wg.Go(func() {
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						if err := s.Commit(context.Background(), storetest.BenchBatch(i, storetest.BenchRaw)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "events/s")
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if h := mf.GetMetric()[0].GetHistogram(); mf.GetName() == "pec_store_commit_group_size" && h.GetSampleCount() > 0 {
					b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), "batches/tx")
				}
			}
		})
	}
}

func benchEvents() int {
	if v, err := strconv.Atoi(os.Getenv("PEC_BENCH_EVENTS")); err == nil && v > 0 {
		return v
	}
	return 10_000_000
}

// benchDSN returns the DSN of a schema holding n events over 30 days (October 2026), built
// once with COPY and kept in the cluster (PEC_PG_DIR keeps the cluster across runs).
func benchDSN(b *testing.B, n int) string {
	ctx := context.Background()
	name := fmt.Sprintf("bench_%d", n)
	dsn := cluster.DSN + "&search_path=" + name
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	var done bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('bench_done') IS NOT NULL`).Scan(&done); err != nil {
		b.Fatal(err)
	}
	if done {
		return dsn
	}
	start := time.Now()
	for _, q := range []string{`DROP SCHEMA IF EXISTS ` + name + ` CASCADE`, `CREATE SCHEMA ` + name} {
		if _, err := c.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if err := bulkLoad(ctx, c, dsn, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d events in %v (schema %s)", n, time.Since(start).Round(time.Second), name)
	return dsn
}

// bulkLoad fills a fresh schema: COPY into the events and event_addrs (without the
// secondary indexes of events, built afterwards), then ANALYZE.
func bulkLoad(ctx context.Context, c *pgx.Conn, dsn string, n int) error {
	s, err := Open(ctx, dsn, Deps{})
	if err != nil {
		return err
	}
	err = s.ensureMonths(ctx, []int64{storetest.BenchTime(0, n).UnixNano(), storetest.BenchTime(n-1, n).UnixNano()})
	s.Close()
	if err != nil {
		return err
	}
	for _, q := range []string{`DROP INDEX events_time`, `DROP INDEX events_identificativo`, `DROP INDEX events_sender_time`} {
		if _, err := c.Exec(ctx, q); err != nil {
			return err
		}
	}
	cols := []string{"seq", "time", "identificativo", "kind", "sender", "recipients", "subject", "message_id", "gestore",
		"receipt_type", "about", "error", "error_detail", "virus", "queue_id", "size", "generated", "logged_at"}
	var addrs [][]any
	_, err = c.CopyFrom(ctx, pgx.Identifier{"events"}, cols, pgx.CopyFromFunc(func() ([]any, error) {
		i := len(addrs)
		if i >= n {
			return nil, nil
		}
		e := storetest.BenchEvent(i, storetest.BenchTime(i, n))
		t := e.Time.UnixNano()
		var row []any
		for _, a := range e.Addresses() {
			row = append(row, a)
		}
		addrs = append(addrs, row)
		return []any{int64(i + 1), t, e.Identificativo, string(e.Kind), e.Sender, js(e.Recipients), e.Subject,
			e.MessageID, e.Gestore, e.ReceiptType, js(nonNil(e.About)), e.Error, e.ErrorDetail, e.Virus, e.QueueID,
			e.Size, js(e.Generated), t}, nil
	}))
	if err != nil {
		return err
	}
	i, j := 0, 0
	_, err = c.CopyFrom(ctx, pgx.Identifier{"event_addrs"}, []string{"addr", "time", "seq"}, pgx.CopyFromFunc(func() ([]any, error) {
		for i < n && j >= len(addrs[i]) {
			i, j = i+1, 0
		}
		if i >= n {
			return nil, nil
		}
		j++
		return []any{addrs[i][j-1], storetest.BenchTime(i, n).UnixNano(), int64(i + 1)}, nil
	}))
	if err != nil {
		return err
	}
	for _, q := range []string{
		fmt.Sprintf(`UPDATE log_seq SET last = %d`, n),
		`CREATE INDEX events_time ON events (time)`,
		`CREATE INDEX events_identificativo ON events (identificativo)`,
		`CREATE INDEX events_sender_time ON events (lower(sender), time)`,
		`ANALYZE`,
		`CREATE TABLE bench_done ()`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// BenchmarkSearch: searches over a large log (PEC_BENCH_EVENTS, default 10 million) by
// identificativo, by sender within one day and 30 days, by recipient within one day: the
// SQLite store's cases on the same data.
func BenchmarkSearch(b *testing.B) {
	n := benchEvents()
	s := openDSN(b, benchDSN(b, n), Deps{})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	count := func(q store.Query) int {
		k := 0
		if err := s.ScanLog(ctx, q, func(*store.Event) error { k++; return nil }); err != nil {
			b.Fatal(err)
		}
		return k
	}
	day := 24 * time.Hour
	for _, c := range []struct {
		name string
		q    func() store.Query
	}{
		{"identificativo", func() store.Query {
			return store.Query{Identificativo: fmt.Sprintf("opec01.%07d.01@pec-a.test", r.IntN(n/2))}
		}},
		{"sender-1day", func() store.Query {
			from := storetest.BenchStart.Add(time.Duration(r.IntN(29)) * day)
			return store.Query{Sender: fmt.Sprintf("utente%d@pec-a.test", r.IntN(10000)), From: from, To: from.Add(day)}
		}},
		{"sender-30days", func() store.Query {
			return store.Query{Sender: fmt.Sprintf("utente%d@pec-a.test", r.IntN(10000)), From: storetest.BenchStart,
				To: storetest.BenchStart.Add(storetest.BenchSpan)}
		}},
		{"recipient-1day", func() store.Query {
			from := storetest.BenchStart.Add(time.Duration(r.IntN(29)) * day)
			return store.Query{Recipient: fmt.Sprintf("ufficio%d@pec-b.test", r.IntN(50000)), From: from, To: from.Add(day)}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			found := 0
			for i := 0; i < b.N; i++ {
				found += count(c.q())
			}
			b.ReportMetric(float64(found)/float64(b.N), "events/op")
		})
	}
}
