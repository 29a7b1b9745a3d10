package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// checkHolds refuses held records whose Key or Token is taken, by a stored record or by
// another record of the same batch.
func (m *memState) checkHolds(holds []store.Held) error {
	toks, keys := map[string]bool{}, map[string]bool{}
	for _, h := range holds {
		if h.Token != "" {
			if m.heldByTok[h.Token] != nil || toks[h.Token] {
				return fmt.Errorf("%w: held token", store.ErrExists)
			}
			toks[h.Token] = true
		}
		if h.Key != "" {
			if m.heldByKey[h.Key] != nil || keys[h.Key] {
				return fmt.Errorf("%w: held key %s", store.ErrExists, h.Key)
			}
			keys[h.Key] = true
		}
	}
	return nil
}

// cloneHeld deep-copies h, so that neither the caller nor the store sees the other's later
// changes.
func cloneHeld(h *store.Held) *store.Held {
	c := *h
	c.Outcome = bytes.Clone(h.Outcome)
	c.OnConfirm = cloneBatch(&h.OnConfirm)
	c.OnExpiry = cloneBatch(&h.OnExpiry)
	return &c
}

func cloneBatch(b *store.Batch) store.Batch {
	var c store.Batch
	for _, e := range b.Events {
		c.Events = append(c.Events, cloneEvent(e))
	}
	for _, t := range b.Inserts {
		t.Data = bytes.Clone(t.Data)
		c.Inserts = append(c.Inserts, t)
	}
	c.Transitions = append(c.Transitions, b.Transitions...)
	for _, o := range b.Outbox {
		o.Raw = bytes.Clone(o.Raw)
		o.Rcpts = append([]string(nil), o.Rcpts...)
		c.Outbox = append(c.Outbox, o)
	}
	for _, q := range b.Quarantine {
		q.Raw = bytes.Clone(q.Raw)
		q.Recipients = append([]string(nil), q.Recipients...)
		c.Quarantine = append(c.Quarantine, q)
	}
	return c
}

// LookupHeld implements store.Holder.
func (m *Memory) LookupHeld(ctx context.Context, key string, since time.Time) (*store.Held, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.heldByKey[key]
	if key == "" || h == nil || h.Created.Before(since) {
		return nil, store.ErrNotFound
	}
	return cloneHeld(h), nil
}

// Confirm implements store.Holder.
func (m *Memory) Confirm(ctx context.Context, token string, at time.Time) (*store.Held, error) {
	m.mu.Lock()
	h := m.heldByTok[token]
	if token == "" || h == nil {
		m.mu.Unlock()
		return nil, store.ErrNotFound
	}
	added := false
	if h.State == store.HeldWaiting || h.State == store.HeldExpired {
		var err error
		if added, err = m.commitLocked(&h.OnConfirm); err != nil {
			m.mu.Unlock()
			return nil, err
		}
		h.Release(at)
	}
	out := cloneHeld(h)
	m.mu.Unlock()
	if added {
		m.waker.Wake()
	}
	return out, nil
}

// ExpireHeld implements store.Holder.
func (m *Memory) ExpireHeld(ctx context.Context, now time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	m.mu.Lock()
	var due []*store.Held
	for _, h := range m.held {
		if h.State == store.HeldWaiting && !h.Expires.After(now) {
			due = append(due, h)
		}
	}
	sort.SliceStable(due, func(i, j int) bool { return due[i].Expires.Before(due[j].Expires) })
	if len(due) > limit {
		due = due[:limit]
	}
	n, wake := 0, false
	var errs []error
	for _, h := range due {
		added, err := m.commitLocked(&h.OnExpiry)
		if err != nil {
			errs = append(errs, fmt.Errorf("held step %s: %w", h.Identificativo, err))
			continue
		}
		h.State, h.ExpiredAt = store.HeldExpired, now
		n++
		wake = wake || added
	}
	m.mu.Unlock()
	if wake {
		m.waker.Wake()
	}
	return n, errors.Join(errs...)
}

// PurgeHeld implements store.Holder.
func (m *Memory) PurgeHeld(ctx context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	kept := m.held[:0]
	for _, h := range m.held {
		if h.State != store.HeldWaiting && h.Created.Before(before) {
			delete(m.heldByTok, h.Token)
			delete(m.heldByKey, h.Key)
			n++
			continue
		}
		kept = append(kept, h)
	}
	clear(m.held[len(kept):])
	m.held = kept
	return n, nil
}
