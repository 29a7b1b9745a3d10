package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Delivery records (store.Deliveries). A claim first tries to insert the record (ON
// CONFLICT DO NOTHING: of two attempts at a new key, on any nodes, one inserts and the other
// waits for it and finds the row), then reads an existing one under its row lock (SELECT ...
// FOR UPDATE) before taking it over: two attempts never both get DeliveryNew or DeliveryOpen.

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
	err := s.inTx(ctx, func(tx txn) error {
		out = out[:0]
		var now int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE($1::bigint, pec_now())`, s.nowArg()).Scan(&now); err != nil {
			return err
		}
		answered := map[store.DeliveryKey]store.DeliveryClaim{}
		for _, k := range keys {
			nk := store.DeliveryKey{Mailbox: store.NormMailbox(k.Mailbox), MessageID: k.MessageID}
			c, ok := answered[nk]
			if !ok {
				var err error
				if c, err = claimDelivery(ctx, tx, owner, now, int64(lease), nk); err != nil {
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
		return nil, temporary(err)
	}
	return out, nil
}

// claimDelivery answers for one normalised key. A record deleted between the insert and
// the read (released, purged) is claimed again from the start.
func claimDelivery(ctx context.Context, tx txn, owner string, now, lease int64, k store.DeliveryKey) (store.DeliveryClaim, error) {
	c := store.DeliveryClaim{DeliveryKey: k}
	for {
		tag, err := tx.Exec(ctx, `INSERT INTO deliveries (mailbox, message_id, owner, until, since) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT DO NOTHING`, k.Mailbox, k.MessageID, owner, now+lease, now)
		if err != nil {
			return c, err
		}
		if tag.RowsAffected() == 1 {
			c.State, c.Since = store.DeliveryNew, fromNS(now)
			return c, nil
		}
		var cur string
		var until, since int64
		var done bool
		err = tx.QueryRow(ctx, `SELECT owner, until, since, done, outcome FROM deliveries WHERE mailbox = $1 AND message_id = $2
			FOR UPDATE`, k.Mailbox, k.MessageID).Scan(&cur, &until, &since, &done, &c.Outcome)
		if isNoRows(err) {
			continue
		}
		if err != nil {
			return c, err
		}
		c.Since = fromNS(since)
		switch {
		case done:
			c.State = store.DeliveryDone
		case cur == owner || until <= now:
			_, err = tx.Exec(ctx, `UPDATE deliveries SET owner = $1, until = $2 WHERE mailbox = $3 AND message_id = $4`,
				owner, now+lease, k.Mailbox, k.MessageID)
			c.State, c.Outcome = store.DeliveryOpen, ""
		default:
			c.State, c.Owner, c.Outcome = store.DeliveryBusy, cur, ""
		}
		return c, err
	}
}

// PurgeDeliveries implements store.Deliveries.
func (s *Store) PurgeDeliveries(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM deliveries WHERE (done AND done_at < $1) OR (NOT done AND until < $1)`, ns(before))
	if err != nil {
		return 0, temporary(err)
	}
	return tag.RowsAffected(), nil
}
