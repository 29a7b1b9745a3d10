// Package migrate moves a provider from a single-node SQLite store to PostgreSQL (pecctl
// store migrate): every table is copied row for row, the legal log with its sequence
// numbers and the seals verbatim, so the seal chain (pec-spec §6.4) stays valid and
// `pecctl log verify` passes on the new store for every day sealed on the old one.
//
// The daemons must be stopped while it runs (Postfix keeps the mail it cannot hand to the
// milter and retries). The target must be empty: a migration is done once, all or nothing
// (one PostgreSQL transaction), and checked after the commit by reading both stores back.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gestore-pec/gestore/pec/store/postgres"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

// kind is how a column's SQLite value is written to PostgreSQL.
type kind int

const (
	i64     kind = iota // INTEGER -> bigint / integer
	text                // TEXT -> text (NULL stays NULL)
	bytes               // BLOB -> bytea (NULL stays NULL)
	boolean             // INTEGER 0/1 -> boolean
)

type column struct {
	name string
	kind kind
}

// table is one table copied as it is; both schemas name their columns alike.
type table struct {
	name string
	cols []column
	// identity is the column whose generated sequence must continue after the copied rows.
	identity string
	// from is what the rows are read from in SQLite, when not the table alone.
	from string
}

func cols(spec ...any) []column {
	var out []column
	for i := 0; i < len(spec); i += 2 {
		out = append(out, column{spec[i].(string), spec[i+1].(kind)})
	}
	return out
}

// tables are copied in this order. Leases are not copied: they are the running nodes'
// (taken again at start); event_addrs is copied with the events (copyAddrs).
var tables = []table{
	{name: "events", cols: cols("seq", i64, "time", i64, "identificativo", text, "kind", text, "sender", text,
		"recipients", text, "subject", text, "message_id", text, "gestore", text, "receipt_type", text, "about", text,
		"error", text, "error_detail", text, "virus", text, "queue_id", text, "size", i64, "generated", text,
		"logged_at", i64)},
	{name: "seals", cols: cols("day", text, "first_seq", i64, "last_seq", i64, "count", i64, "hash", bytes,
		"prev_hash", bytes, "signed", bytes, "token", bytes, "created", i64)},
	{name: "tracking", cols: cols("identificativo", text, "recipient", text, "state", text, "sent_at", i64, "due12", i64,
		"due22", i64, "due24", i64, "taken_at", i64, "delivered_at", i64, "failed_at", i64, "notice12_at", i64,
		"notice24_at", i64, "sender", text, "subject", text, "message_id", text, "data", bytes)},
	// SQLite keeps the outbox's bytes in outbox_raw (its schema migration 5); PostgreSQL
	// keeps them out of line by itself (TOAST), in the row. A sent item whose bytes were
	// purged (store.PurgeSentOutbox) has no outbox_raw row in SQLite and empty bytes in
	// PostgreSQL.
	{name: "outbox", identity: "id", from: "(SELECT o.*, coalesce(r.raw, x'') AS raw FROM outbox o LEFT JOIN outbox_raw r ON r.id = o.id) AS outbox", cols: cols("id", i64, "message_id", text, "kind", text, "identificativo", text,
		"mail_from", text, "rcpts", text, "raw", bytes, "created", i64, "state", text, "attempts", i64,
		"next_attempt", i64, "last_error", text, "claimed_by", text, "lease_until", i64, "sent_at", i64)},
	{name: "quarantine", identity: "id", cols: cols("id", i64, "identificativo", text, "time", i64, "virus", text,
		"sender", text, "recipients", text, "queue_id", text, "raw", bytes)},
	{name: "held", identity: "id", cols: cols("id", i64, "token", text, "idem_key", text, "identificativo", text,
		"state", text, "created", i64, "expires", i64, "outcome", bytes, "on_confirm", bytes, "on_expiry", bytes,
		"released_at", i64, "expired_at", i64, "late", boolean)},
	{name: "deliveries", cols: cols("mailbox", text, "message_id", text, "owner", text, "until", i64, "since", i64,
		"done", boolean, "outcome", text, "done_at", i64)},
}

// Report says what was copied.
type Report struct {
	Rows    map[string]int64 // per table, event_addrs included
	LastSeq int64            // the log's last sequence number (the next event gets LastSeq+1)
	Seals   int              // sealed days, compared one by one after the copy
	Elapsed time.Duration
}

// ErrNotEmpty: the target already holds data; nothing was copied.
var ErrNotEmpty = errors.New("migrate: the PostgreSQL store is not empty")

// SQLiteToPostgres copies the SQLite store at path into the empty PostgreSQL store at dsn,
// then reads both back and compares every event and seal. Both schemas are first brought to
// this program's version by opening them as stores.
func SQLiteToPostgres(ctx context.Context, path, dsn string) (*Report, error) {
	start := time.Now()
	src, err := sqlite.Open(path, sqlite.Deps{})
	if err != nil {
		return nil, fmt.Errorf("migrate: source: %w", err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, dsn, postgres.Deps{})
	if err != nil {
		return nil, fmt.Errorf("migrate: target: %w", err)
	}
	defer dst.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?_query_only=1&_busy_timeout=30000")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	// One read transaction: a consistent snapshot of the whole file.
	rtx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer rtx.Rollback() //nolint:errcheck
	rep := &Report{Rows: map[string]int64{}}
	if err := partitions(ctx, rtx, dst); err != nil {
		return nil, err
	}
	err = dst.Import(ctx, func(tx pgx.Tx) error { return copyAll(ctx, rtx, tx, rep) })
	if err != nil {
		return nil, err
	}
	if err := compare(ctx, src, dst, rep); err != nil {
		return rep, err
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// partitions creates the log partitions of every month the source's events fall in.
func partitions(ctx context.Context, rtx *sql.Tx, dst *postgres.Store) error {
	rows, err := rtx.QueryContext(ctx, `SELECT DISTINCT time / 86400000000000 FROM events`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var times []time.Time
	for rows.Next() {
		var day int64
		if err := rows.Scan(&day); err != nil {
			return err
		}
		times = append(times, time.Unix(day*86400, 0).UTC())
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return dst.EnsureLogPartitions(ctx, times)
}

// copyAll copies every table inside the target's transaction tx.
func copyAll(ctx context.Context, rtx *sql.Tx, tx pgx.Tx, rep *Report) error {
	for _, t := range append(tables, table{name: "leases"}) {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: table %s has %d rows", ErrNotEmpty, t.name, n)
		}
	}
	for _, t := range tables {
		n, err := copyTable(ctx, rtx, tx, t)
		if err != nil {
			return fmt.Errorf("migrate: %s: %w", t.name, err)
		}
		rep.Rows[t.name] = n
		if t.identity != "" {
			if err := continueIdentity(ctx, rtx, tx, t); err != nil {
				return fmt.Errorf("migrate: %s: %w", t.name, err)
			}
		}
	}
	n, err := copyAddrs(ctx, rtx, tx)
	if err != nil {
		return fmt.Errorf("migrate: event_addrs: %w", err)
	}
	rep.Rows["event_addrs"] = n
	// The log's counter continues after the highest number SQLite ever gave.
	last, err := lastGiven(ctx, rtx, "events", "seq")
	if err != nil {
		return err
	}
	rep.LastSeq = last
	_, err = tx.Exec(ctx, `UPDATE log_seq SET last = $1`, last)
	return err
}
