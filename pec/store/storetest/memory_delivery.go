package storetest

import (
	"context"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// delivery is one record of store.Deliveries.
type delivery struct {
	owner   string
	until   time.Time // lease end while open
	since   time.Time
	done    bool
	outcome string
	doneAt  time.Time
}

func deliveryKey(k store.DeliveryKey) store.DeliveryKey {
	return store.DeliveryKey{Mailbox: store.NormMailbox(k.Mailbox), MessageID: k.MessageID}
}

// ClaimDeliveries implements store.Deliveries, on the store's clock.
func (m *Memory) ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, keys []store.DeliveryKey) ([]store.DeliveryClaim, error) {
	if owner == "" || lease <= 0 {
		return nil, fmt.Errorf("%w: delivery claim needs an owner and a lease", store.ErrInvalid)
	}
	for _, k := range keys {
		if err := validKey(k); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.deliveries == nil {
		m.deliveries = map[store.DeliveryKey]*delivery{}
	}
	now := m.now()
	out := make([]store.DeliveryClaim, 0, len(keys))
	answered := map[store.DeliveryKey]store.DeliveryClaim{}
	for _, k := range keys {
		nk := deliveryKey(k)
		if c, ok := answered[nk]; ok {
			c.DeliveryKey = k
			out = append(out, c)
			continue
		}
		c := store.DeliveryClaim{DeliveryKey: k}
		d := m.deliveries[nk]
		switch {
		case d == nil:
			m.deliveries[nk] = &delivery{owner: owner, until: now.Add(lease), since: now}
			c.State, c.Since = store.DeliveryNew, now
		case d.done:
			c.State, c.Outcome, c.Since = store.DeliveryDone, d.outcome, d.since
		case d.owner == owner || !d.until.After(now):
			d.owner, d.until = owner, now.Add(lease)
			c.State, c.Since = store.DeliveryOpen, d.since
		default:
			c.State, c.Since, c.Owner = store.DeliveryBusy, d.since, d.owner
		}
		answered[nk] = c
		out = append(out, c)
	}
	return out, nil
}

func validKey(k store.DeliveryKey) error {
	if store.NormMailbox(k.Mailbox) == "" || k.MessageID == "" {
		return fmt.Errorf("%w: delivery key needs a mailbox and a Message-ID", store.ErrInvalid)
	}
	return nil
}

// checkDeliveries refuses a batch whose closing marks find their record not open under
// their owner.
func (m *memState) checkDeliveries(marks []store.DeliveryMark) error {
	for _, d := range marks {
		if !d.Done {
			continue
		}
		r := m.deliveries[deliveryKey(d.DeliveryKey)]
		if r == nil || r.done || r.owner != d.Owner {
			return fmt.Errorf("%w: delivery record of %s %s is not open for %s", store.ErrConflict, d.Mailbox, d.MessageID, d.Owner)
		}
	}
	return nil
}

// applyDeliveries writes marks already checked by checkDeliveries.
func (m *memState) applyDeliveries(marks []store.DeliveryMark) {
	for _, d := range marks {
		k := deliveryKey(d.DeliveryKey)
		r := m.deliveries[k]
		switch {
		case r == nil || r.done || r.owner != d.Owner:
		case d.Done:
			r.done, r.outcome, r.doneAt = true, d.Outcome, d.At
		default:
			delete(m.deliveries, k)
		}
	}
}

// PurgeDeliveries implements store.Deliveries.
func (m *Memory) PurgeDeliveries(ctx context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, d := range m.deliveries {
		if d.done && d.doneAt.Before(before) || !d.done && d.until.Before(before) {
			delete(m.deliveries, k)
			n++
		}
	}
	return n, nil
}
