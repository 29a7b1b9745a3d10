package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/heldcodec"
)

// Held records (store.Holder). Confirm and ExpireHeld lock the record (SELECT ... FOR
// UPDATE) before they read its state, in the transaction that commits its batch: of two
// Confirm calls at once, on any nodes, the second waits for the first and then finds the
// record released, so OnConfirm is committed once; an ExpireHeld sweep skips records another
// transaction holds (SKIP LOCKED) and takes them at a later sweep if they are still waiting.

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
	_, h, err := scanHeld(s.pool.QueryRow(ctx, `SELECT `+heldCols+` FROM held WHERE idem_key = $1 AND created >= $2`,
		key, ns(since)))
	if isNoRows(err) {
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
	var wake bool
	err := s.inTx(ctx, func(tx txn) error {
		out, wake = nil, false
		id, h, err := scanHeld(tx.QueryRow(ctx, `SELECT `+heldCols+` FROM held WHERE token = $1 FOR UPDATE`, token))
		if isNoRows(err) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if h.State != store.HeldWaiting && h.State != store.HeldExpired {
			out = h // released already: nothing to do
			return nil
		}
		w := &eventWriter{now: s.goNow()}
		if err := writeBatch(ctx, tx, &h.OnConfirm, w, ""); err != nil {
			return err
		}
		h.Release(at)
		if _, err := tx.Exec(ctx, `UPDATE held SET state = 'released', released_at = $1, late = $2 WHERE id = $3`,
			ns(at), h.Late, id); err != nil {
			return err
		}
		if err := w.flush(ctx, tx, s); err != nil {
			return err
		}
		out, wake = h, len(h.OnConfirm.Outbox) > 0
		return nil
	})
	if err != nil {
		return nil, temporary(err)
	}
	if wake {
		s.waker.Wake()
	}
	return out, nil
}

// ExpireHeld implements store.Holder. Each record's OnExpiry runs in its own savepoint, so
// that one that cannot be committed leaves the others expired.
func (s *Store) ExpireHeld(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	var n int
	var failed []error
	var wake bool
	err := s.inTx(ctx, func(tx txn) error {
		n, failed, wake = 0, nil, false
		rows, err := tx.Query(ctx, `SELECT `+heldCols+` FROM held WHERE state = 'held' AND expires <= $1
			ORDER BY expires, id LIMIT $2 FOR UPDATE SKIP LOCKED`, ns(now), limit)
		if err != nil {
			return err
		}
		type rec struct {
			id int64
			h  *store.Held
		}
		var due []rec
		for rows.Next() {
			id, h, err := scanHeld(rows)
			if err != nil {
				rows.Close()
				return err
			}
			due = append(due, rec{id, h})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		w := &eventWriter{now: s.goNow()}
		for _, r := range due {
			recErr, err := expireOne(ctx, tx, w, r.id, r.h, now)
			if err != nil {
				return err
			}
			if recErr != nil {
				failed = append(failed, fmt.Errorf("held step %s: %w", r.h.Identificativo, recErr))
				continue
			}
			n++
			wake = wake || len(r.h.OnExpiry.Outbox) > 0
		}
		return w.flush(ctx, tx, s)
	})
	if err != nil {
		return 0, temporary(err)
	}
	if wake {
		s.waker.Wake()
	}
	return n, errors.Join(failed...)
}

// expireOne writes h's OnExpiry and marks it expired inside a savepoint. recErr says why
// this record's OnExpiry could not be committed (the savepoint was rolled back, the record
// stays waiting); err is a failure of the transaction itself.
func expireOne(ctx context.Context, tx txn, w *eventWriter, id int64, h *store.Held, now time.Time) (recErr, err error) {
	recErr = writeBatch(ctx, tx, &h.OnExpiry, w, "expire")
	if recErr == nil {
		_, err = tx.Exec(ctx, `UPDATE held SET state = 'expired', expired_at = $1 WHERE id = $2`, ns(now), id)
		if err != nil {
			return nil, err
		}
		_, err = tx.Exec(ctx, `RELEASE SAVEPOINT expire`)
		return nil, err
	}
	if !errors.Is(recErr, store.ErrConflict) && !errors.Is(recErr, store.ErrInvalid) {
		return nil, recErr // a database failure, not this record's: fail the whole call
	}
	return recErr, nil
}

// PurgeHeld implements store.Holder.
func (s *Store) PurgeHeld(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM held WHERE state <> 'held' AND created < $1`, ns(before))
	if err != nil {
		return 0, temporary(err)
	}
	return tag.RowsAffected(), nil
}
