package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// What pecctl store migrate (package migrate) needs of the store beyond store.Store.

// Import runs fn in one transaction on the store's database: a migration copies every
// table in it, all or nothing. fn sees the store's tables by their names (the schema is
// migrated); the log's partitions for its months must exist (EnsureLogPartitions).
func (s *Store) Import(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return temporary(pgx.BeginFunc(ctx, s.pool, fn))
}

// EnsureLogPartitions creates the log's monthly partitions of the months of times.
func (s *Store) EnsureLogPartitions(ctx context.Context, times []time.Time) error {
	ns := make([]int64, len(times))
	for i, t := range times {
		ns[i] = t.UnixNano()
	}
	return temporary(s.ensureMonths(ctx, ns))
}

// counted are the tables Count answers for.
var counted = map[string]bool{"events": true, "event_addrs": true, "seals": true, "tracking": true, "outbox": true,
	"quarantine": true, "held": true, "deliveries": true, "leases": true}

// Count returns the number of rows of one of the store's tables.
func (s *Store) Count(ctx context.Context, table string) (int64, error) {
	if !counted[table] {
		return 0, fmt.Errorf("postgres: no table %q", table)
	}
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
	return n, temporary(err)
}
