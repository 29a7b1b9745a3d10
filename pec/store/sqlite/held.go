package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/heldcodec"
)

// Held records (store.Holder). Confirm and ExpireHeld read the record and change its state
// inside one write transaction, and every write of every process is serialised (one writer
// per process, BEGIN IMMEDIATE between processes): of two Confirm calls at once, whichever
// runs second finds the record released and commits nothing.

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func insertHeld(tx *sql.Tx, h *store.Held) error {
	onConfirm, err := heldcodec.Encode(&h.OnConfirm)
	if err != nil {
		return err
	}
	onExpiry, err := heldcodec.Encode(&h.OnExpiry)
	if err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO held (token, idem_key, identificativo, state, created, expires, outcome, on_confirm, on_expiry)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, nullable(h.Token), nullable(h.Key), h.Identificativo, string(h.State),
		ns(h.Created), ns(h.Expires), h.Outcome, onConfirm, onExpiry)
	if isUnique(err) {
		return fmt.Errorf("%w: held record with this key or token (%s)", store.ErrExists, h.Identificativo)
	}
	return err
}

const heldCols = `id, token, idem_key, identificativo, state, created, expires, outcome, on_confirm, on_expiry,
	released_at, expired_at, late`

func scanHeld(sc scanner) (int64, *store.Held, error) {
	var h store.Held
	var id int64
	var token, key sql.NullString
	var state string
	var created, expires, released, expired int64
	var onConfirm, onExpiry []byte
	if err := sc.Scan(&id, &token, &key, &h.Identificativo, &state, &created, &expires, &h.Outcome, &onConfirm,
		&onExpiry, &released, &expired, &h.Late); err != nil {
		return 0, nil, err
	}
	h.Token, h.Key, h.State = token.String, key.String, store.HeldState(state)
	h.Created, h.Expires, h.ReleasedAt, h.ExpiredAt = fromNS(created), fromNS(expires), fromNS(released), fromNS(expired)
	var err error
	if h.OnConfirm, err = heldcodec.Decode(onConfirm); err != nil {
		return 0, nil, fmt.Errorf("held record %d: %w", id, err)
	}
	if h.OnExpiry, err = heldcodec.Decode(onExpiry); err != nil {
		return 0, nil, fmt.Errorf("held record %d: %w", id, err)
	}
	return id, &h, nil
}

