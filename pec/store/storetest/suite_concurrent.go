package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Two handles on one database stand for two processes or nodes. What one writes the other
// reads, and what they do at the same moment ends as if done one after the other.

// both runs a and b at the same moment (as near as goroutines allow) and waits for them.
func both(a, b func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, f := range []func(){a, b} {
		wg.Go(func() { <-start; f() })
	}
	close(start)
	wg.Wait()
}

func testTwoHandlesShare(t *testing.T, e *env) {
	ctx := context.Background()
	s1, s2 := e.db(), e.db()
	h := HeldStep(1, T0)
	b := &store.Batch{Events: []store.Event{SampleEvent(1, T0)}, Holds: []store.Held{h}}
	b.Send(outboxItem("<shared@pec-a.test>", "alice@pec-a.test"))
	b.Track(store.TrackInsert{Identificativo: trID, Recipient: trRcpt, SentAt: T0})
	commit(t, s1, b)
	if n := countEvents(t, s2); n != 1 {
		t.Errorf("second handle sees %d events", n)
	}
	if r := row(t, s2, trID, trRcpt); r.State != store.StateSent {
		t.Errorf("second handle's tracking row: %+v", r)
	}
	if _, err := s2.LookupHeld(ctx, h.Key, T0); err != nil {
		t.Errorf("second handle's LookupHeld: %v", err)
	}
	if got, err := s2.Confirm(ctx, h.Token, T0); err != nil || got.State != store.HeldReleased {
		t.Errorf("Confirm through the second handle: %s %v", brief(got), err)
	}
	if got, _ := s1.LookupHeld(ctx, h.Key, T0); got == nil || got.State != store.HeldReleased {
		t.Errorf("first handle after the second confirmed: %s", brief(got))
	}
	if items := claim(t, s2, "B", 10); len(items) != 2 {
		t.Errorf("second handle claimed %q", ids(items))
	}
	if items := claim(t, s1, "A", 10); len(items) != 0 {
		t.Errorf("first handle claimed items leased through the second: %q", ids(items))
	}
}

