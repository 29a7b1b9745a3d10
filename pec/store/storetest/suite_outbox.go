package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

func claim(t *testing.T, s store.Store, owner string, limit int) []store.OutboxItem {
	t.Helper()
	items, err := s.ClaimOutbox(context.Background(), store.Claim{Owner: owner, Lease: time.Minute, Limit: limit})
	if err != nil {
		t.Fatalf("ClaimOutbox: %v", err)
	}
	return items
}

// claimAt claims with the store's clock set to at.
func (e *env) claimAt(t *testing.T, s store.Store, owner string, at time.Time, limit int) []store.OutboxItem {
	t.Helper()
	e.clock.Set(at)
	return claim(t, s, owner, limit)
}

func ids(items []store.OutboxItem) string {
	out := ""
	for _, o := range items {
		out += o.MessageID + " "
	}
	return out
}

// (Long on purpose: the life of one outbox item, step by step.)
func testOutbox(t *testing.T, e *env) {
	ctx := context.Background()
	s := e.db()
	claim := func(t *testing.T, s store.Store, owner string, at time.Time, limit int) []store.OutboxItem {
		t.Helper()
		return e.claimAt(t, s, owner, at, limit)
	}
	b := &store.Batch{}
	for i := 1; i <= 3; i++ {
		b.Send(outboxItem(fmt.Sprintf("<m%d@pec-a.test>", i), "alice@pec-a.test"))
	}
	commit(t, s, b)

	a := claim(t, s, "A", T0, 2)
	if ids(a) != "<m1@pec-a.test> <m2@pec-a.test> " {
		t.Fatalf("A claimed %q", ids(a))
	}
	want := outboxItem("<m1@pec-a.test>", "alice@pec-a.test")
	if !bytes.Equal(a[0].Raw, want.Raw) || a[0].From != want.From || fmt.Sprint(a[0].Rcpts) != fmt.Sprint(want.Rcpts) ||
		a[0].Kind != want.Kind || a[0].Identificativo != want.Identificativo || a[0].ID == 0 {
		t.Errorf("claimed item: %+v", a[0])
	}
	if got := claim(t, s, "B", T0.Add(time.Second), 10); ids(got) != "<m3@pec-a.test> " {
		t.Fatalf("B claimed %q while A's lease holds", ids(got))
	}
	if err := s.MarkOutbox(ctx, a[0].ID, "A", store.Mark{State: store.OutboxSent, At: T0.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	// A dies holding m2; after the lease B takes it over (and m3, whose lease also ran out).
	got := claim(t, s, "B", T0.Add(2*time.Minute), 10)
	if ids(got) != "<m2@pec-a.test> <m3@pec-a.test> " {
		t.Fatalf("B after lease expiry claimed %q", ids(got))
	}
	if err := s.MarkOutbox(ctx, a[1].ID, "A", store.Mark{State: store.OutboxPending, NextAttempt: T0.Add(time.Hour), Error: "x"}); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("retry by the old owner: %v, want ErrLeaseLost", err)
	}
	m2, m3 := got[0], got[1]
	if err := s.MarkOutbox(ctx, m2.ID, "B", store.Mark{State: store.OutboxPending, NextAttempt: T0.Add(time.Hour), Error: "451 4.3.0 try later"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkOutbox(ctx, m3.ID, "B", store.Mark{State: store.OutboxParked, At: T0.Add(2 * time.Minute), Error: "550 5.1.1 no such user"}); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, "C", T0.Add(59*time.Minute), 10); len(got) != 0 {
		t.Errorf("claimed before next attempt: %q", ids(got))
	}
	got = claim(t, s, "C", T0.Add(time.Hour), 10)
	if ids(got) != "<m2@pec-a.test> " || got[0].Attempts != 1 || got[0].LastError != "451 4.3.0 try later" {
		t.Fatalf("retry claim: %+v", got)
	}
	// Releasing an unattempted claim makes the item claimable at once, attempts unchanged.
	if err := s.MarkOutbox(ctx, got[0].ID, "C", store.Mark{State: store.OutboxPending, Release: true}); err != nil {
		t.Fatal(err)
	}
	got = claim(t, s, "D", T0.Add(time.Hour), 10)
	if ids(got) != "<m2@pec-a.test> " || got[0].Attempts != 1 || got[0].LastError != "451 4.3.0 try later" || got[0].ClaimedBy != "D" {
		t.Fatalf("claim after release: %+v", got)
	}
	parked, err := s.ListOutbox(ctx, store.OutboxParked, 0)
	if err != nil || len(parked) != 1 || parked[0].MessageID != "<m3@pec-a.test>" || parked[0].LastError != "550 5.1.1 no such user" {
		t.Errorf("parked: %+v %v", parked, err)
	}
	sent, _ := s.ListOutbox(ctx, store.OutboxSent, 0)
	if len(sent) != 1 || sent[0].MessageID != "<m1@pec-a.test>" || !sent[0].SentAt.Equal(T0.Add(2*time.Second)) || sent[0].Attempts != 1 {
		t.Errorf("sent: %+v", sent)
	}
	if err := s.MarkOutbox(ctx, 999, "C", store.Mark{State: store.OutboxSent, At: T0}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("mark unknown item: %v", err)
	}
	if _, err := s.ClaimOutbox(ctx, store.Claim{Lease: time.Minute}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("claim without owner: %v", err)
	}
	if _, err := s.ClaimOutbox(ctx, store.Claim{Owner: "A"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("claim without lease: %v", err)
	}
}

// testOutboxOwnLeases: an owner names one drainer across its restarts. Its own unexpired
// leases are claimed again at once (a restarted drainer resumes without waiting); another
// owner's are not; the lease returned is counted from the store's clock.
func testOutboxOwnLeases(t *testing.T, e *env) {
	s := e.db()
	b := &store.Batch{}
	for i := 1; i <= 3; i++ {
		b.Send(outboxItem(fmt.Sprintf("<own%d@pec-a.test>", i), "alice@pec-a.test"))
	}
	commit(t, s, b)
	a := e.claimAt(t, s, "node-1", T0, 2)
	if ids(a) != "<own1@pec-a.test> <own2@pec-a.test> " || !a[0].LeaseUntil.Equal(T0.Add(time.Minute)) || a[0].ClaimedBy != "node-1" {
		t.Fatalf("first claim: %q, lease until %v", ids(a), a[0].LeaseUntil)
	}
	if got := e.claimAt(t, s, "node-2", T0.Add(time.Second), 1); ids(got) != "<own3@pec-a.test> " {
		t.Fatalf("node-2 claimed %q", ids(got))
	}
	// node-1 restarts 10 s later: it gets its two items back at once, not node-2's.
	got := e.claimAt(t, s, "node-1", T0.Add(10*time.Second), 10)
	if ids(got) != "<own1@pec-a.test> <own2@pec-a.test> " || !got[0].LeaseUntil.Equal(T0.Add(70*time.Second)) {
		t.Fatalf("restarted owner claimed %q, lease until %v", ids(got), got[0].LeaseUntil)
	}
	if got := e.claimAt(t, s, "node-2", T0.Add(69*time.Second), 10); ids(got) != "<own3@pec-a.test> " {
		t.Fatalf("node-2 took a renewed lease of node-1: %q", ids(got))
	}
}

func testOutboxDuplicate(t *testing.T, s store.Store) {
	first := outboxItem("<dup@pec-a.test>", "alice@pec-a.test")
	second := first
	second.Raw = []byte("other bytes")
	commit(t, s, &store.Batch{Outbox: []store.OutboxItem{first}})
	commit(t, s, &store.Batch{Outbox: []store.OutboxItem{second}})
	got := claim(t, s, "A", 10)
	if len(got) != 1 || !bytes.Equal(got[0].Raw, first.Raw) {
		t.Fatalf("duplicate Message-ID: %d items, first kept: %v", len(got), len(got) == 1 && bytes.Equal(got[0].Raw, first.Raw))
	}
}

func testOutboxWake(t *testing.T, s store.Store) {
	ch := s.OutboxWait()
	commit(t, s, &store.Batch{Events: []store.Event{SampleEvent(1, T0)}})
	select {
	case <-ch:
		t.Fatal("woken by a commit without outbox items")
	default:
	}
	commit(t, s, &store.Batch{Outbox: []store.OutboxItem{outboxItem("<w@pec-a.test>", "a@pec-a.test")}})
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken by a commit with outbox items")
	}
}

// testOutboxPurgeSent: PurgeSentOutbox lets go of the bytes of items sent before the cut
// only, once; the items stay listed, and a replayed Commit of a purged item's Message-ID
// still adds nothing (no second receipt); pending items keep their bytes.
func testOutboxPurgeSent(t *testing.T, e *env) {
	ctx := context.Background()
	s := e.db()
	b := &store.Batch{}
	for _, id := range []string{"<p1@pec-a.test>", "<p2@pec-a.test>", "<p3@pec-a.test>"} {
		b.Send(outboxItem(id, "alice@pec-a.test"))
	}
	commit(t, s, b)
	got := e.claimAt(t, s, "A", T0, 3)
	if len(got) != 3 {
		t.Fatalf("claimed %q", ids(got))
	}
	for i, at := range []time.Time{T0, T0.Add(2 * time.Hour)} {
		if err := s.MarkOutbox(ctx, got[i].ID, "A", store.Mark{State: store.OutboxSent, At: at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkOutbox(ctx, got[2].ID, "A", store.Mark{State: store.OutboxParked, Error: "550 no"}); err != nil {
		t.Fatal(err)
	}
	commit(t, s, &store.Batch{Outbox: []store.OutboxItem{outboxItem("<p4@pec-a.test>", "alice@pec-a.test")}})

	for _, step := range []struct {
		before time.Time
		want   int64
	}{{T0.Add(time.Hour), 1}, {T0.Add(time.Hour), 0}, {T0.Add(24 * time.Hour), 1}, {T0.Add(48 * time.Hour), 0}} {
		n, err := s.PurgeSentOutbox(ctx, step.before)
		if err != nil || n != step.want {
			t.Fatalf("PurgeSentOutbox(%v) = %d, %v; want %d", step.before.Sub(T0), n, err, step.want)
		}
	}
	if sent, err := s.ListOutbox(ctx, store.OutboxSent, 0); err != nil || len(sent) != 2 {
		t.Fatalf("sent items after the purge: %q, %v", ids(sent), err)
	}
	if parked, err := s.ListOutbox(ctx, store.OutboxParked, 0); err != nil || len(parked) != 1 {
		t.Fatalf("parked items after the purge: %q, %v", ids(parked), err)
	}
	// A replay of the first item (a retried step that commits its receipt again) adds nothing.
	commit(t, s, &store.Batch{Outbox: []store.OutboxItem{outboxItem("<p1@pec-a.test>", "alice@pec-a.test")}})
	again := e.claimAt(t, s, "B", T0.Add(48*time.Hour), 10)
	want := outboxItem("<p4@pec-a.test>", "alice@pec-a.test")
	if len(again) != 1 || again[0].MessageID != want.MessageID || !bytes.Equal(again[0].Raw, want.Raw) {
		t.Fatalf("claimable after the purge and a replay: %q (want only the pending item, whole)", ids(again))
	}
}
