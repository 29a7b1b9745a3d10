package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// BenchmarkCommit measures Commits of realistic batches (2 events each) with one caller and
// with four concurrent callers, with and without group commit. events/s is the figure.
func BenchmarkCommit(b *testing.B) {
	raw := storetest.BenchRaw
	for _, c := range []struct {
		name     string
		callers  int
		maxGroup int
	}{{"1caller", 1, 0}, {"4callers-group", 4, 0}, {"4callers-nogroup", 4, 1}, {"16callers-group", 16, 0}, {"16callers-nogroup", 16, 1}} {
		b.Run(c.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			s, err := Open(filepath.Join(b.TempDir(), "pec.db"), Deps{MaxGroup: c.maxGroup, Registerer: reg})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < c.callers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						if err := s.Commit(context.Background(), storetest.BenchBatch(i, raw)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
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

// benchDB returns a database with n events over 30 days (October 2026), built once with a
// fast bulk path and kept at $PEC_BENCH_DIR (default /tmp/pec-store-bench) for later runs.
func benchDB(b *testing.B, n int) string {
	dir := os.Getenv("PEC_BENCH_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "pec-store-bench")
	}
	path := filepath.Join(dir, fmt.Sprintf("events-%d.db", n))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := bulkLoad(path+".tmp", n); err != nil {
		b.Fatal(err)
	}
	for _, ext := range []string{"", "-wal", "-shm"} {
		os.Rename(path+".tmp"+ext, path+ext) //nolint:errcheck
	}
	b.Logf("built %d events in %v (%s)", n, time.Since(start).Round(time.Second), path)
	return path
}

// bulkLoad fills a fresh database without the secondary indexes, in large transactions with
// synchronous=OFF, then builds the indexes and the address table sorted.
func bulkLoad(path string, n int) error {
	os.Remove(path)
	s, err := Open(path, Deps{})
	if err != nil {
		return err
	}
	s.Close()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF&_cache_size=-262144")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{`DROP INDEX events_time`, `DROP INDEX events_identificativo`, `DROP INDEX events_sender_time`} {
		if _, err := db.Exec(q); err != nil {
			return err
		}
	}
	const chunk = 200000
	for lo := 0; lo < n; lo += chunk {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		st, err := tx.Prepare(insertEventSQL)
		if err != nil {
			return err
		}
		for i := lo; i < min(lo+chunk, n); i++ {
			e := storetest.BenchEvent(i, storetest.BenchTime(i, n))
			if _, err := st.Exec(e.Time.UnixNano(), e.Identificativo, string(e.Kind), e.Sender, js(e.Recipients), e.Subject,
				e.MessageID, e.Gestore, e.ReceiptType, js(nonNil(e.About)), e.Error, e.ErrorDetail, e.Virus, e.QueueID, e.Size,
				js(e.Generated), e.Time.UnixNano()); err != nil {
				return err
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	for _, q := range []string{
		`INSERT INTO event_addrs (addr, seq) SELECT lower(json_extract(value, '$.addr')), seq FROM events, json_each(events.recipients) ORDER BY 1, 2`,
		`CREATE INDEX events_time ON events(time)`,
		`CREATE INDEX events_identificativo ON events(identificativo)`,
		`CREATE INDEX events_sender_time ON events(sender, time)`,
		`ANALYZE`,
		`PRAGMA wal_checkpoint(TRUNCATE)`,
	} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func benchEvents() int {
	if v, err := strconv.Atoi(os.Getenv("PEC_BENCH_EVENTS")); err == nil && v > 0 {
		return v
	}
	return 10_000_000
}

// BenchmarkSearch: searches over a large log (PEC_BENCH_EVENTS, default 10 million) by
// identificativo, and by sender within a one-day range.
func BenchmarkSearch(b *testing.B) {
	n := benchEvents()
	path := benchDB(b, n)
	s, err := Open(path, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	count := func(q store.Query) int {
		k := 0
		if err := s.ScanLog(ctx, q, func(*store.Event) error { k++; return nil }); err != nil {
			b.Fatal(err)
		}
		return k
	}
	b.Run("identificativo", func(b *testing.B) {
		found := 0
		for i := 0; i < b.N; i++ {
			found += count(store.Query{Identificativo: fmt.Sprintf("opec01.%07d.01@pec-a.test", r.IntN(n/2))})
		}
		b.ReportMetric(float64(found)/float64(b.N), "events/op")
	})
	b.Run("sender-1day", func(b *testing.B) {
		found := 0
		for i := 0; i < b.N; i++ {
			from := storetest.BenchStart.Add(time.Duration(r.IntN(29)) * 24 * time.Hour)
			found += count(store.Query{Sender: fmt.Sprintf("utente%d@pec-a.test", r.IntN(10000)), From: from, To: from.Add(24 * time.Hour)})
		}
		b.ReportMetric(float64(found)/float64(b.N), "events/op")
	})
	b.Run("sender-30days", func(b *testing.B) {
		found := 0
		for i := 0; i < b.N; i++ {
			found += count(store.Query{Sender: fmt.Sprintf("utente%d@pec-a.test", r.IntN(10000)), From: storetest.BenchStart, To: storetest.BenchStart.Add(storetest.BenchSpan)})
		}
		b.ReportMetric(float64(found)/float64(b.N), "events/op")
	})
	b.Run("recipient-1day", func(b *testing.B) {
		found := 0
		for i := 0; i < b.N; i++ {
			from := storetest.BenchStart.Add(time.Duration(r.IntN(29)) * 24 * time.Hour)
			found += count(store.Query{Recipient: fmt.Sprintf("ufficio%d@pec-b.test", r.IntN(50000)), From: from, To: from.Add(24 * time.Hour)})
		}
		b.ReportMetric(float64(found)/float64(b.N), "events/op")
	})
}

// BenchmarkOutboxItem is one outbox item's life as the drainer lives it: the Commit that
// queues it, the claim that reads it back, the mark once Postfix took it (three fsync'd
// transactions). At 1 MB and 10 MB the item is a consegna completa carrying the busta (issue
// 19: the delivery point's CPU for large messages). It reports the bytes written to the
// database files per item.
func BenchmarkOutboxItem(b *testing.B) {
	for _, size := range []int{10 << 10, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(filepath.Join(dir, "pec.db"), Deps{Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			raw := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n"), size/76+1)[:size]
			before, counted := bytesWritten()
			cpu0 := cpuTime()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mid := fmt.Sprintf("<bench.%d@pec-b.test>", i)
				err := s.Commit(ctx, &store.Batch{Outbox: []store.OutboxItem{{MessageID: mid, Kind: "consegna-completa",
					Identificativo: "opec.bench@pec-a.test", From: "posta-certificata@pec-b.test", Rcpts: []string{"alice@pec-a.test"}, Raw: raw}}})
				if err != nil {
					b.Fatal(err)
				}
				items, err := s.ClaimOutbox(ctx, store.Claim{Owner: "bench", Lease: time.Minute, Limit: 10})
				if err != nil || len(items) != 1 || len(items[0].Raw) != size {
					b.Fatalf("claim: %d items, %v", len(items), err)
				}
				if err := s.MarkOutbox(ctx, items[0].ID, "bench", store.Mark{State: store.OutboxSent, At: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
			if after, ok := bytesWritten(); ok && counted {
				b.ReportMetric(float64(after-before)/float64(b.N)/float64(size), "written/byte")
			}
		})
	}
}

// cpuTime is the CPU time (user and system) of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bytesWritten is what this process has caused to be written to storage so far
// (/proc/self/io write_bytes: the database and WAL files, checkpoints included); false where
// the kernel does not say.
func bytesWritten() (int64, bool) {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// BenchmarkPurgeSentOutbox purges the bytes of 2,000 sent 16 KB items (the retention job's
// daily pass, store.PurgeSentOutbox) and then queues as many bytes again: it reports the
// purge's time per 1,000 items and how much the database file grew for the new items, beside
// the same without the purge (kept). SQLite reuses the pages the purge freed, so a provider's
// file stops growing once the items past the retention are purged daily. Run with
// -benchtime 1x.
func BenchmarkPurgeSentOutbox(b *testing.B) {
	for _, purge := range []bool{true, false} {
		name := map[bool]string{true: "purged", false: "kept"}[purge]
		b.Run(name, func(b *testing.B) { benchPurge(b, purge) })
	}
}

func benchPurge(b *testing.B, purge bool) {
	const n, size = 2000, 16 << 10
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		path := filepath.Join(dir, "pec.db")
		s, err := Open(path, Deps{Registerer: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		raw := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\r\n"), size/76+1)[:size]
		queue := func(round int) {
			for k := 0; k < n; k += 100 {
				bt := &store.Batch{}
				for j := k; j < k+100; j++ {
					bt.Send(store.OutboxItem{MessageID: fmt.Sprintf("<purge.%d.%d@pec-b.test>", round, j), Kind: "consegna",
						Identificativo: "opec.bench@pec-a.test", From: "posta-certificata@pec-b.test", Rcpts: []string{"alice@pec-a.test"}, Raw: raw})
				}
				if err := s.Commit(ctx, bt); err != nil {
					b.Fatal(err)
				}
			}
		}
		queue(0)
		sentAt := time.Now().Add(-40 * 24 * time.Hour)
		for {
			items, err := s.ClaimOutbox(ctx, store.Claim{Owner: "bench", Lease: time.Minute, Limit: 500})
			if err != nil {
				b.Fatal(err)
			}
			if len(items) == 0 {
				break
			}
			for _, it := range items {
				if err := s.MarkOutbox(ctx, it.ID, "bench", store.Mark{State: store.OutboxSent, At: sentAt}); err != nil {
					b.Fatal(err)
				}
			}
		}
		var took time.Duration
		if purge {
			b.StartTimer()
			start := time.Now()
			purged, err := s.PurgeSentOutbox(ctx, time.Now().Add(-30*24*time.Hour))
			took = time.Since(start)
			b.StopTimer()
			if err != nil || purged != n {
				b.Fatalf("purged %d of %d: %v", purged, n, err)
			}
		}
		before := fileSize(b, path)
		queue(1)
		grew := fileSize(b, path) - before
		s.Close()
		b.ReportMetric(float64(took.Milliseconds())*1000/float64(n), "purge-ms/1000items")
		b.ReportMetric(float64(grew)/(1<<20), "growth-MB")
		b.ReportMetric(float64(n*size)/(1<<20), "queued-MB")
	}
}

// fileSize is the size of the database file and its WAL.
func fileSize(b *testing.B, path string) int64 {
	var total int64
	for _, p := range []string{path, path + "-wal"} {
		if st, err := os.Stat(p); err == nil {
			total += st.Size()
		}
	}
	return total
}
