package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

const eventCols = `seq, time, identificativo, kind, sender, recipients, subject, message_id, gestore,
	receipt_type, about, error, error_detail, virus, queue_id, size, generated`

// ScanLog implements store.Store. The indexes serve: identificativo; sender within a time
// range (events_sender_time); recipient or mailbox (event_addrs); time range (events_time).
func (s *Store) ScanLog(ctx context.Context, q store.Query, fn func(*store.Event) error) error {
	var where []string
	var args []any
	if !q.From.IsZero() {
		where, args = append(where, "time >= ?"), append(args, q.From.UnixNano())
	}
	if !q.To.IsZero() {
		where, args = append(where, "time < ?"), append(args, q.To.UnixNano())
	}
	if q.AfterSeq > 0 {
		where, args = append(where, "seq > ?"), append(args, q.AfterSeq)
	}
	if q.Identificativo != "" {
		where, args = append(where, "identificativo = ?"), append(args, q.Identificativo)
	}
	if q.Sender != "" {
		where, args = append(where, "sender = ?"), append(args, q.Sender)
	}
	if q.Recipient != "" {
		where, args = append(where, "seq IN (SELECT seq FROM event_addrs WHERE addr = ?)"), append(args, q.Recipient)
	}
	if q.Mailbox != "" {
		where = append(where, "(sender = ? OR seq IN (SELECT seq FROM event_addrs WHERE addr = ?))")
		args = append(args, q.Mailbox, q.Mailbox)
	}
	if q.Subject != "" {
		// lower() in SQLite folds ASCII only, like store.Query.Match.
		where, args = append(where, "instr(lower(subject), lower(?)) > 0"), append(args, q.Subject)
	}
	if len(q.Kinds) > 0 {
		ph := strings.TrimSuffix(strings.Repeat("?,", len(q.Kinds)), ",")
		where = append(where, "kind IN ("+ph+")")
		for _, k := range q.Kinds {
			args = append(args, string(k))
		}
	}
	query := "SELECT " + eventCols + " FROM events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq"
	if q.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return temporary(err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return temporary(err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return temporary(rows.Err())
}

func scanEvent(sc scanner) (*store.Event, error) {
	var e store.Event
	var t int64
	var kind, rcpts, about, gen string
	if err := sc.Scan(&e.Seq, &t, &e.Identificativo, &kind, &e.Sender, &rcpts, &e.Subject, &e.MessageID, &e.Gestore,
		&e.ReceiptType, &about, &e.Error, &e.ErrorDetail, &e.Virus, &e.QueueID, &e.Size, &gen); err != nil {
		return nil, err
	}
	e.Time = time.Unix(0, t).UTC()
	e.Kind = store.EventKind(kind)
	if err := errors.Join(json.Unmarshal([]byte(rcpts), &e.Recipients), json.Unmarshal([]byte(about), &e.About),
		json.Unmarshal([]byte(gen), &e.Generated)); err != nil {
		return nil, fmt.Errorf("event %d: %w", e.Seq, err)
	}
	if len(e.Recipients) == 0 {
		e.Recipients = nil
	}
	if len(e.About) == 0 {
		e.About = nil
	}
	if len(e.Generated) == 0 {
		e.Generated = nil
	}
	return &e, nil
}

// Tracking implements store.Store.
func (s *Store) Tracking(ctx context.Context, id string) ([]store.Tracking, error) {
	return s.queryTracking(ctx, `SELECT `+trackingCols+` FROM tracking WHERE identificativo = ? ORDER BY recipient`, id)
}

// PurgeTracking implements store.Store.
func (s *Store) PurgeTracking(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM tracking WHERE state IN ('delivered', 'failed', 'notified-24h') AND sent_at < ?`, before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// DueTracking implements store.Store.
func (s *Store) DueTracking(ctx context.Context, now time.Time, limit int) ([]store.Tracking, error) {
	if limit <= 0 {
		limit = -1
	}
	n := now.UnixNano()
	// Each kind is read through its partial index in deadline order and stops at limit, so a
	// page costs its own size: sorting every due row for each page made a sweep quadratic in
	// the rows due (1.7 s of CPU for 10,000 due among 1,000,000, BenchmarkSweep).
	rows, err := s.queryTracking(ctx, `SELECT * FROM (
		SELECT * FROM (SELECT `+trackingCols+` FROM tracking WHERE state = 'sent' AND due12 <= ?
			ORDER BY due12 LIMIT ?)
		UNION ALL
		SELECT * FROM (SELECT `+trackingCols+` FROM tracking WHERE state IN ('taken', 'notified-12h') AND due22 <= ?
			ORDER BY due22 LIMIT ?))
		ORDER BY sent_at, identificativo, recipient LIMIT ?`, n, limit, n, limit, limit)
	for i := range rows {
		rows[i].Due = rows[i].DueAt(now)
	}
	return rows, err
}

// OpenTracking implements store.Store.
func (s *Store) OpenTracking(ctx context.Context) (map[store.State]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT 'sent', COUNT(*) FROM tracking WHERE state = 'sent'
		UNION ALL SELECT state, COUNT(*) FROM tracking WHERE state IN ('taken', 'notified-12h') GROUP BY state`)
	if err != nil {
		return nil, temporary(err)
	}
	return countStates(rows)
}

// countStates reads (state, count) rows, leaving out the zero counts.
func countStates(rows *sql.Rows) (map[store.State]int64, error) {
	defer rows.Close()
	out := map[store.State]int64{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, temporary(err)
		}
		if n > 0 {
			out[store.State(st)] = n
		}
	}
	return out, temporary(rows.Err())
}

