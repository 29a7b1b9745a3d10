package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

const outboxCols = `id, message_id, kind, identificativo, mail_from, rcpts, created, state, attempts,
	next_attempt, last_error, claimed_by, lease_until, sent_at`

func scanOutbox(sc scanner, raw *[]byte) (store.OutboxItem, error) {
	var o store.OutboxItem
	var rcpts, state string
	var created, next, lease, sent int64
	dest := []any{&o.ID, &o.MessageID, &o.Kind, &o.Identificativo, &o.From, &rcpts, &created, &state, &o.Attempts,
		&next, &o.LastError, &o.ClaimedBy, &lease, &sent}
	if raw != nil {
		dest = append(dest, raw)
	}
	if err := sc.Scan(dest...); err != nil {
		return o, err
	}
	o.State = store.OutboxState(state)
	o.Created, o.NextAttempt, o.LeaseUntil, o.SentAt = fromNS(created), fromNS(next), fromNS(lease), fromNS(sent)
	return o, json.Unmarshal([]byte(rcpts), &o.Rcpts)
}

// ClaimOutbox implements store.Store. The claim is a write (claimed_by, lease_until), so
// two processes serialise on it and never get the same item while a lease holds. Due items
// and lease expiry are decided on the store's clock (see clock), read in the same
// transaction.
func (s *Store) ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error) {
	if c.Owner == "" || c.Lease <= 0 {
		return nil, fmt.Errorf("%w: claim needs an owner and a lease", store.ErrInvalid)
	}
	limit := c.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []store.OutboxItem
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		out = out[:0]
		now, err := s.clock(tx)
		if err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT id FROM outbox WHERE state = 'pending' AND next_attempt <= ?
			AND (claimed_by = '' OR claimed_by = ? OR lease_until <= ?) ORDER BY id LIMIT ?`, now, c.Owner, now, limit)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		in := strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")
		args := append([]any{c.Owner, now + int64(c.Lease)}, ids...)
		if _, err := tx.Exec(`UPDATE outbox SET claimed_by = ?, lease_until = ? WHERE id IN (`+in+`)`, args...); err != nil {
			return err
		}
		rows, err = tx.Query(`SELECT `+outboxCols+`, (SELECT raw FROM outbox_raw WHERE outbox_raw.id = outbox.id)
			FROM outbox WHERE id IN (`+in+`) ORDER BY id`, ids...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var raw []byte
			o, err := scanOutbox(rows, &raw)
			if err != nil {
				return err
			}
			o.Raw = raw
			out = append(out, o)
		}
		return rows.Err()
	})
	return out, err
}

// MarkOutbox implements store.Store. It is its own tiny transaction, written right after
// Postfix's reply, to keep the resend-after-crash window small.
func (s *Store) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	return s.write(ctx, false, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		switch m.State {
		case store.OutboxSent:
			res, err = tx.Exec(`UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1,
				last_error = CASE WHEN ? = '' THEN last_error ELSE ? END, claimed_by = '', lease_until = 0
				WHERE id = ?`, ns(m.At), m.Error, m.Error, id)
		case store.OutboxPending, store.OutboxParked:
			if m.Release {
				res, err = tx.Exec(`UPDATE outbox SET claimed_by = '', lease_until = 0
					WHERE id = ? AND claimed_by = ? AND state = 'pending'`, id, owner)
				break
			}
			res, err = tx.Exec(`UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt = ?, last_error = ?,
				claimed_by = '', lease_until = 0 WHERE id = ? AND claimed_by = ? AND state = 'pending'`,
				string(m.State), ns(m.NextAttempt), m.Error, id, owner)
		default:
			return fmt.Errorf("%w: mark state %q", store.ErrInvalid, m.State)
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			if m.State == store.OutboxSent {
				return store.ErrNotFound
			}
			return store.ErrLeaseLost
		}
		return nil
	})
}

// purgeBatch is how many items' bytes one transaction of PurgeSentOutbox deletes: the
// writer lock is held briefly, between other commits.
const purgeBatch = 500

// PurgeSentOutbox implements store.Store. It walks outbox_raw, which holds the bytes not
// purged yet, so that a daily purge does not read the items purged on the days before.
func (s *Store) PurgeSentOutbox(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.write(ctx, false, func(tx *sql.Tx) error {
			res, err := tx.Exec(`DELETE FROM outbox_raw WHERE id IN (SELECT r.id FROM outbox_raw r JOIN outbox o ON o.id = r.id
				WHERE o.state = 'sent' AND o.sent_at < ? ORDER BY r.id LIMIT ?)`, ns(before), purgeBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += n
		if err != nil || n < purgeBatch {
			return total, err
		}
	}
}

// ListOutbox implements store.Store.
func (s *Store) ListOutbox(ctx context.Context, state store.OutboxState, limit int) ([]store.OutboxItem, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+outboxCols+` FROM outbox WHERE state = ? ORDER BY id LIMIT ?`, string(state), limit)
	if err != nil {
		return nil, temporary(err)
	}
	defer rows.Close()
	var out []store.OutboxItem
	for rows.Next() {
		o, err := scanOutbox(rows, nil)
		if err != nil {
			return nil, temporary(err)
		}
		out = append(out, o)
	}
	return out, temporary(rows.Err())
}
