package postgres

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The tests run against a private PostgreSQL cluster that TestMain starts through
// integration/scripts/postgres-instance.sh (pgtest) and stops at the end. Without PostgreSQL
// the package fails: nothing here is skipped. PEC_PG_DIR keeps the cluster's data in that
// directory across runs (the benchmarks' large log is built once there).

var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	c, err := pgtest.Start(os.Getenv("PEC_PG_DIR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func freshDSN(t testing.TB) string { return cluster.Schema(t) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func openDSN(t testing.TB, dsn string, d Deps) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openTemp(t testing.TB) *Store { return openDSN(t, freshDSN(t), Deps{}) }

// TestConformance: the store conformance suite, the same as SQLite passes, with two handles
// (two pools, as two nodes) on one database where the suite asks.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) storetest.DB {
		dsn := freshDSN(t)
		return func() store.Store { return openDSN(t, dsn, Deps{Now: now}) }
	})
}
