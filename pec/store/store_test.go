package store

import (
	"errors"
	"testing"
	"time"
)

func TestRetentionCutoff(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	if got := RetentionCutoff(now); !got.Equal(time.Date(2024, 5, 20, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("cutoff %v", got)
	}
}

func TestKindsAreDistinctAndValid(t *testing.T) {
	seen := map[EventKind]bool{}
	for _, k := range Kinds {
		if seen[k] || !k.Valid() {
			t.Errorf("kind %q duplicate or invalid", k)
		}
		seen[k] = true
	}
	if EventKind("consegna").Valid() {
		t.Error("unknown kind valid")
	}
}

func TestWaker(t *testing.T) {
	var w Waker
	a, b := w.Wait(), w.Wait()
	w.Wake()
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("waiter not woken")
		}
	}
	c := w.Wait()
	select {
	case <-c:
		t.Fatal("new waiter woken by an old wake")
	default:
	}
}

func TestNextNeverChangesStateOnConflict(t *testing.T) {
	r := TrackInsert{Identificativo: "i", Recipient: "r", SentAt: time.Unix(0, 0)}.Row()
	r.State = StateDelivered
	nr, out := Next(r, InputNotice24h, time.Unix(100, 0))
	if out != Conflict || nr.State != StateDelivered || !nr.Notice24At.IsZero() {
		t.Errorf("%v %+v", out, nr)
	}
}

func TestValidate(t *testing.T) {
	ok := &Batch{Events: []Event{{Time: time.Now(), Identificativo: "x@y", Kind: KindAccettazione}}}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
	bad := &Batch{Quarantine: []QuarantineItem{{Time: time.Now()}}}
	if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("quarantine without bytes: %v", err)
	}
}