// LookupHeld implements store.Holder.
func (s *Store) LookupHeld(ctx context.Context, key string, since time.Time) (*store.Held, error) {
	if key == "" {
		return nil, store.ErrNotFound
	}
	_, h, err := scanHeld(s.r.QueryRowContext(ctx, `SELECT `+heldCols+` FROM held WHERE idem_key = ? AND created >= ?`,
		key, ns(since)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, temporary(err)
	}
	return h, nil
}

// Confirm implements store.Holder.
func (s *Store) Confirm(ctx context.Context, token string, at time.Time) (*store.Held, error) {
	if token == "" {
		return nil, store.ErrNotFound
	}
	var out *store.Held
	err := s.writeWake(ctx, func(tx *sql.Tx) (bool, error) {
		out = nil
		id, h, err := scanHeld(tx.QueryRow(`SELECT `+heldCols+` FROM held WHERE token = ?`, token))
		if errors.Is(err, sql.ErrNoRows) {
			return false, store.ErrNotFound
		}
		if err != nil {
			return false, err
		}
		if h.State != store.HeldWaiting && h.State != store.HeldExpired {
			out = h // released already: nothing to do
			return false, nil
		}
		if err := release(tx, id, h, at, s.goNow()); err != nil {
			return false, err
		}
		out = h
		return len(h.OnConfirm.Outbox) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// release commits h's OnConfirm and marks record id released at at.
func release(tx *sql.Tx, id int64, h *store.Held, at, commitTime time.Time) error {
	if err := commitBatch(tx, &h.OnConfirm, commitTime); err != nil {
		return err
	}
	h.Release(at)
	// The state condition is belt and braces: the transaction is serialised anyway.
	res, err := tx.Exec(`UPDATE held SET state = 'released', released_at = ?, late = ? WHERE id = ? AND state IN ('held', 'expired')`,
		ns(at), h.Late, id)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errors.Join(err, fmt.Errorf("held record %d changed under its transaction", id))
	}
	return nil
}

// releaseProven releases, before b is written and in the same transaction, the waiting step
// that starts the tracking of each transaction b's receipts prove queued
// (store.Transition.ProvesQueued), as Confirm would.
func releaseProven(tx *sql.Tx, b *store.Batch, now time.Time) error {
	for _, ident := range b.Proven() {
		waiting, err := queryHeld(tx, `SELECT `+heldCols+` FROM held WHERE identificativo = ? AND state = 'held'`, ident)
		if err != nil {
			return err
		}
		for _, r := range waiting {
			if r.h.StartsTracking() {
				if err := release(tx, r.id, r.h, now, now); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// heldRec is a held record and its row id.
type heldRec struct {
	id int64
	h  *store.Held
}

// queryHeld reads the held records q selects (heldCols), all of them before any is changed.
func queryHeld(tx *sql.Tx, q string, args ...any) ([]heldRec, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []heldRec
	for rows.Next() {
		id, h, err := scanHeld(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, heldRec{id, h})
	}
	return out, rows.Err()
}

// ExpireHeld implements store.Holder. Each record's OnExpiry runs in its own savepoint, so
// that one that cannot be committed leaves the others expired.
func (s *Store) ExpireHeld(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	var n int
	var failed []error
	err := s.writeWake(ctx, func(tx *sql.Tx) (bool, error) {
		n, failed = 0, nil
		due, err := queryHeld(tx, `SELECT `+heldCols+` FROM held WHERE state = 'held' AND expires <= ?
			ORDER BY expires, id LIMIT ?`, ns(now), limit)
		if err != nil {
			return false, err
		}
		wake := false
		for _, r := range due {
			recErr, err := expireOne(tx, r.id, r.h, now, s.goNow())
			if err != nil {
				return false, err
			}
			if recErr != nil {
				failed = append(failed, fmt.Errorf("held step %s: %w", r.h.Identificativo, recErr))
				continue
			}
			n++
			wake = wake || len(r.h.OnExpiry.Outbox) > 0
		}
		return wake, nil
	})
	if err != nil {
		return 0, err
	}
	return n, errors.Join(failed...)
}

// expireOne commits h's OnExpiry and marks it expired inside a savepoint. recErr says why
// this record's OnExpiry could not be committed (the savepoint was rolled back, the record
// stays waiting); err is a failure of the transaction itself.
func expireOne(tx *sql.Tx, id int64, h *store.Held, now, commitTime time.Time) (recErr, err error) {
	if _, err := tx.Exec(`SAVEPOINT expire`); err != nil {
		return nil, err
	}
	recErr = commitBatch(tx, &h.OnExpiry, commitTime)
	if recErr == nil {
		_, recErr = tx.Exec(`UPDATE held SET state = 'expired', expired_at = ? WHERE id = ? AND state = 'held'`, ns(now), id)
	}
	if recErr != nil {
		if _, err := tx.Exec(`ROLLBACK TO expire`); err != nil {
			return nil, err
		}
	}
	if _, err := tx.Exec(`RELEASE expire`); err != nil {
		return nil, err
	}
	if recErr != nil && !errors.Is(recErr, store.ErrConflict) && !errors.Is(recErr, store.ErrInvalid) {
		return nil, recErr // a database failure, not this record's: fail the whole call
	}
	return recErr, nil
}

// PurgeHeld implements store.Holder.
func (s *Store) PurgeHeld(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM held WHERE state != 'held' AND created < ?`, ns(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
