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

func TestDeadlines(t *testing.T) {
	sent := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	r := TrackInsert{Identificativo: "i", Recipient: "r", SentAt: sent}.Row()
	if !r.Due12.Equal(sent.Add(12*time.Hour)) || !r.Due22.Equal(sent.Add(22*time.Hour)) || !r.Due24.Equal(sent.Add(24*time.Hour)) {
		t.Errorf("default deadlines: %v %v %v", r.Due12, r.Due22, r.Due24)
	}
	short := Deadlines{First: 2 * time.Second, FinalFrom: 3 * time.Second, Final: 4 * time.Second}
	r = TrackInsert{Identificativo: "i", Recipient: "r", SentAt: sent, Deadlines: short}.Row()
	if !r.Due12.Equal(sent.Add(2*time.Second)) || !r.Due22.Equal(sent.Add(3*time.Second)) || !r.Due24.Equal(sent.Add(4*time.Second)) {
		t.Errorf("short deadlines: %v %v %v", r.Due12, r.Due22, r.Due24)
	}
	if r.DueAt(sent.Add(2*time.Second)) != InputNotice12h || r.DueAt(sent.Add(2*time.Second-1)) != "" {
		t.Error("DueAt does not follow the row's deadline")
	}
	for _, d := range []Deadlines{DefaultDeadlines, short, {First: time.Second, FinalFrom: time.Second, Final: time.Second}} {
		if err := d.Validate(); err != nil {
			t.Errorf("%+v: %v", d, err)
		}
	}
	for _, d := range []Deadlines{{}, {First: -1, FinalFrom: 1, Final: 1}, {First: 2, FinalFrom: 1, Final: 3}, {First: 1, FinalFrom: 3, Final: 2}} {
		if err := d.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", d, err)
		}
	}
	if (Deadlines{}).OrDefault() != DefaultDeadlines || short.OrDefault() != short {
		t.Error("OrDefault")
	}
}
