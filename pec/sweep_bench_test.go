package pec_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

// BenchmarkSweep: one sweep over PEC_BENCH_TRACKED tracked recipients (default 1,000,000) of
// which 1% are overdue for the 12 h notice, on SQLite, with an in-memory RSA-2048 key. It
// reports the sweep's time and the heap it grew by (goal of issue 19 P5: under 5 s, flat
// memory). The database is built once under /tmp/pec-sweep-bench (minutes for a million
// rows) and copied for each run.
func BenchmarkSweep(b *testing.B) {
	n := 1_000_000
	if v := os.Getenv("PEC_BENCH_TRACKED"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	base := filepath.Join(os.TempDir(), "pec-sweep-bench", fmt.Sprintf("tracked-%d.db", n))
	if _, err := os.Stat(base); err != nil {
		buildTracked(b, base, n, now)
	}
	kr := hsmtest.New(b, provider.Name, "pec-a.test")
	cl := clamdtest.New(b)
	sc, _ := clamd.New(clamd.Config{Addr: cl.Addr()})
	b.ResetTimer() // building the database (first run only) is not the sweep
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		db := filepath.Join(b.TempDir(), "pec.db")
		if err := copyFile(db, base); err != nil {
			b.Fatal(err)
		}
		st, err := sqlite.Open(db, sqlite.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		eng, err := pec.New(pec.Config{Identities: []pec.Identity{provider}, Node: "bench"},
			pec.Deps{Keys: kr, Index: fakeIndex{}, Scanner: sc, Store: st, Clock: pec.ClockFunc(func() time.Time { return now })})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		sw, err := eng.Sweep(context.Background())
		b.StopTimer()
		runtime.ReadMemStats(&after)
		if err != nil || sw.Notice12 != n/100 {
			b.Fatalf("swept %+v, %v; want %d notices", sw, err, n/100)
		}
		b.ReportMetric(float64(after.HeapInuse)/(1<<20), "heap-MiB-after")
		b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(sw.Notice12)/1024, "KiB-alloc/notice")
		st.Close()
	}
}

func buildTracked(b *testing.B, path string, n int, now time.Time) {
	b.Helper()
	os.MkdirAll(filepath.Dir(path), 0o700)
	tmp := path + ".tmp"
	os.Remove(tmp)
	st, err := sqlite.Open(tmp, sqlite.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	d := &daticert.Postacert{Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno}
	d.Intestazione.Mittente = "alice@pec-a.test"
	d.Intestazione.Destinatari = []daticert.Destinatario{{Tipo: daticert.Certificato, Addr: "bruno@pec-b.test"}}
	d.Intestazione.Risposte = "alice@pec-a.test"
	d.Intestazione.Oggetto = daticert.Subject("bench")
	for i := 0; i < n; i += 10000 {
		batch := &store.Batch{}
		for j := i; j < min(i+10000, n); j++ {
			sent := now.Add(-time.Hour)
			if j%100 == 0 {
				sent = now.Add(-13 * time.Hour) // 1% overdue
			}
			id := fmt.Sprintf("20261130.bench.%07d@pec-a.test", j)
			d.Dati = daticert.Dati{GestoreEmittente: provider.Name, Data: daticert.Data{Zona: "+0100", Giorno: "30/11/2026", Ora: "12:00:00"},
				Identificativo: id, Msgid: "<b@x>", Ricevuta: daticert.Completa}
			batch.Track(store.TrackInsert{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: sent,
				Sender: "alice@pec-a.test", Subject: "bench", Data: daticert.Marshal(d)})
		}
		if err := st.Commit(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
	os.Rename(tmp, path)
}

// copyFile copies src to dst streaming, so that the process's peak RSS (time -v) is the
// sweep's and not a copy of a database of a gigabyte.
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
