// Package pgtest gives tests a real PostgreSQL: a private cluster started through
// integration/scripts/postgres-instance.sh (Debian's postgresql package, installed by
// integration/scripts/install-packages.sh) on 127.0.0.1 and a free port, and one fresh
// schema per test. Without PostgreSQL, Start fails: callers fail, they do not skip.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running private cluster.
type Cluster struct {
	Dir  string // data and log under Dir (data/, postgres.log)
	Port int
	// DSN is the cluster's postgres database as its superuser.
	DSN string

	tmp     bool
	schemas atomic.Int64
}

// script is integration/scripts/postgres-instance.sh, found from this file's place in the
// repository.
func script() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("pgtest: cannot locate the repository")
	}
	p := filepath.Join(filepath.Dir(file), "../../../../integration/scripts/postgres-instance.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return p, nil
}

// Start starts a cluster with its data in dir (kept: a later Start reuses it), or in a new
// temporary directory removed by Stop when dir is "".
func Start(dir string) (*Cluster, error) {
	c := &Cluster{Dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "pec-pg-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.tmp = d, true
	}
	var err error
	if c.Port, err = freePort(); err != nil {
		return nil, err
	}
	if err := c.ctl("start"); err != nil {
		if c.tmp {
			os.RemoveAll(c.Dir)
		}
		return nil, fmt.Errorf("PostgreSQL is needed (integration/scripts/install-packages.sh installs it): %w", err)
	}
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	return c, nil
}

// Standby starts a streaming standby of c (pg_basebackup) in a new temporary directory.
func (c *Cluster) Standby() (*Cluster, error) {
	d, err := os.MkdirTemp("", "pec-pg-standby-")
	if err != nil {
		return nil, err
	}
	sb := &Cluster{Dir: d, tmp: true}
	if sb.Port, err = freePort(); err != nil {
		return nil, err
	}
	if err := sb.ctl("standby", fmt.Sprint(c.Port)); err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	sb.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", sb.Port)
	return sb, nil
}

// Promote makes a standby the primary (pg_ctl promote), as a failover does.
func (c *Cluster) Promote() error { return c.ctl("promote") }

// Halt stops the cluster and keeps its directory (a primary that went away).
func (c *Cluster) Halt() error { return c.ctl("stop") }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) ctl(cmd string, extra ...string) error {
	s, err := script()
	if err != nil {
		return err
	}
	out, err := exec.Command("bash", append([]string{s, cmd, c.Dir, fmt.Sprint(c.Port)}, extra...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("postgres-instance.sh %s: %v\n%s", cmd, err, out)
	}
	return nil
}

// Stop stops the cluster (and removes its temporary directory).
func (c *Cluster) Stop() error {
	err := c.ctl("stop")
	if c.tmp {
		os.RemoveAll(c.Dir)
	}
	return err
}

// Exec runs statements on the cluster's postgres database as its superuser.
func (c *Cluster) Exec(t testing.TB, dsn, q string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// Schema returns the DSN of a new, empty schema (the first of its search_path), dropped
// when the test ends: each test gets a database of its own as a store sees it.
func (c *Cluster) Schema(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), c.schemas.Add(1))
	c.Exec(t, c.DSN, `CREATE SCHEMA `+name)
	t.Cleanup(func() { c.Exec(t, c.DSN, `DROP SCHEMA `+name+` CASCADE`) })
	return c.DSN + "&search_path=" + name
}

var shared struct {
	sync.Mutex
	c   *Cluster
	err error
}

// Shared returns a cluster started on first use (in PEC_PG_DIR when set) and kept for the
// whole test binary; TestMain stops it with StopShared after m.Run.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.c == nil && shared.err == nil {
		shared.c, shared.err = Start(os.Getenv("PEC_PG_DIR"))
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.c
}

// StopShared stops the shared cluster if one was started.
func StopShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.c != nil {
		if err := shared.c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		shared.c = nil
	}
}
