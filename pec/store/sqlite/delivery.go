package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Delivery records (store.Deliveries). Claims and marks run in write transactions, which
// every process serialises (one writer per process, BEGIN IMMEDIATE between processes), so
// two attempts at the same key never both get DeliveryNew or DeliveryOpen.

// ClaimDeliveries implements store.Deliveries, on the store's clock.
func (s *Store) ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, keys []store.DeliveryKey) ([]store.DeliveryClaim, error) {
	if owner == "" || lease <= 0 {
		return nil, fmt.Errorf("%w: delivery claim needs an owner and a lease", store.ErrInvalid)
	}
	for _, k := range keys {
		if store.NormMailbox(k.Mailbox) == "" || k.MessageID == "" {
			return nil, fmt.Errorf("%w: delivery key needs a mailbox and a Message-ID", store.ErrInvalid)
		}
	}
	var out []store.DeliveryClaim
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		out = out[:0]
		now, err := s.clock(tx)
		if err != nil {
			return err
		}
		answered := map[store.DeliveryKey]store.DeliveryClaim{}
		for _, k := range keys {
			nk := store.DeliveryKey{Mailbox: store.NormMailbox(k.Mailbox), MessageID: k.MessageID}
			c, ok := answered[nk]
			if !ok {
				if c, err = claimDelivery(tx, owner, now, int64(lease), k); err != nil {
					return err
				}
				answered[nk] = c
			}
			c.DeliveryKey = k
			out = append(out, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func claimDelivery(tx *sql.Tx, owner string, now, lease int64, k store.DeliveryKey) (store.DeliveryClaim, error) {
	c := store.DeliveryClaim{DeliveryKey: k}
	mb := store.NormMailbox(k.Mailbox)
	var cur string
	var until, since int64
	var done bool
	err := tx.QueryRow(`SELECT owner, until, since, done, outcome FROM deliveries WHERE mailbox = ? AND message_id = ?`,
		mb, k.MessageID).Scan(&cur, &until, &since, &done, &c.Outcome)
	switch {
	case err == sql.ErrNoRows:
		_, err = tx.Exec(`INSERT INTO deliveries (mailbox, message_id, owner, until, since) VALUES (?, ?, ?, ?, ?)`,
			mb, k.MessageID, owner, now+lease, now)
		c.State, c.Since = store.DeliveryNew, fromNS(now)
		return c, err
	case err != nil:
		return c, err
	}
	c.Since = fromNS(since)
	switch {
	case done:
		c.State = store.DeliveryDone
	case cur == owner || until <= now:
		_, err = tx.Exec(`UPDATE deliveries SET owner = ?, until = ? WHERE mailbox = ? AND message_id = ?`,
			owner, now+lease, mb, k.MessageID)
		c.State, c.Outcome = store.DeliveryOpen, ""
	default:
		c.State, c.Owner, c.Outcome = store.DeliveryBusy, cur, ""
	}
	return c, err
}

// markDelivery closes (Done) or releases a record claimed by d.Owner.
func markDelivery(tx *sql.Tx, d *store.DeliveryMark) error {
	mb := store.NormMailbox(d.Mailbox)
	if !d.Done {
		_, err := tx.Exec(`DELETE FROM deliveries WHERE mailbox = ? AND message_id = ? AND owner = ? AND done = 0`,
			mb, d.MessageID, d.Owner)
		return err
	}
	res, err := tx.Exec(`UPDATE deliveries SET done = 1, outcome = ?, done_at = ? WHERE mailbox = ? AND message_id = ?
		AND owner = ? AND done = 0`, d.Outcome, ns(d.At), mb, d.MessageID, d.Owner)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err == nil {
			err = fmt.Errorf("%w: delivery record of %s %s is not open for %s", store.ErrConflict, d.Mailbox, d.MessageID, d.Owner)
		}
		return err
	}
	return nil
}

// PurgeDeliveries implements store.Deliveries.
func (s *Store) PurgeDeliveries(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, false, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM deliveries WHERE (done = 1 AND done_at < ?) OR (done = 0 AND until < ?)`,
			ns(before), ns(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}
