package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gestore-pec/gestore/pec/store"
)

const eventCols = `seq, time, identificativo, kind, sender, recipients, subject, message_id, gestore,
	receipt_type, about, error, error_detail, virus, queue_id, size, generated`

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// logQuery builds the SELECT of ScanLog. The indexes serve: identificativo; sender within a
// time range (events_sender_time on lower(sender)); recipient or mailbox (event_addrs); time
// range (events_time, and partition pruning: a bounded query reads only its months).
func logQuery(q store.Query) (string, []any) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var timeRange []string // also applied to event_addrs, to prune its partitions
	if !q.From.IsZero() {
		timeRange = append(timeRange, "time >= "+arg(q.From.UnixNano()))
	}
	if !q.To.IsZero() {
		timeRange = append(timeRange, "time < "+arg(q.To.UnixNano()))
	}
	where = append(where, timeRange...)
	addrs := func(addr string) string {
		c := append([]string{"addr = " + arg(strings.ToLower(addr))}, timeRange...)
		return "seq IN (SELECT seq FROM event_addrs WHERE " + strings.Join(c, " AND ") + ")"
	}
	if q.AfterSeq > 0 {
		where = append(where, "seq > "+arg(q.AfterSeq))
	}
	if q.Identificativo != "" {
		where = append(where, "identificativo = "+arg(q.Identificativo))
	}
	if q.Sender != "" {
		where = append(where, "lower(sender) = lower("+arg(q.Sender)+" COLLATE \"C\")")
	}
	if q.Recipient != "" {
		where = append(where, addrs(q.Recipient))
	}
	if q.Mailbox != "" {
		where = append(where, "(lower(sender) = lower("+arg(q.Mailbox)+" COLLATE \"C\") OR "+addrs(q.Mailbox)+")")
	}
	if q.Subject != "" {
		// lower() under COLLATE "C" folds ASCII only, like store.Query.Match.
		where = append(where, "strpos(lower(subject), lower("+arg(q.Subject)+" COLLATE \"C\")) > 0")
	}
	if len(q.Kinds) > 0 {
		var ks []string
		for _, k := range q.Kinds {
			ks = append(ks, string(k))
		}
		where = append(where, "kind = ANY("+arg(ks)+"::text[])")
	}
	query := "SELECT " + eventCols + " FROM events"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq"
	if q.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", q.Limit)
	}
	return query, args
}

// ScanLog implements store.Store.
func (s *Store) ScanLog(ctx context.Context, q store.Query, fn func(*store.Event) error) error {
	query, args := logQuery(q)
	rows, err := s.pool.Query(ctx, query, args...)
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
	return s.queryTracking(ctx, `SELECT `+trackingCols+` FROM tracking WHERE identificativo = $1
		ORDER BY lower(recipient), recipient`, id)
}

// PurgeTracking implements store.Store.
func (s *Store) PurgeTracking(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tracking WHERE state IN ('delivered', 'failed', 'notified-24h') AND sent_at < $1`,
		before.UnixNano())
	if err != nil {
		return 0, temporary(err)
	}
	return tag.RowsAffected(), nil
}

// DueTracking implements store.Store.
func (s *Store) DueTracking(ctx context.Context, now time.Time, limit int) ([]store.Tracking, error) {
	var lim any
	if limit > 0 {
		lim = limit
	}
	n := now.UnixNano()
	// Each kind is read through its partial index in deadline order and stops at limit, so a
	// page costs its own size (sorting every due row for each page made a sweep quadratic in
	// the rows due; see the SQLite store).
	rows, err := s.queryTracking(ctx, `SELECT * FROM (
		(SELECT `+trackingCols+` FROM tracking WHERE state = 'sent' AND due12 <= $1 ORDER BY due12 LIMIT $2)
		UNION ALL
		(SELECT `+trackingCols+` FROM tracking WHERE state IN ('taken', 'notified-12h') AND due22 <= $1 ORDER BY due22 LIMIT $2)) d
		ORDER BY sent_at, identificativo, lower(recipient), recipient LIMIT $2`, n, lim)
	for i := range rows {
		rows[i].Due = rows[i].DueAt(now)
	}
	return rows, err
}

// OpenTracking implements store.Store.
func (s *Store) OpenTracking(ctx context.Context) (map[store.State]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT 'sent', COUNT(*) FROM tracking WHERE state = 'sent'
		UNION ALL SELECT state, COUNT(*) FROM tracking WHERE state IN ('taken', 'notified-12h') GROUP BY state`)
	if err != nil {
		return nil, temporary(err)
	}
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
	rows, err := s.pool.Query(ctx, q, args...)
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
	rows, err := s.pool.Query(ctx, `SELECT id, identificativo, time, virus, sender, recipients, queue_id, raw
		FROM quarantine WHERE identificativo = $1 ORDER BY id`, id)
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
	tag, err := s.pool.Exec(ctx, `DELETE FROM quarantine WHERE time < $1`, store.RetentionCutoff(now).UnixNano())
	if err != nil {
		return 0, temporary(err)
	}
	return tag.RowsAffected(), nil
}

