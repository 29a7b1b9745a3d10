// Package postgres is the store.Store for several nodes: one PostgreSQL database (jackc/pgx
// v5) that every node's pec-milter, pec-lmtpd and pecctl share, with a streaming standby and
// automatic failover run by the operator's usual tools (DESIGN.md, scale-out).
//
//	store: {driver: postgres, dsn: "postgres://pec@db1:5432,db2:5432/pec?target_session_attrs=read-write"}
//
// The DSN may list several hosts: connections go to the one that accepts writes
// (target_session_attrs=read-write is set when the DSN does not say), so a failover to a
// promoted standby needs no change of configuration. While no primary answers, every call
// fails with a store.Temporary error (Postfix gets a 4xx and retries).
//
// Behaviour is the SQLite store's (storetest.Run passes on both). How it holds under
// concurrent writers on several nodes:
//   - The log's sequence numbers come from one counter row (log_seq), updated by the last
//     statement of each writing transaction: its row lock orders the log, so sequence numbers
//     are given in commit order without gaps, and a reader paging by AfterSeq never misses an
//     event that commits later with a smaller number.
//   - Tracking transitions read their row with SELECT ... FOR UPDATE: two transitions of one
//     row (two nodes, two receipts) run one after the other, never read-modify-write races.
//   - Outbox claims lock their rows (FOR UPDATE SKIP LOCKED) and leases are decided on the
//     database's clock (pec_now(), from now()), never a node's.
//   - Held steps are confirmed or expired under the held row's lock: OnConfirm and OnExpiry
//     are committed at most once whatever the number of nodes.
//   - Commits of one process are grouped (group commit, as in the SQLite store): the
//     Commits queued while a transaction runs share the next one, each in its own savepoint.
//   - Transactions that PostgreSQL aborts for a deadlock or a serialization failure are
//     retried whole.
//
// The log is append-only (triggers refuse UPDATE, DELETE and TRUNCATE of events and
// event_addrs; seals refuse UPDATE and DELETE), partitioned by month (partitions.go).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
)

// maxGroup bounds how many queued Commits share one transaction: each runs in a savepoint (a
// subtransaction), and PostgreSQL slows every snapshot down once a transaction has more
// than 64 (PGPROC_MAX_CACHED_SUBXIDS).
const maxGroup = 60

// retries is how many times a transaction aborted by a deadlock or a serialization failure
// is run again before the error is returned (as a temporary failure).
const retries = 5

// Deps are the optional dependencies of a Store.
type Deps struct {
	Logger     *slog.Logger          // default: slog.Default()
	Registerer prometheus.Registerer // nil: no metrics
	// MaxGroup caps how many queued Commits share one transaction; 0 means 60, and 1
	// turns group commit off.
	MaxGroup int
	// MaxConns is the size of the connection pool; 0 means 16.
	MaxConns int32
	// Now, for tests, replaces the database's clock: lease expiry (TryLease, ClaimOutbox),
	// due outbox items, commit times. nil (production): PostgreSQL's now().
	Now func() time.Time
}

// Store is the PostgreSQL store.Store.
type Store struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	wq     chan *writeReq
	done   chan struct{}
	closed sync.Once
	waker  store.Waker
	groups prometheus.Histogram
	max    int
	now    func() time.Time // nil: the database's clock
	parts  sync.Map         // month start (Unix ns) -> true: log partitions known to exist
}

var _ store.Store = (*Store)(nil)

type txn = pgx.Tx

// New opens the database named by cfg.DSN (a libpq URL or key=value string) and migrates it.
func New(cfg store.Config, d Deps) (*Store, error) {
	if cfg.Driver != "" && cfg.Driver != "postgres" {
		return nil, fmt.Errorf("store.driver: %q is not postgres", cfg.Driver)
	}
	if cfg.DSN == "" {
		return nil, errors.New("store.dsn: empty (the PostgreSQL connection string)")
	}
	return Open(context.Background(), cfg.DSN, d)
}

// Open connects to dsn and migrates the schema.
func Open(ctx context.Context, dsn string, d Deps) (*Store, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store.dsn: %w", err)
	}
	if !strings.Contains(dsn, "target_session_attrs") {
		// Several hosts: connect to the primary only (pgx reads target_session_attrs from
		// the DSN; when the DSN is silent, ask for read-write).
		pc.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	pc.MaxConns = 16
	if d.MaxConns > 0 {
		pc.MaxConns = d.MaxConns
	}
	pc.MaxConnIdleTime = time.Minute
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("store.dsn: %w", err)
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.MaxGroup <= 0 {
		d.MaxGroup = maxGroup
	}
	s := &Store{pool: pool, log: d.Logger, wq: make(chan *writeReq, 1024), done: make(chan struct{}), max: d.MaxGroup, now: d.Now}
	fail := func(err error) (*Store, error) {
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool); err != nil {
		return fail(fmt.Errorf("store.dsn: opening %s: %w", pc.ConnConfig.Database, err))
	}
	if err := s.loadPartitions(ctx); err != nil {
		return fail(err)
	}
	m := month(time.Now().UnixNano())
	if err := s.ensureMonths(ctx, []int64{m.UnixNano(), m.AddDate(0, 1, 0).UnixNano(), m.AddDate(0, 2, 0).UnixNano()}); err != nil {
		return fail(err)
	}
	s.groups = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pec_store_commit_group_size", Help: "Batches written per PostgreSQL transaction (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
	})
	if d.Registerer != nil {
		if err := d.Registerer.Register(s.groups); err != nil {
			return fail(err)
		}
	}
	go s.writer()
	return s, nil
}

// Close stops the writer and closes the connections.
func (s *Store) Close() error {
	s.closed.Do(func() {
		close(s.wq)
		<-s.done
		s.pool.Close()
	})
	return nil
}

// OutboxWait implements store.Store.
func (s *Store) OutboxWait() <-chan struct{} { return s.waker.Wait() }

// inTx runs fn in a transaction, again when PostgreSQL aborted it for a deadlock or a
// serialization failure, or when its events need a log partition that does not exist yet
// (created in between, outside the transaction). fn must be safe to run again: it starts
// from its inputs.
func (s *Store) inTx(ctx context.Context, fn func(tx txn) error) error {
	var err error
	for i := 0; i < retries; i++ {
		err = pgx.BeginFunc(ctx, s.pool, fn)
		var nm *needMonths
		switch {
		case errors.As(err, &nm):
			if err := s.ensureMonths(ctx, nm.times); err != nil {
				return err
			}
		case noPartition(err):
			// A partition this process believed in is gone (a restored database): look again.
			s.parts.Clear()
			if err := s.loadPartitions(ctx); err != nil {
				return err
			}
		case retryable(err):
			s.log.Warn("store transaction retried", slog.Any("err", err), slog.Int("attempt", i+1))
		default:
			return err
		}
	}
	return err
}

// needMonths aborts a transaction whose events fall in months without a partition.
type needMonths struct{ times []int64 }

func (e *needMonths) Error() string { return "store: log partition missing" }

// noPartition reports an insert into the log for which no partition exists.
func noPartition(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && strings.Contains(pe.Message, "no partition")
}

// retryable reports a deadlock or a serialization failure: the transaction was rolled back
// and may simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
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
	if errors.As(err, &t) && t.Temporary() {
		return err
	}
	return &store.Temporary{Err: err}
}

// nowArg is the clock argument of the statements that decide by the store's clock
// (COALESCE($n, pec_now())): the injected clock in tests, NULL (the database's) otherwise.
func (s *Store) nowArg() any {
	if s.now != nil {
		return s.now().UnixNano()
	}
	return nil
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
