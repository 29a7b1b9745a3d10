// Package storetest has the conformance suite every store.Store passes (Run) and an
// in-memory Store for fast engine tests (NewMemory).
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Memory is an in-memory store.Store. It follows the same rules as the SQLite store
// (append-only log, transition table, leases, held records) but keeps nothing across
// processes. Handle opens a second view of the same state, as a second process opening the
// same database would.
type Memory struct {
	*memState
	waker store.Waker // per handle: a Commit wakes the waiters of the handle it went through
}

// memState is what the handles of one Memory share.
type memState struct {
	mu         sync.Mutex
	now        func() time.Time
	events     []store.Event
	seq        int64
	tracking   map[[2]string]store.Tracking
	outbox     []*store.OutboxItem
	byMsgID    map[string]bool
	quarantine []store.QuarantineItem
	qid        int64
	seals      map[string]store.Seal
	leases     map[string]lease
	held       []*store.Held // in creation order
	heldByTok  map[string]*store.Held
	heldByKey  map[string]*store.Held
	deliveries map[store.DeliveryKey]*delivery
}

type lease struct {
	owner string
	until time.Time
}

// NewMemory returns an empty in-memory store on the system clock.
func NewMemory() *Memory { return NewMemoryClock(time.Now) }

// NewMemoryClock returns an empty in-memory store whose own clock (lease expiry, due
// outbox items, default creation times) is now.
func NewMemoryClock(now func() time.Time) *Memory {
	return &Memory{memState: &memState{
		now:       now,
		tracking:  map[[2]string]store.Tracking{},
		byMsgID:   map[string]bool{},
		seals:     map[string]store.Seal{},
		leases:    map[string]lease{},
		heldByTok: map[string]*store.Held{},
		heldByKey: map[string]*store.Held{},
	}}
}

// Handle returns another handle on the same state: it sees and changes the same records,
// but its OutboxWait is woken only by Commits through it, as with two processes.
func (m *Memory) Handle() *Memory { return &Memory{memState: m.memState} }

var _ store.Store = (*Memory)(nil)

func trackKey(id, rcpt string) [2]string { return [2]string{id, strings.ToLower(rcpt)} }

// Commit implements store.Store.
func (m *Memory) Commit(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	added, err := m.commitLocked(b)
	m.mu.Unlock()
	if added {
		m.waker.Wake()
	}
	return err
}

// commitLocked writes b all or nothing: every check comes before the first change. It
// reports whether outbox items were added.
// (Long on purpose: the in-memory mirror of the SQLite transaction, step for step, so both read alike.)
func (m *memState) commitLocked(b *store.Batch) (bool, error) {
	proven := m.provenHeld(b)
	if len(proven) > 0 {
		parts := make([]*store.Batch, 0, len(proven)+1)
		for _, h := range proven {
			parts = append(parts, &h.OnConfirm)
		}
		b = store.Merge(append(parts, b)...)
	}
	if err := m.checkHolds(b.Holds); err != nil {
		return false, err
	}
	if err := m.checkDeliveries(b.Deliveries); err != nil {
		return false, err
	}
	// Work on copies of what a transition changes, so a conflict leaves nothing behind.
	newRows := map[[2]string]store.Tracking{}
	get := func(k [2]string) (store.Tracking, bool) {
		if r, ok := newRows[k]; ok {
			return r, true
		}
		r, ok := m.tracking[k]
		return r, ok
	}
	for _, ins := range b.Inserts {
		k := trackKey(ins.Identificativo, ins.Recipient)
		if _, ok := get(k); !ok {
			r := ins.Row()
			r.Data = bytes.Clone(r.Data)
			newRows[k] = r
		}
	}
	for _, t := range b.Transitions {
		k := trackKey(t.Identificativo, t.Recipient)
		r, ok := get(k)
		if !ok {
			if t.Input.IsNotice() {
				return false, fmt.Errorf("%w: no tracking row for %s %s", store.ErrConflict, t.Identificativo, t.Recipient)
			}
			continue // a receipt about something we do not track: ignored
		}
		nr, out := store.Next(r, t.Input, t.At)
		if out == store.Conflict {
			return false, fmt.Errorf("%w: %s in state %s for %s %s", store.ErrConflict, t.Input, r.State, t.Identificativo, t.Recipient)
		}
		newRows[k] = nr
	}
	for k, r := range newRows {
		m.tracking[k] = r
	}
	m.applyDeliveries(b.Deliveries)
	for _, e := range b.Events {
		m.seq++
		e.Seq = m.seq
		m.events = append(m.events, cloneEvent(e))
	}
	added := false
	for _, o := range b.Outbox {
		if m.byMsgID[o.MessageID] {
			continue
		}
		m.byMsgID[o.MessageID] = true
		o.ID = int64(len(m.outbox) + 1)
		o.State = store.OutboxPending
		if o.Created.IsZero() {
			o.Created = m.now()
		}
		o.Attempts, o.NextAttempt, o.LastError = 0, time.Time{}, ""
		o.ClaimedBy, o.LeaseUntil, o.SentAt = "", time.Time{}, time.Time{}
		o.Raw = bytes.Clone(o.Raw)
		o.Rcpts = append([]string(nil), o.Rcpts...)
		m.outbox = append(m.outbox, &o)
		added = true
	}
	for _, q := range b.Quarantine {
		m.qid++
		q.ID = m.qid
		q.Raw = bytes.Clone(q.Raw)
		q.Recipients = append([]string(nil), q.Recipients...)
		m.quarantine = append(m.quarantine, q)
	}
	for i := range b.Holds {
		h := cloneHeld(&b.Holds[i])
		h.ReleasedAt, h.ExpiredAt, h.Late = time.Time{}, time.Time{}, false
		m.held = append(m.held, h)
		if h.Token != "" {
			m.heldByTok[h.Token] = h
		}
		if h.Key != "" {
			m.heldByKey[h.Key] = h
		}
	}
	for _, h := range proven {
		h.Release(m.now())
	}
	return added, nil
}

