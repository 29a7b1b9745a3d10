package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres"
)

// copyTable streams one SQLite table into PostgreSQL with COPY, values converted by kind.
func copyTable(ctx context.Context, rtx *sql.Tx, tx pgx.Tx, t table) (int64, error) {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	from := t.name
	if t.from != "" {
		from = t.from
	}
	q := `SELECT ` + strings.Join(names, ", ") + ` FROM ` + from
	if t.name == "events" {
		q += ` ORDER BY seq` // the log in its order: its partitions fill month after month
	}
	rows, err := rtx.QueryContext(ctx, q)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	return tx.CopyFrom(ctx, pgx.Identifier{t.name}, names, &sqlSource{rows: rows, cols: t.cols})
}

// sqlSource is a pgx.CopyFromSource over SQLite rows.
type sqlSource struct {
	rows *sql.Rows
	cols []column
	vals []any
	err  error
}

func (s *sqlSource) Next() bool {
	if !s.rows.Next() {
		s.err = s.rows.Err()
		return false
	}
	raw := make([]any, len(s.cols))
	ptrs := make([]any, len(s.cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	if s.err = s.rows.Scan(ptrs...); s.err != nil {
		return false
	}
	s.vals = make([]any, len(s.cols))
	for i, c := range s.cols {
		if s.vals[i], s.err = convert(raw[i], c); s.err != nil {
			return false
		}
	}
	return true
}

func (s *sqlSource) Values() ([]any, error) { return s.vals, s.err }
func (s *sqlSource) Err() error             { return s.err }

// convert turns a value read from SQLite into what the PostgreSQL column takes.
func convert(v any, c column) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch c.kind {
	case i64:
		if n, ok := v.(int64); ok {
			return n, nil
		}
	case boolean:
		if n, ok := v.(int64); ok {
			return n != 0, nil
		}
	case text:
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		}
	case bytes:
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			return []byte(x), nil
		}
	}
	return nil, fmt.Errorf("column %s: unexpected %T", c.name, v)
}

// copyAddrs copies the address index of the log, with each row's event time (PostgreSQL
// partitions it by month of time).
func copyAddrs(ctx context.Context, rtx *sql.Tx, tx pgx.Tx) (int64, error) {
	rows, err := rtx.QueryContext(ctx, `SELECT a.addr, e.time, a.seq FROM event_addrs a JOIN events e ON e.seq = a.seq`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	return tx.CopyFrom(ctx, pgx.Identifier{"event_addrs"}, []string{"addr", "time", "seq"},
		&sqlSource{rows: rows, cols: cols("addr", text, "time", i64, "seq", i64)})
}

// lastGiven is the highest value an AUTOINCREMENT column ever got (sqlite_sequence), or
// its maximum: numbers are never given twice, even across the migration.
func lastGiven(ctx context.Context, rtx *sql.Tx, tbl, col string) (int64, error) {
	var seqv, maxv sql.NullInt64
	err := rtx.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = ?`, tbl).Scan(&seqv)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	if err := rtx.QueryRowContext(ctx, `SELECT max(`+col+`) FROM `+tbl).Scan(&maxv); err != nil {
		return 0, err
	}
	return max(seqv.Int64, maxv.Int64), nil
}

// continueIdentity makes the generated ids of t continue after the copied ones.
func continueIdentity(ctx context.Context, rtx *sql.Tx, tx pgx.Tx, t table) error {
	last, err := lastGiven(ctx, rtx, t.name, t.identity)
	if err != nil || last == 0 {
		return err
	}
	_, err = tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), $3)`, t.name, t.identity, last)
	return err
}

// compare reads both stores back after the commit: every event (in sequence order, every
// field) and every seal must be equal, and every copied table must hold as many rows.
func compare(ctx context.Context, src store.Store, dst *postgres.Store, rep *Report) error {
	if err := compareLog(ctx, src, dst); err != nil {
		return err
	}
	day := "9999-12-31"
	for {
		a, errA := src.LastSeal(ctx, day)
		b, errB := dst.LastSeal(ctx, day)
		if errors.Is(errA, store.ErrNotFound) && errors.Is(errB, store.ErrNotFound) {
			break
		}
		if errA != nil || errB != nil {
			return fmt.Errorf("migrate: check: seal before %s: %v / %v", day, errA, errB)
		}
		if !reflect.DeepEqual(a, b) {
			return fmt.Errorf("migrate: check: the seal of %s differs after the copy", a.Day)
		}
		rep.Seals++
		day = a.Day
	}
	for name, n := range rep.Rows {
		got, err := dst.Count(ctx, name)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("migrate: check: %s has %d rows, %d were copied", name, got, n)
		}
	}
	return nil
}

// compareLog pages through both logs at once.
func compareLog(ctx context.Context, src, dst store.Store) error {
	const page = 5000
	var after int64
	for {
		a, err := events(ctx, src, after, page)
		if err != nil {
			return err
		}
		b, err := events(ctx, dst, after, page)
		if err != nil {
			return err
		}
		if len(a) != len(b) {
			return fmt.Errorf("migrate: check: after seq %d the SQLite log has %d events, PostgreSQL %d", after, len(a), len(b))
		}
		for i := range a {
			if !reflect.DeepEqual(a[i], b[i]) || !a[i].Time.Equal(b[i].Time) {
				return fmt.Errorf("migrate: check: event %d differs after the copy", a[i].Seq)
			}
		}
		if len(a) < page {
			return nil
		}
		after = a[len(a)-1].Seq
	}
}

func events(ctx context.Context, s store.Store, after int64, limit int) ([]store.Event, error) {
	var out []store.Event
	err := s.ScanLog(ctx, store.Query{AfterSeq: after, Limit: limit}, func(e *store.Event) error {
		out = append(out, *e)
		return nil
	})
	return out, err
}