// testConcurrentClaims: two drainers, one per handle, claim and send at the same time;
// every item is claimed by exactly one of them, once.
func testConcurrentClaims(t *testing.T, e *env) {
	ctx := context.Background()
	s1, s2 := e.db(), e.db()
	const n = 120
	b := &store.Batch{}
	for i := 0; i < n; i++ {
		b.Send(outboxItem(fmt.Sprintf("<c%d@pec-a.test>", i), "alice@pec-a.test"))
	}
	commit(t, s1, b)
	var mu sync.Mutex
	by := map[string]string{} // MessageID -> owner
	var errs []error
	drain := func(s store.Store, owner string) func() {
		return func() {
			for {
				items, err := s.ClaimOutbox(ctx, store.Claim{Owner: owner, Lease: time.Minute, Limit: 3})
				if err != nil || len(items) == 0 {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				time.Sleep(time.Millisecond) // hold the claim while the other drainer claims
				for _, it := range items {
					mu.Lock()
					if prev, dup := by[it.MessageID]; dup {
						errs = append(errs, fmt.Errorf("%s claimed by %s and %s", it.MessageID, prev, owner))
					}
					by[it.MessageID] = owner
					mu.Unlock()
					if err := s.MarkOutbox(ctx, it.ID, owner, store.Mark{State: store.OutboxSent, At: T0}); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}
		}
	}
	both(drain(s1, "A"), drain(s2, "B"))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(by) != n {
		t.Errorf("%d items claimed, want %d", len(by), n)
	}
	sent, err := s2.ListOutbox(ctx, store.OutboxSent, 0)
	if err != nil || len(sent) != n {
		t.Errorf("%d sent (%v), want %d", len(sent), err, n)
	}
	for _, o := range sent {
		if o.Attempts != 1 {
			t.Errorf("%s: %d attempts", o.MessageID, o.Attempts)
		}
	}
}

// tableStep looks (from, in) up in TransitionTable.
func tableStep(t *testing.T, from store.State, in store.Input) (store.State, store.Outcome) {
	for _, tc := range TransitionTable {
		if tc.From == from && tc.In == in {
			return tc.To, tc.Out
		}
	}
	t.Fatalf("no table entry for %s + %s", from, in)
	return "", ""
}

// serial is the outcome of applying inputs one after the other from state from: the final
// state, the time stamped for each input (zero: none) and whether each one conflicted.
type serial struct {
	state    store.State
	stamps   [2]time.Time
	conflict [2]bool
}

func serially(t *testing.T, from store.State, ins [2]store.Input, at [2]time.Time, order [2]int) serial {
	var out serial
	out.state = from
	for _, i := range order {
		to, res := tableStep(t, out.state, ins[i])
		out.state = to
		switch res {
		case store.Applied, store.Recorded:
			if out.stamps[i].IsZero() {
				out.stamps[i] = at[i]
			}
		case store.Conflict:
			out.conflict[i] = true
		}
	}
	return out
}

// testConcurrentTransitions: two handles apply two inputs to one tracking row at the same
// moment. The row ends as one of the two serial orders of the transition table says, with
// both inputs accounted for (no lost update), and each Commit's error agrees with that order.
func testConcurrentTransitions(t *testing.T, e *env) {
	s1, s2 := e.db(), e.db()
	cases := []struct {
		from store.State
		ins  [2]store.Input
	}{
		{store.StateSent, [2]store.Input{store.InputPresaInCarico, store.InputNotice12h}},
		{store.StateSent, [2]store.Input{store.InputConsegna, store.InputPresaInCarico}},
		{store.StateSent, [2]store.Input{store.InputConsegna, store.InputMancataConsegna}},
		{store.StateTaken, [2]store.Input{store.InputConsegna, store.InputNotice24h}},
		{store.StateNotified12, [2]store.Input{store.InputPresaInCarico, store.InputConsegna}},
	}
	const rounds = 8
	for ci, tc := range cases {
		for r := 0; r < rounds; r++ {
			id := fmt.Sprintf("opec.race.%d.%d@pec-a.test", ci, r)
			track(t, s1, id, trRcpt, T0)
			at0 := T0
			for _, in := range reach[tc.from] {
				at0 = at0.Add(13 * time.Hour)
				if err := apply(s1, id, trRcpt, in, at0); err != nil {
					t.Fatal(err)
				}
			}
			at := [2]time.Time{at0.Add(time.Hour), at0.Add(2 * time.Hour)}
			var errs [2]error
			both(func() { errs[0] = apply(s1, id, trRcpt, tc.ins[0], at[0]) },
				func() { errs[1] = apply(s2, id, trRcpt, tc.ins[1], at[1]) })
			got := row(t, s2, id, trRcpt)
			obs := serial{state: got.State, stamps: [2]time.Time{stampOf(got, tc.ins[0]), stampOf(got, tc.ins[1])}}
			for i, err := range errs {
				if err != nil && !errors.Is(err, store.ErrConflict) {
					t.Fatalf("%s: %s: %v", id, tc.ins[i], err)
				}
				obs.conflict[i] = err != nil
			}
			ab := serially(t, tc.from, tc.ins, at, [2]int{0, 1})
			ba := serially(t, tc.from, tc.ins, at, [2]int{1, 0})
			eq := func(a, b serial) bool {
				return a.state == b.state && a.conflict == b.conflict && a.stamps[0].Equal(b.stamps[0]) && a.stamps[1].Equal(b.stamps[1])
			}
			if !eq(obs, ab) && !eq(obs, ba) {
				t.Errorf("%s from %s, %s and %s at once: got %+v; serial orders give %+v or %+v",
					id, tc.from, tc.ins[0], tc.ins[1], obs, ab, ba)
			}
		}
	}
}

// testConcurrentLeases: two handles ask for the same free lease at once: exactly one gets it.
func testConcurrentLeases(t *testing.T, e *env) {
	ctx := context.Background()
	s1, s2 := e.db(), e.db()
	for i := 0; i < 40; i++ {
		name := fmt.Sprintf("job-%d", i)
		var got [2]bool
		var errs [2]error
		both(func() { got[0], errs[0] = s1.TryLease(ctx, name, "node-1", time.Minute) },
			func() { got[1], errs[1] = s2.TryLease(ctx, name, "node-2", time.Minute) })
		if err := errors.Join(errs[0], errs[1]); err != nil {
			t.Fatal(err)
		}
		if got[0] == got[1] {
			t.Fatalf("%s: node-1 %v, node-2 %v: want exactly one holder", name, got[0], got[1])
		}
		holder, other := "node-1", s2
		if got[1] {
			holder, other = "node-2", s1
		}
		if ok, _ := other.TryLease(ctx, name, "node-3", time.Minute); ok {
			t.Fatalf("%s: a third owner took the lease %s holds", name, holder)
		}
	}
}

// testConcurrentConfirm: Postfix's confirmation arrives twice at once, through two handles:
// exactly one commits OnConfirm; both answer with the released record.
func testConcurrentConfirm(t *testing.T, e *env) {
	ctx := context.Background()
	s1, s2 := e.db(), e.db()
	const n = 20
	var hs []store.Held
	for i := 0; i < n; i++ {
		hs = append(hs, HeldStep(i, T0))
	}
	hold(t, s1, hs...)
	at := [2]time.Time{T0.Add(time.Second), T0.Add(2 * time.Second)}
	for _, h := range hs {
		var got [2]*store.Held
		var errs [2]error
		both(func() { got[0], errs[0] = s1.Confirm(ctx, h.Token, at[0]) },
			func() { got[1], errs[1] = s2.Confirm(ctx, h.Token, at[1]) })
		if err := errors.Join(errs[0], errs[1]); err != nil {
			t.Fatal(err)
		}
		for i, g := range got {
			if g.State != store.HeldReleased || g.Late || !g.ReleasedAt.Equal(got[0].ReleasedAt) ||
				!g.ReleasedAt.Equal(at[0]) && !g.ReleasedAt.Equal(at[1]) {
				t.Errorf("%s, call %d: %s late=%v released at %v", h.Identificativo, i, g.State, g.Late, g.ReleasedAt)
			}
		}
		if k := kindCount(t, s1, h.Identificativo, store.KindAccettazione); k != 1 {
			t.Errorf("%s: OnConfirm committed %d times", h.Identificativo, k)
		}
	}
	if items := claim(t, s2, "x", 0); len(items) != n {
		t.Errorf("%d receipts queued, want %d", len(items), n)
	}
}

// testConcurrentConfirmExpire: confirmations through one handle race two expiry sweeps,
// one per handle. Each record's OnConfirm is committed once; its OnExpiry once if the
// expiry came first (then the release is Late), never otherwise.
// (Long on purpose: a race set up, run and judged in one place.)
func testConcurrentConfirmExpire(t *testing.T, e *env) {
	ctx := context.Background()
	s1, s2 := e.db(), e.db()
	const n = 30
	var hs []store.Held
	for i := 0; i < n; i++ {
		hs = append(hs, HeldStep(i, T0))
	}
	hold(t, s1, hs...)
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	expired := [2]int{}
	sweep := func(s store.Store, i int) func() {
		return func() {
			for {
				k, err := s.ExpireHeld(ctx, T0.Add(time.Hour), 2)
				if err != nil {
					fail(err)
				}
				if k == 0 {
					return
				}
				expired[i] += k
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, h := range hs {
			if _, err := s1.Confirm(ctx, h.Token, T0.Add(time.Minute)); err != nil {
				fail(err)
			}
		}
	})
	both(sweep(s1, 0), sweep(s2, 1))
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	late := 0
	for _, h := range hs {
		got, err := s2.LookupHeld(ctx, h.Key, T0)
		if err != nil {
			t.Fatal(err)
		}
		acc := kindCount(t, s2, h.Identificativo, store.KindAccettazione)
		exp := kindCount(t, s2, h.Identificativo, store.KindNonAccettazione)
		wantExp := 0
		if got.Late {
			wantExp = 1
			late++
		}
		if got.State != store.HeldReleased || acc != 1 || exp != wantExp || got.Late == got.ExpiredAt.IsZero() {
			t.Errorf("%s: %s late=%v expired at %v; %d accettazione, %d expiry events", h.Identificativo,
				got.State, got.Late, got.ExpiredAt, acc, exp)
		}
	}
	if expired[0]+expired[1] != late {
		t.Errorf("sweeps report %d expired, records say %d", expired[0]+expired[1], late)
	}
}