func cloneEvent(e store.Event) store.Event {
	e.Recipients = append([]store.Recipient(nil), e.Recipients...)
	e.About = append([]string(nil), e.About...)
	e.Generated = append([]string(nil), e.Generated...)
	return e
}

// ScanLog implements store.Store.
func (m *Memory) ScanLog(ctx context.Context, q store.Query, fn func(*store.Event) error) error {
	m.mu.Lock()
	var out []store.Event
	for i := range m.events {
		if q.Match(&m.events[i]) {
			out = append(out, cloneEvent(m.events[i]))
			if q.Limit > 0 && len(out) >= q.Limit {
				break
			}
		}
	}
	m.mu.Unlock()
	for i := range out {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(&out[i]); err != nil {
			return err
		}
	}
	return nil
}

// Tracking implements store.Store.
func (m *Memory) Tracking(ctx context.Context, id string) ([]store.Tracking, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Tracking
	for k, r := range m.tracking {
		if k[0] == id {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Recipient < out[j].Recipient })
	return out, nil
}

// PurgeTracking implements store.Store.
func (m *Memory) PurgeTracking(ctx context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for k, r := range m.tracking {
		if r.State.Terminal() && r.SentAt.Before(before) {
			delete(m.tracking, k)
			n++
		}
	}
	return n, nil
}

