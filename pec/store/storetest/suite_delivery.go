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

// The delivery point's records (store.Deliveries): one copy per mailbox however often
// Postfix retries and whoever dies in between.

var dkey = store.DeliveryKey{Mailbox: "bruno@pec-b.test", MessageID: "<20261120100000.mx1.abc@pec-a.test>"}

func claimKeys(t *testing.T, s store.Store, owner string, keys ...store.DeliveryKey) []store.DeliveryClaim {
	t.Helper()
	got, err := s.ClaimDeliveries(context.Background(), owner, time.Minute, keys)
	if err != nil {
		t.Fatalf("ClaimDeliveries(%s): %v", owner, err)
	}
	if len(got) != len(keys) {
		t.Fatalf("ClaimDeliveries answered %d claims for %d keys", len(got), len(keys))
	}
	return got
}

func claimOne(t *testing.T, s store.Store, owner string, k store.DeliveryKey) store.DeliveryClaim {
	t.Helper()
	return claimKeys(t, s, owner, k)[0]
}

func closing(k store.DeliveryKey, owner, outcome string) store.DeliveryMark {
	return store.DeliveryMark{DeliveryKey: k, Owner: owner, Done: true, Outcome: outcome, At: T0}
}

// testDeliveryClaimAndClose: a new key is claimed once; once closed with the receipt's
// event, every later claim, by any owner, reports it done with its outcome.
func testDeliveryClaimAndClose(t *testing.T, e *env) {
	s := e.db()
	if c := claimOne(t, s, "lmtpd/n1", dkey); c.State != store.DeliveryNew || !c.Since.Equal(T0) {
		t.Fatalf("first claim: %+v", c)
	}
	b := &store.Batch{Events: []store.Event{SampleEvent(1, T0)}}
	b.Mark(closing(dkey, "lmtpd/n1", "stored"))
	commit(t, s, b)
	e.clock.Add(time.Hour)
	for _, owner := range []string{"lmtpd/n1", "lmtpd/n2"} {
		if c := claimOne(t, s, owner, dkey); c.State != store.DeliveryDone || c.Outcome != "stored" || !c.Since.Equal(T0) {
			t.Errorf("claim by %s after close: %+v", owner, c)
		}
	}
	// A closed record is never reopened, not even by its owner's later marks.
	again := &store.Batch{}
	again.Mark(closing(dkey, "lmtpd/n1", "failed"))
	if err := s.Commit(context.Background(), again); !errors.Is(err, store.ErrConflict) {
		t.Errorf("closing a closed record: %v, want ErrConflict", err)
	}
	if c := claimOne(t, s, "lmtpd/n1", dkey); c.Outcome != "stored" {
		t.Errorf("outcome after a second close: %+v", c)
	}
}

// testDeliveryOpenRecords: an open record is taken back at once by its owner (a restart),
// by another owner only after the lease; the owner that lost it cannot close it.
func testDeliveryOpenRecords(t *testing.T, e *env) {
	s := e.db()
	claimOne(t, s, "lmtpd/n1", dkey)
	e.clock.Add(10 * time.Second)
	if c := claimOne(t, s, "lmtpd/n1", dkey); c.State != store.DeliveryOpen || !c.Since.Equal(T0) {
		t.Errorf("own open record: %+v, want open since T0", c)
	}
	// n1's lease now runs to T0+70s.
	e.clock.Set(T0.Add(69 * time.Second))
	if c := claimOne(t, s, "lmtpd/n2", dkey); c.State != store.DeliveryBusy || c.Owner != "lmtpd/n1" {
		t.Errorf("another owner's running lease: %+v, want busy held by lmtpd/n1", c)
	}
	e.clock.Set(T0.Add(71 * time.Second))
	if c := claimOne(t, s, "lmtpd/n2", dkey); c.State != store.DeliveryOpen {
		t.Errorf("another owner's expired lease: %+v, want open", c)
	}
	lost := &store.Batch{Events: []store.Event{SampleEvent(1, T0)}}
	lost.Send(outboxItem("<consegna.lost@pec-b.test>", "alice@pec-a.test"))
	lost.Mark(closing(dkey, "lmtpd/n1", "stored"))
	if err := s.Commit(context.Background(), lost); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("closing a record taken over: %v, want ErrConflict", err)
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("the refused batch wrote %d events", n)
	}
	if items, _ := s.ListOutbox(context.Background(), store.OutboxPending, 10); len(items) != 0 {
		t.Errorf("the refused batch queued %d outbox items", len(items))
	}
	b := &store.Batch{}
	b.Mark(closing(dkey, "lmtpd/n2", "stored"))
	commit(t, s, b)
}

// testDeliveryRelease: a released record is gone (the next attempt starts anew); a release
// by an owner that does not hold it changes nothing, and never fails the batch.
func testDeliveryRelease(t *testing.T, e *env) {
	s := e.db()
	claimOne(t, s, "lmtpd/n1", dkey)
	other := &store.Batch{Events: []store.Event{SampleEvent(1, T0)}}
	other.Mark(store.DeliveryMark{DeliveryKey: dkey, Owner: "lmtpd/n2"})
	commit(t, s, other)
	if c := claimOne(t, s, "lmtpd/n2", dkey); c.State != store.DeliveryBusy {
		t.Errorf("after a stranger's release: %+v, want busy", c)
	}
	b := &store.Batch{}
	b.Mark(store.DeliveryMark{DeliveryKey: dkey, Owner: "lmtpd/n1"})
	commit(t, s, b)
	e.clock.Add(time.Second)
	if c := claimOne(t, s, "lmtpd/n2", dkey); c.State != store.DeliveryNew || !c.Since.Equal(T0.Add(time.Second)) {
		t.Errorf("after release: %+v, want new", c)
	}
}

