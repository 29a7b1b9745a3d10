package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

const outboxCols = `id, message_id, kind, identificativo, mail_from, rcpts, created, state, attempts,
	next_attempt, last_error, claimed_by, lease_until, sent_at`

func scanOutbox(sc scanner, raw *[]byte) (store.OutboxItem, error) {
	var o store.OutboxItem
	var rcpts, state string
	var created, next, lease, sent int64
	var attempts int32
	dest := []any{&o.ID, &o.MessageID, &o.Kind, &o.Identificativo, &o.From, &rcpts, &created, &state, &attempts,
		&next, &o.LastError, &o.ClaimedBy, &lease, &sent}
	if raw != nil {
		dest = append(dest, raw)
	}
	if err := sc.Scan(dest...); err != nil {
		return o, err
	}
	o.Attempts = int(attempts)
	o.State = store.OutboxState(state)
	o.Created, o.NextAttempt, o.LeaseUntil, o.SentAt = fromNS(created), fromNS(next), fromNS(lease), fromNS(sent)
	return o, json.Unmarshal([]byte(rcpts), &o.Rcpts)
}

// claimSQL leases due items in one statement, on the database's clock (pec_now()) unless a
// test injected one ($1). FOR UPDATE SKIP LOCKED: two drainers claiming at once (two
// processes, two nodes) lock disjoint rows, and a row changed by a claim that committed
// meanwhile is checked again against the conditions before it is taken.
const claimSQL = `WITH c AS (SELECT COALESCE($1::bigint, pec_now()) AS now),
picked AS (SELECT o.id FROM outbox o, c WHERE o.state = 'pending' AND o.next_attempt <= c.now
	AND (o.claimed_by = '' OR o.claimed_by = $2 OR o.lease_until <= c.now)
	ORDER BY o.id LIMIT $3 FOR UPDATE OF o SKIP LOCKED)
UPDATE outbox SET claimed_by = $2, lease_until = c.now + $4::bigint FROM c
	WHERE outbox.id IN (SELECT id FROM picked)
	RETURNING ` + `outbox.id, message_id, kind, identificativo, mail_from, rcpts, created, state, attempts,
	next_attempt, last_error, claimed_by, lease_until, sent_at, raw`

// ClaimOutbox implements store.Store.
func (s *Store) ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error) {
	if c.Owner == "" || c.Lease <= 0 {
		return nil, fmt.Errorf("%w: claim needs an owner and a lease", store.ErrInvalid)
	}
	limit := c.Limit
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, claimSQL, s.nowArg(), c.Owner, limit, int64(c.Lease))
	if err != nil {
		return nil, temporary(err)
	}
	defer rows.Close()
	var out []store.OutboxItem
	for rows.Next() {
		var raw []byte
		o, err := scanOutbox(rows, &raw)
		if err != nil {
			return nil, temporary(err)
		}
		o.Raw = raw
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, temporary(err)
	}
	slices.SortFunc(out, func(a, b store.OutboxItem) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// MarkOutbox implements store.Store. It is its own one-statement transaction, written right
// after Postfix's reply, to keep the resend-after-crash window small.
func (s *Store) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	var q string
	var args []any
	switch m.State {
	case store.OutboxSent:
		q = `UPDATE outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1,
			last_error = CASE WHEN $2 = '' THEN last_error ELSE $2 END, claimed_by = '', lease_until = 0
			WHERE id = $3`
		args = []any{ns(m.At), m.Error, id}
	case store.OutboxPending, store.OutboxParked:
		if m.Release {
			q = `UPDATE outbox SET claimed_by = '', lease_until = 0 WHERE id = $1 AND claimed_by = $2 AND state = 'pending'`
			args = []any{id, owner}
			break
		}
		q = `UPDATE outbox SET state = $1, attempts = attempts + 1, next_attempt = $2, last_error = $3,
			claimed_by = '', lease_until = 0 WHERE id = $4 AND claimed_by = $5 AND state = 'pending'`
		args = []any{string(m.State), ns(m.NextAttempt), m.Error, id, owner}
	default:
		return fmt.Errorf("%w: mark state %q", store.ErrInvalid, m.State)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return temporary(err)
	}
	if tag.RowsAffected() == 0 {
		if m.State == store.OutboxSent {
			return store.ErrNotFound
		}
		return store.ErrLeaseLost
	}
	return nil
}

// purgeBatch is how many items' bytes one statement of PurgeSentOutbox lets go.
const purgeBatch = 500

// PurgeSentOutbox implements store.Store: the bytes become empty (the row stays; the
// triggers refuse deleting it), in batches, along the index of the sent items whose bytes
// are still there (schema migration 3).
func (s *Store) PurgeSentOutbox(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `UPDATE outbox SET raw = ''::bytea WHERE id IN (SELECT id FROM outbox
			WHERE state = 'sent' AND raw <> ''::bytea AND sent_at < $1 ORDER BY sent_at LIMIT $2)`, ns(before), purgeBatch)
		if err != nil {
			return total, temporary(err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// ListOutbox implements store.Store.
func (s *Store) ListOutbox(ctx context.Context, state store.OutboxState, limit int) ([]store.OutboxItem, error) {
	var lim any // NULL: LIMIT ALL
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, `SELECT `+outboxCols+` FROM outbox WHERE state = $1 ORDER BY id LIMIT $2`, string(state), lim)
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