func (s *Store) queryTracking(ctx context.Context, q string, args ...any) ([]store.Tracking, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, temporary(err)
	}
	defer rows.Close()
	var out []store.Tracking
	for rows.Next() {
		r, err := scanTracking(rows)
		if err != nil {
			return nil, temporary(err)
		}
		out = append(out, r)
	}
	return out, temporary(rows.Err())
}

// Quarantined implements store.Store.
func (s *Store) Quarantined(ctx context.Context, id string) ([]store.QuarantineItem, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, identificativo, time, virus, sender, recipients, queue_id, raw
		FROM quarantine WHERE identificativo = ? ORDER BY id`, id)
	if err != nil {
		return nil, temporary(err)
	}
	defer rows.Close()
	var out []store.QuarantineItem
	for rows.Next() {
		var q store.QuarantineItem
		var t int64
		var rcpts string
		if err := rows.Scan(&q.ID, &q.Identificativo, &t, &q.Virus, &q.Sender, &rcpts, &q.QueueID, &q.Raw); err != nil {
			return nil, temporary(err)
		}
		q.Time = fromNS(t)
		if err := json.Unmarshal([]byte(rcpts), &q.Recipients); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, temporary(rows.Err())
}

// PurgeQuarantine implements store.Store.
func (s *Store) PurgeQuarantine(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM quarantine WHERE time < ?`, store.RetentionCutoff(now).UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// PutSeal implements store.Store.
func (s *Store) PutSeal(ctx context.Context, x store.Seal) error {
	return s.write(ctx, false, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO seals (day, first_seq, last_seq, count, hash, prev_hash, signed, token, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, x.Day, x.FirstSeq, x.LastSeq, x.Count, x.Hash, x.PrevHash, x.Signed,
			x.Token, ns(x.Created))
		if isUnique(err) {
			return fmt.Errorf("%w: seal of %s", store.ErrExists, x.Day)
		}
		return err
	})
}

const sealCols = `day, first_seq, last_seq, count, hash, prev_hash, signed, token, created`

func (s *Store) getSeal(ctx context.Context, q string, arg string) (*store.Seal, error) {
	var x store.Seal
	var created int64
	err := s.r.QueryRowContext(ctx, q, arg).Scan(&x.Day, &x.FirstSeq, &x.LastSeq, &x.Count, &x.Hash, &x.PrevHash,
		&x.Signed, &x.Token, &created)
	if err == sql.ErrNoRows {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, temporary(err)
	}
	x.Created = fromNS(created)
	return &x, nil
}

// GetSeal implements store.Store.
func (s *Store) GetSeal(ctx context.Context, day string) (*store.Seal, error) {
	return s.getSeal(ctx, `SELECT `+sealCols+` FROM seals WHERE day = ?`, day)
}

// LastSeal implements store.Store.
func (s *Store) LastSeal(ctx context.Context, before string) (*store.Seal, error) {
	return s.getSeal(ctx, `SELECT `+sealCols+` FROM seals WHERE day < ? ORDER BY day DESC LIMIT 1`, before)
}

// TryLease implements store.Store, on the store's clock (see clock).
func (s *Store) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: lease needs a name, an owner and a duration", store.ErrInvalid)
	}
	var ok bool
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		now, err := s.clock(tx)
		if err != nil {
			return err
		}
		res, err := tx.Exec(`INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
			WHERE leases.owner = excluded.owner OR leases.until <= ?`, name, owner, now+int64(ttl), now)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n > 0
		return err
	})
	return ok && err == nil, err
}