// PutSeal implements store.Store.
func (s *Store) PutSeal(ctx context.Context, x store.Seal) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO seals (day, first_seq, last_seq, count, hash, prev_hash, signed, token, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (day) DO NOTHING`, x.Day, x.FirstSeq, x.LastSeq, x.Count,
		x.Hash, x.PrevHash, x.Signed, x.Token, ns(x.Created))
	if err != nil {
		return temporary(err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: seal of %s", store.ErrExists, x.Day)
	}
	return nil
}

const sealCols = `day, first_seq, last_seq, count, hash, prev_hash, signed, token, created`

func (s *Store) getSeal(ctx context.Context, q string, arg string) (*store.Seal, error) {
	var x store.Seal
	var created int64
	err := s.pool.QueryRow(ctx, q, arg).Scan(&x.Day, &x.FirstSeq, &x.LastSeq, &x.Count, &x.Hash, &x.PrevHash,
		&x.Signed, &x.Token, &created)
	if isNoRows(err) {
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
	return s.getSeal(ctx, `SELECT `+sealCols+` FROM seals WHERE day = $1`, day)
}

// LastSeal implements store.Store.
func (s *Store) LastSeal(ctx context.Context, before string) (*store.Seal, error) {
	return s.getSeal(ctx, `SELECT `+sealCols+` FROM seals WHERE day < $1 ORDER BY day DESC LIMIT 1`, before)
}

// TryLease implements store.Store, on the database's clock (pec_now()) unless a test
// injected one. INSERT ... ON CONFLICT is atomic: of two nodes asking for a free lease at
// once, one inserts and the other finds its row and takes it only if expired or its own.
func (s *Store) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: lease needs a name, an owner and a duration", store.ErrInvalid)
	}
	tag, err := s.pool.Exec(ctx, `WITH c AS (SELECT COALESCE($4::bigint, pec_now()) AS now)
		INSERT INTO leases (name, owner, until) SELECT $1, $2, c.now + $3::bigint FROM c
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
		WHERE leases.owner = excluded.owner OR leases.until <= (SELECT now FROM c)`, name, owner, int64(ttl), s.nowArg())
	if err != nil {
		return false, temporary(err)
	}
	return tag.RowsAffected() > 0, nil
}

const trackingCols = `identificativo, recipient, state, sent_at, due12, due22, due24, taken_at, delivered_at,
	failed_at, notice12_at, notice24_at, sender, subject, message_id, data`

type scanner interface{ Scan(...any) error }

func scanTracking(sc scanner) (store.Tracking, error) {
	var r store.Tracking
	var state string
	var t [9]int64
	err := sc.Scan(&r.Identificativo, &r.Recipient, &state, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6],
		&t[7], &t[8], &r.Sender, &r.Subject, &r.MessageID, &r.Data)
	r.State = store.State(state)
	r.SentAt, r.Due12, r.Due22, r.Due24 = fromNS(t[0]), fromNS(t[1]), fromNS(t[2]), fromNS(t[3])
	r.TakenAt, r.DeliveredAt, r.FailedAt = fromNS(t[4]), fromNS(t[5]), fromNS(t[6])
	r.Notice12At, r.Notice24At = fromNS(t[7]), fromNS(t[8])
	return r, err
}