// DueTracking implements store.Store.
func (m *Memory) DueTracking(ctx context.Context, now time.Time, limit int) ([]store.Tracking, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// As the SQL stores: the rows of each kind whose deadline passed first, then in dispatch
	// order.
	var first, final []store.Tracking
	for _, r := range m.tracking {
		switch r.Due = r.DueAt(now); r.Due {
		case store.InputNotice12h:
			first = append(first, r)
		case store.InputNotice24h:
			final = append(final, r)
		}
	}
	dispatch := func(a, b *store.Tracking) bool {
		if !a.SentAt.Equal(b.SentAt) {
			return a.SentAt.Before(b.SentAt)
		}
		if a.Identificativo != b.Identificativo {
			return a.Identificativo < b.Identificativo
		}
		return a.Recipient < b.Recipient
	}
	// Ties of deadline in a fixed order (the SQL stores' index order is fixed too): the
	// sweep's paging leaves out the rows of the page in flight, which must come first again.
	earliest := func(rows []store.Tracking, deadline func(*store.Tracking) time.Time) []store.Tracking {
		sort.Slice(rows, func(i, j int) bool {
			if di, dj := deadline(&rows[i]), deadline(&rows[j]); !di.Equal(dj) {
				return di.Before(dj)
			}
			return dispatch(&rows[i], &rows[j])
		})
		if limit > 0 && len(rows) > limit {
			rows = rows[:limit]
		}
		return rows
	}
	out := append(earliest(first, func(r *store.Tracking) time.Time { return r.Due12 }),
		earliest(final, func(r *store.Tracking) time.Time { return r.Due22 })...)
	sort.Slice(out, func(i, j int) bool { return dispatch(&out[i], &out[j]) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// OpenTracking implements store.Store.
func (m *Memory) OpenTracking(ctx context.Context) (map[store.State]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[store.State]int64{}
	for _, r := range m.tracking {
		if !r.State.Terminal() {
			out[r.State]++
		}
	}
	return out, nil
}

// ClaimOutbox implements store.Store, on the store's clock.
func (m *Memory) ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error) {
	if c.Owner == "" || c.Lease <= 0 {
		return nil, fmt.Errorf("%w: claim needs an owner and a lease", store.ErrInvalid)
	}
	limit := c.Limit
	if limit <= 0 {
		limit = 100
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []store.OutboxItem
	for _, o := range m.outbox {
		if len(out) >= limit {
			break
		}
		if o.State != store.OutboxPending || o.NextAttempt.After(now) ||
			o.ClaimedBy != "" && o.ClaimedBy != c.Owner && o.LeaseUntil.After(now) {
			continue
		}
		o.ClaimedBy = c.Owner
		o.LeaseUntil = now.Add(c.Lease)
		cp := *o
		cp.Raw = bytes.Clone(o.Raw)
		cp.Rcpts = append([]string(nil), o.Rcpts...)
		out = append(out, cp)
	}
	return out, nil
}

// MarkOutbox implements store.Store.
func (m *Memory) MarkOutbox(ctx context.Context, id int64, owner string, mk store.Mark) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id < 1 || int(id) > len(m.outbox) {
		return store.ErrNotFound
	}
	o := m.outbox[id-1]
	switch mk.State {
	case store.OutboxSent:
		o.State = store.OutboxSent
		o.SentAt = mk.At
		o.Attempts++
		if mk.Error != "" {
			o.LastError = mk.Error
		}
	case store.OutboxPending, store.OutboxParked:
		if o.ClaimedBy != owner || o.State != store.OutboxPending {
			return store.ErrLeaseLost
		}
		if !mk.Release {
			o.State = mk.State
			o.Attempts++
			o.NextAttempt = mk.NextAttempt
			o.LastError = mk.Error
		}
	default:
		return fmt.Errorf("%w: mark state %q", store.ErrInvalid, mk.State)
	}
	o.ClaimedBy = ""
	o.LeaseUntil = time.Time{}
	return nil
}

// OutboxWait implements store.Store.
func (m *Memory) OutboxWait() <-chan struct{} { return m.waker.Wait() }

// ListOutbox implements store.Store.
func (m *Memory) ListOutbox(ctx context.Context, state store.OutboxState, limit int) ([]store.OutboxItem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.OutboxItem
	for _, o := range m.outbox {
		if o.State == state {
			cp := *o
			cp.Raw = nil
			out = append(out, cp)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
	}
	return out, nil
}

// Quarantined implements store.Store.
func (m *Memory) Quarantined(ctx context.Context, id string) ([]store.QuarantineItem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.QuarantineItem
	for _, q := range m.quarantine {
		if q.Identificativo == id {
			out = append(out, q)
		}
	}
	return out, nil
}

// PurgeSentOutbox implements store.Store.
func (m *Memory) PurgeSentOutbox(ctx context.Context, before time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, o := range m.outbox {
		if o.State == store.OutboxSent && o.SentAt.Before(before) && o.Raw != nil {
			o.Raw = nil
			n++
		}
	}
	return n, nil
}

// PurgeQuarantine implements store.Store.
func (m *Memory) PurgeQuarantine(ctx context.Context, now time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cut := store.RetentionCutoff(now)
	kept := m.quarantine[:0]
	var n int64
	for _, q := range m.quarantine {
		if q.Time.Before(cut) {
			n++
			continue
		}
		kept = append(kept, q)
	}
	m.quarantine = kept
	return n, nil
}

// PutSeal implements store.Store.
func (m *Memory) PutSeal(ctx context.Context, s store.Seal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seals[s.Day]; ok {
		return store.ErrExists
	}
	m.seals[s.Day] = s
	return nil
}

// GetSeal implements store.Store.
func (m *Memory) GetSeal(ctx context.Context, day string) (*store.Seal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seals[day]
	if !ok {
		return nil, store.ErrNotFound
	}
	return &s, nil
}

// LastSeal implements store.Store.
func (m *Memory) LastSeal(ctx context.Context, before string) (*store.Seal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best *store.Seal
	for d, s := range m.seals {
		if d < before && (best == nil || d > best.Day) {
			s := s
			best = &s
		}
	}
	if best == nil {
		return nil, store.ErrNotFound
	}
	return best, nil
}

// TryLease implements store.Store, on the store's clock.
func (m *Memory) TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if name == "" || owner == "" || ttl <= 0 {
		return false, fmt.Errorf("%w: lease needs a name, an owner and a duration", store.ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	l, ok := m.leases[name]
	if ok && l.owner != owner && l.until.After(now) {
		return false, nil
	}
	m.leases[name] = lease{owner: owner, until: now.Add(ttl)}
	return true, nil
}

// Close implements store.Store.
func (m *Memory) Close() error { return nil }

// provenHeld is the waiting steps that start the tracking of the transactions b's receipts
// prove queued (store.Transition.ProvesQueued): commitLocked releases them with b.
func (m *memState) provenHeld(b *store.Batch) []*store.Held {
	var out []*store.Held
	for _, id := range b.Proven() {
		for _, h := range m.held {
			if h.Identificativo == id && h.State == store.HeldWaiting && h.StartsTracking() {
				out = append(out, h)
			}
		}
	}
	return out
}