// testDeliveryKeys: mailboxes compare without case, Message-IDs exactly; a key listed twice
// gets one answer; one claim answers many keys in order.
func testDeliveryKeys(t *testing.T, e *env) {
	s := e.db()
	upper := store.DeliveryKey{Mailbox: "Bruno@PEC-B.test", MessageID: dkey.MessageID}
	otherID := store.DeliveryKey{Mailbox: dkey.Mailbox, MessageID: "<20261120100000.MX1.ABC@pec-a.test>"}
	bianca := store.DeliveryKey{Mailbox: "bianca@pec-b.test", MessageID: dkey.MessageID}
	got := claimKeys(t, s, "lmtpd/n1", dkey, upper, otherID, bianca)
	want := []store.DeliveryState{store.DeliveryNew, store.DeliveryNew, store.DeliveryNew, store.DeliveryNew}
	for i, c := range got {
		if c.State != want[i] {
			t.Errorf("claim %d (%v): %s, want %s", i, c.DeliveryKey, c.State, want[i])
		}
	}
	if got[1].DeliveryKey != upper {
		t.Errorf("claim 1 answers for %v, want the key as asked", got[1].DeliveryKey)
	}
	b := &store.Batch{}
	b.Mark(closing(upper, "lmtpd/n1", "stored"))
	commit(t, s, b)
	got = claimKeys(t, s, "lmtpd/n2", dkey, otherID, bianca)
	if got[0].State != store.DeliveryDone || got[1].State != store.DeliveryBusy || got[2].State != store.DeliveryBusy {
		t.Errorf("after closing the upper-case key: %s %s %s, want done busy busy", got[0].State, got[1].State, got[2].State)
	}
}

func testDeliveryPurge(t *testing.T, e *env) {
	s := e.db()
	old, open := dkey, store.DeliveryKey{Mailbox: "bianca@pec-b.test", MessageID: "<open@pec-a.test>"}
	recent := store.DeliveryKey{Mailbox: "bianca@pec-b.test", MessageID: "<recent@pec-a.test>"}
	claimKeys(t, s, "lmtpd/n1", old, open)
	b := &store.Batch{}
	b.Mark(closing(old, "lmtpd/n1", "stored"))
	commit(t, s, b)
	e.clock.Set(T0.Add(2 * time.Hour))
	claimOne(t, s, "lmtpd/n1", recent)
	b = &store.Batch{}
	b.Mark(store.DeliveryMark{DeliveryKey: recent, Owner: "lmtpd/n1", Done: true, Outcome: "stored", At: T0.Add(2 * time.Hour)})
	commit(t, s, b)
	n, err := s.PurgeDeliveries(context.Background(), T0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PurgeDeliveries = %d, %v; want 2 (the old closed record and the abandoned open one)", n, err)
	}
	got := claimKeys(t, s, "lmtpd/n2", old, recent)
	if got[0].State != store.DeliveryNew || got[1].State != store.DeliveryDone {
		t.Errorf("after purge: %s %s, want new done", got[0].State, got[1].State)
	}
}

func testDeliveryInvalid(t *testing.T, e *env) {
	s := e.db()
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"no owner": func() error { _, err := s.ClaimDeliveries(ctx, "", time.Minute, []store.DeliveryKey{dkey}); return err },
		"no lease": func() error { _, err := s.ClaimDeliveries(ctx, "o", 0, []store.DeliveryKey{dkey}); return err },
		"no mailbox": func() error {
			_, err := s.ClaimDeliveries(ctx, "o", time.Minute, []store.DeliveryKey{{MessageID: "<m@x>"}})
			return err
		},
		"no message id": func() error {
			_, err := s.ClaimDeliveries(ctx, "o", time.Minute, []store.DeliveryKey{{Mailbox: "a@b"}})
			return err
		},
		"mark no owner": func() error {
			return s.Commit(ctx, &store.Batch{Deliveries: []store.DeliveryMark{{DeliveryKey: dkey, Done: true, At: T0}}})
		},
		"mark no time": func() error {
			return s.Commit(ctx, &store.Batch{Deliveries: []store.DeliveryMark{{DeliveryKey: dkey, Owner: "o", Done: true}}})
		},
		"held with mark": func() error {
			h := HeldStep(1, T0)
			h.OnConfirm.Mark(closing(dkey, "o", "stored"))
			return s.Commit(ctx, &store.Batch{Holds: []store.Held{h}})
		},
	} {
		if err := call(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// testConcurrentDeliveryClaims: two processes (one per handle) take the same keys at the
// same moment, as Postfix delivering two queue files of one busta would: each key goes to
// exactly one of them.
func testConcurrentDeliveryClaims(t *testing.T, e *env) {
	s1, s2 := e.db(), e.db()
	const n = 60
	keys := make([]store.DeliveryKey, n)
	for i := range keys {
		keys[i] = store.DeliveryKey{Mailbox: fmt.Sprintf("u%d@pec-b.test", i%7), MessageID: fmt.Sprintf("<m%d@pec-a.test>", i)}
	}
	var mu sync.Mutex
	won := map[store.DeliveryKey][]string{}
	var errs []error
	run := func(s store.Store, owner string) func() {
		return func() {
			for _, k := range keys {
				c, err := s.ClaimDeliveries(context.Background(), owner, time.Minute, []store.DeliveryKey{k})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if c[0].State == store.DeliveryNew || c[0].State == store.DeliveryOpen {
					won[k] = append(won[k], owner)
				}
				mu.Unlock()
			}
		}
	}
	both(run(s1, "lmtpd/n1"), run(s2, "lmtpd/n2"))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, k := range keys {
		if len(won[k]) != 1 {
			t.Errorf("%v claimed by %v, want exactly one owner", k, won[k])
		}
	}
}
