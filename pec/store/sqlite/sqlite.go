// Package sqlite is the default store.Store: one SQLite file (mattn/go-sqlite3, cgo) that
// several processes on one machine (pec-milter, pec-lmtpd, pecctl) share.
//
// Durability and concurrency:
//   - WAL journal, synchronous=FULL: a Commit that returned nil survives a power cut.
//   - One writer connection per process, fed by one goroutine: writes are serialised in
//     process, and concurrent Commits that queue up while a transaction is running are
//     written together in the next transaction (group commit: one fsync for many
//     batches). Each batch runs inside its own SAVEPOINT, so one failing batch does not
//     fail the others of its group.
//   - Transactions start with BEGIN IMMEDIATE (_txlock=immediate), so a writer of another
//     process waits on busy_timeout instead of failing with "database is locked" on a
//     read-to-write lock upgrade.
//   - Reads use a separate pool of query-only connections; WAL readers never block the
//     writer.
//   - Each connection keeps its prepared statements (_stmt_cache_size): the store runs a
//     few dozen statements over and over, and preparing them each time was a twentieth of
//     pec-milter's CPU (issue 19).
//
// Operations: every process that opens the file must be able to write the database, its
// -wal and -shm files and their directory (run pec-milter, pec-lmtpd and pecctl as one user,
// or share a group with a setgid directory); the file must be on a local filesystem (WAL
// needs shared memory, so never NFS). Back it up with `sqlite3 pec.db ".backup copy.db"`,
// which is consistent while the daemons run.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
)

// BusyTimeout is how long a write waits for another process's transaction.
const BusyTimeout = 30 * time.Second

// maxGroup bounds how many queued Commits share one transaction.
const maxGroup = 128

// Deps are the optional dependencies of a Store.
type Deps struct {
	Logger     *slog.Logger          // default: slog.Default()
	Registerer prometheus.Registerer // nil: no metrics
	// MaxGroup caps how many queued Commits share one transaction; 0 means 128, and 1
	// turns group commit off (one transaction, one fsync, per Commit).
	MaxGroup int
	// Now, for tests, replaces the database's clock: lease expiry (TryLease, ClaimOutbox),
	// due outbox items, commit times. nil (production): the clock of SQLite, read inside
	// the transaction that decides.
	Now func() time.Time
}

// Store is the SQLite store.Store.
type Store struct {
	w, r   *sql.DB
	log    *slog.Logger
	wq     chan *writeReq
	done   chan struct{}
	waker  store.Waker
	groups prometheus.Histogram
	max    int
	now    func() time.Time // nil: the database's clock
}

var _ store.Store = (*Store)(nil)

type writeReq struct {
	fn     func(tx *sql.Tx) error
	wake   bool // wake outbox waiters after commit; fn may set it (writeWake)
	result chan error
}

// New opens (creating if needed) the database cfg.DSN, a file path, and migrates it.
func New(cfg store.Config, d Deps) (*Store, error) {
	if cfg.Driver != "" && cfg.Driver != "sqlite" {
		return nil, fmt.Errorf("store.driver: %q is not sqlite", cfg.Driver)
	}
	if cfg.DSN == "" {
		return nil, errors.New("store.dsn: empty (the SQLite database path)")
	}
	return Open(cfg.DSN, d)
}

// restrictModes keeps the database from other users (issue 12 item 10): it holds the legal
// log, the raw receipts and the quarantined viruses. A new database file is created 0600,
// whatever the umask, before SQLite opens it (SQLite would create it 0644 less the umask); SQLite
// gives its -wal and -shm files the database's mode. On an existing database the permissions
// of others are removed from the file and from its -wal, -shm and -journal; the owner's and
// the group's stay (processes sharing the database through a group, see the package comment).
func restrictModes(abs string) error {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{abs, abs + "-wal", abs + "-shm", abs + "-journal"} {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if m := st.Mode().Perm(); m&0o007 != 0 {
			if err := os.Chmod(p, m&^0o007); err != nil {
				return err
			}
		}
	}
	return nil
}

// Open opens the database file at path.
func Open(path string, d Deps) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store.dsn: %w", err)
	}
	if err := restrictModes(abs); err != nil {
		return nil, fmt.Errorf("store.dsn: %w", err)
	}
	dsn := func(extra string) string {
		return "file:" + (&url.URL{Path: abs}).EscapedPath() + "?_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1&_stmt_cache_size=64" +
			fmt.Sprintf("&_busy_timeout=%d", BusyTimeout.Milliseconds()) + extra
	}
	w, err := sql.Open("sqlite3", dsn("&_txlock=immediate"))
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrateRetrying(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("store.dsn: opening %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", dsn("&_query_only=1"))
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.MaxGroup <= 0 {
		d.MaxGroup = maxGroup
	}
	s := &Store{w: w, r: r, log: d.Logger, wq: make(chan *writeReq, 1024), done: make(chan struct{}), max: d.MaxGroup, now: d.Now}
	s.groups = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pec_store_commit_group_size", Help: "Batches written per SQLite transaction (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	})
	if d.Registerer != nil {
		if err := d.Registerer.Register(s.groups); err != nil {
			s.Close()
			return nil, err
		}
	}
	go s.writer()
	return s, nil
}

