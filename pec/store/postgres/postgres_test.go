package postgres

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The tests run against a private PostgreSQL cluster that TestMain starts with
// integration/scripts/postgres-instance.sh (Debian's postgresql package, installed by
// integration/scripts/install-packages.sh) and stops at the end. Without PostgreSQL the
// package fails: nothing here is skipped. PEC_PG_DIR keeps the cluster's data in that
// directory across runs (the benchmarks' large log is built once there).

var (
	clusterDSN string // the cluster's postgres database, as its superuser
	schemas    atomic.Int64
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir := os.Getenv("PEC_PG_DIR")
	if dir == "" {
		d, err := os.MkdirTemp("", "pec-pg-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(d)
		dir = d
	}
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	script, err := filepath.Abs("../../../integration/scripts/postgres-instance.sh")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctl := func(cmd string) error {
		out, err := exec.Command("bash", script, cmd, dir, fmt.Sprint(port)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("postgres-instance.sh %s: %v\n%s", cmd, err, out)
		}
		return nil
	}
	if err := ctl("start"); err != nil {
		fmt.Fprintf(os.Stderr, "the PostgreSQL store's tests need PostgreSQL (integration/scripts/install-packages.sh): %v\n", err)
		return 1
	}
	defer func() {
		if err := ctl("stop"); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	clusterDSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return m.Run()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// superuser runs one statement on the cluster as its superuser.
func superuser(t testing.TB, dsn, q string, args ...any) {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// freshDSN returns the DSN of a new, empty schema (the first of search_path), dropped when
// the test ends: each test has a database of its own as the store sees it.
func freshDSN(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), schemas.Add(1))
	superuser(t, clusterDSN, `CREATE SCHEMA `+name)
	t.Cleanup(func() { superuser(t, clusterDSN, `DROP SCHEMA `+name+` CASCADE`) })
	return clusterDSN + "&search_path=" + name
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