// migrateRetrying runs migrate, again while SQLite answers busy, within BusyTimeout. Two
// processes opening a new file at once (pec-milter and pec-lmtpd started together on a fresh
// install) race to put it in WAL mode and create the schema; the loser can get "database is
// locked" at once, from a lock SQLite does not wait on with the busy handler. migrate runs in
// one transaction and is idempotent, so running it again is safe.
func migrateRetrying(w *sql.DB) error {
	deadline := time.Now().Add(BusyTimeout)
	for {
		err := migrate(context.Background(), w)
		if err == nil || !busy(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20*time.Millisecond + time.Duration(rand.IntN(30))*time.Millisecond)
	}
}

// busy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED.
func busy(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	return strings.Contains(err.Error(), "database is locked")
}

// Close stops the writer and closes the database.
func (s *Store) Close() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	close(s.wq)
	<-s.done
	return errors.Join(s.r.Close(), s.w.Close())
}

// write runs fn in the writer's transaction and waits for the commit. Once the request is
// queued it is waited for even if ctx ends, because it may be committed anyway: returning
// early would tell the caller "failed" about data that is on disk.
func (s *Store) write(ctx context.Context, wake bool, fn func(tx *sql.Tx) error) error {
	return s.send(ctx, &writeReq{fn: fn, wake: wake, result: make(chan error, 1)})
}

// writeWake is write for a fn that finds out while running whether it added outbox items.
func (s *Store) writeWake(ctx context.Context, fn func(tx *sql.Tx) (wake bool, err error)) error {
	req := &writeReq{result: make(chan error, 1)}
	req.fn = func(tx *sql.Tx) error {
		w, err := fn(tx)
		req.wake = w // read by runGroup after fn returns, in the writer goroutine
		return err
	}
	return s.send(ctx, req)
}

func (s *Store) send(ctx context.Context, req *writeReq) (err error) {
	defer func() {
		if r := recover(); r != nil { // send on closed channel: Close raced with a write
			err = &store.Temporary{Err: errors.New("store closed")}
		}
	}()
	select {
	case s.wq <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.result
}

func (s *Store) writer() {
	defer close(s.done)
	for req := range s.wq {
		group := []*writeReq{req}
	more:
		for len(group) < s.max {
			select {
			case r, ok := <-s.wq:
				if !ok {
					break more
				}
				group = append(group, r)
			default:
				break more
			}
		}
		s.runGroup(group)
	}
}

// runGroup writes a group of requests in one transaction, each in its own savepoint.
func (s *Store) runGroup(group []*writeReq) {
	s.groups.Observe(float64(len(group)))
	errs := make([]error, len(group))
	fail := func(err error) {
		for _, r := range group {
			r.result <- temporary(err)
		}
	}
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		fail(err)
		return
	}
	if len(group) == 1 {
		errs[0] = group[0].fn(tx)
		if errs[0] != nil {
			tx.Rollback() //nolint:errcheck
			group[0].result <- temporary(errs[0])
			return
		}
	} else {
		for i, r := range group {
			if _, err := tx.Exec(`SAVEPOINT g`); err != nil {
				tx.Rollback() //nolint:errcheck
				fail(err)
				return
			}
			if errs[i] = r.fn(tx); errs[i] != nil {
				if _, err := tx.Exec(`ROLLBACK TO g`); err != nil {
					tx.Rollback() //nolint:errcheck
					fail(err)
					return
				}
			}
			if _, err := tx.Exec(`RELEASE g`); err != nil {
				tx.Rollback() //nolint:errcheck
				fail(err)
				return
			}
		}
	}
	if err := tx.Commit(); err != nil {
		s.log.Error("store commit failed", slog.Any("err", err), slog.Int("batches", len(group)))
		fail(err)
		return
	}
	wake := false
	for i, r := range group {
		wake = wake || r.wake && errs[i] == nil
		r.result <- temporary(errs[i])
	}
	if wake {
		s.waker.Wake()
	}
}

// temporary wraps database errors as temporary failures; the store's own sentinels
// (conflict, invalid input, ...) pass unchanged.
func temporary(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{store.ErrConflict, store.ErrInvalid, store.ErrNotFound, store.ErrExists, store.ErrLeaseLost, store.ErrRetention, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return err
		}
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return err
	}
	return &store.Temporary{Err: err}
}

// isUnique reports a UNIQUE/PRIMARY KEY constraint violation.
func isUnique(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey)
}

// OutboxWait implements store.Store.
func (s *Store) OutboxWait() <-chan struct{} { return s.waker.Wait() }

// clock is the store's time in Unix nanoseconds inside tx: SQLite's clock (millisecond
// precision), or the clock injected for tests. Lease decisions use it so that they do not
// depend on a caller's clock; for SQLite, a local database, it is this machine's clock.
func (s *Store) clock(tx *sql.Tx) (int64, error) {
	if s.now != nil {
		return s.now().UnixNano(), nil
	}
	var ms int64
	err := tx.QueryRow(`SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)`).Scan(&ms)
	return ms * int64(time.Millisecond), err
}

// goNow is the store's clock for values it records without deciding anything by them
// (commit times, default creation times).
func (s *Store) goNow() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
