package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// HeldStep returns a held access-point step i, shaped as the engine prepares one: on
// confirmation the accettazione (log event and outbox item) and the tracking of one
// certified recipient; on expiry a log event saying the busta was never queued.
func HeldStep(i int, created time.Time) store.Held {
	id := fmt.Sprintf("opec.held.%d@pec-a.test", i)
	acc := fmt.Sprintf("<opec.held.%d.acc@pec-a.test>", i)
	raw := bytes.Repeat([]byte("Message-ID: "+acc+"\r\nSubject: ACCETTAZIONE\r\n\r\nx\x00\xff\r\n"), 200) // ~10 KB, any byte
	h := store.Held{
		Token: fmt.Sprintf("tok-%d-%x", i, created.UnixNano()), Key: fmt.Sprintf("key-%d", i),
		Identificativo: id, State: store.HeldWaiting, Created: created, Expires: created.Add(10 * time.Minute),
		Outcome: []byte(fmt.Sprintf(`{"reply":"250 ok %d"}`, i)),
	}
	h.OnConfirm.Log(store.Event{Time: created, Identificativo: id, Kind: store.KindAccettazione, Sender: "alice@pec-a.test",
		Recipients: []store.Recipient{{Addr: "bruno@pec-b.test", Type: store.Certified}}, Subject: "Contratto",
		Generated: []string{acc}})
	h.OnConfirm.Send(store.OutboxItem{MessageID: acc, Kind: "accettazione", Identificativo: id,
		From: "posta-certificata@pec-a.test", Rcpts: []string{"alice@pec-a.test"}, Raw: raw})
	h.OnConfirm.Track(store.TrackInsert{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: created,
		Sender: "alice@pec-a.test", Subject: "Contratto", Data: []byte{0, 1, 2},
		Deadlines: store.Deadlines{First: time.Hour, FinalFrom: 2 * time.Hour, Final: 3 * time.Hour}})
	h.OnExpiry.Log(store.Event{Time: created.Add(10 * time.Minute), Identificativo: id, Kind: store.KindNonAccettazione,
		Sender: "alice@pec-a.test", ErrorDetail: "busta not queued by Postfix"})
	return h
}

func hold(t *testing.T, s store.Store, hs ...store.Held) {
	t.Helper()
	commit(t, s, &store.Batch{Holds: hs})
}

func kindCount(t *testing.T, s store.Store, id string, k store.EventKind) int {
	t.Helper()
	return len(Search(t, s, store.Query{Identificativo: id, Kinds: []store.EventKind{k}}))
}

// sameBatch compares batches as Commit reads them (times by instant, nil and empty alike).
func sameBatch(t *testing.T, what string, got, want store.Batch) {
	t.Helper()
	norm := func(b store.Batch) string {
		for i := range b.Events {
			b.Events[i].Time = b.Events[i].Time.UTC()
		}
		for i := range b.Inserts {
			b.Inserts[i].SentAt = b.Inserts[i].SentAt.UTC()
		}
		for i := range b.Transitions {
			b.Transitions[i].At = b.Transitions[i].At.UTC()
		}
		for i := range b.Outbox {
			b.Outbox[i].Raw = []byte(digest(b.Outbox[i].Raw))
		}
		for i := range b.Quarantine {
			b.Quarantine[i].Raw = []byte(digest(b.Quarantine[i].Raw))
		}
		return fmt.Sprintf("%+v", b)
	}
	if norm(got) != norm(want) {
		t.Errorf("%s:\n got %s\nwant %s", what, norm(got), norm(want))
	}
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%d bytes %x", len(b), sum[:6])
}

// brief describes a held record without its batches, for failure messages.
func brief(h *store.Held) string {
	if h == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{token %q key %q %s %s created %v expires %v outcome %q released %v expired %v late %v; %d+%d events}",
		h.Token, h.Key, h.Identificativo, h.State, h.Created, h.Expires, h.Outcome, h.ReleasedAt, h.ExpiredAt, h.Late,
		len(h.OnConfirm.Events), len(h.OnExpiry.Events))
}

func testHeldRoundTrip(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := HeldStep(1, T0)
	final := store.Held{Key: "key-refused", Identificativo: "opec.refused@pec-a.test", State: store.HeldFinal,
		Created: T0.Add(time.Second), Outcome: []byte("550 refused")}
	b := &store.Batch{}
	b.Log(store.Event{Time: T0, Identificativo: "opec.refused@pec-a.test", Kind: store.KindNonAccettazione})
	b.Hold(h)
	b.Hold(final)
	commit(t, s, b)
	// Nothing of OnConfirm or OnExpiry is committed yet.
	if n := countEvents(t, s); n != 1 {
		t.Errorf("%d events after Commit, want only the batch's own", n)
	}
	if items := claim(t, s, "x", 10); len(items) != 0 {
		t.Errorf("held receipt in the outbox before confirmation: %q", ids(items))
	}
	got, err := s.LookupHeld(ctx, "key-1", T0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != h.Token || got.Key != h.Key || got.Identificativo != h.Identificativo || got.State != store.HeldWaiting ||
		!got.Created.Equal(h.Created) || !got.Expires.Equal(h.Expires) || !bytes.Equal(got.Outcome, h.Outcome) ||
		!got.ReleasedAt.IsZero() || !got.ExpiredAt.IsZero() || got.Late {
		t.Errorf("LookupHeld: %s", brief(got))
	}
	sameBatch(t, "OnConfirm", got.OnConfirm, h.OnConfirm)
	sameBatch(t, "OnExpiry", got.OnExpiry, h.OnExpiry)
	f, err := s.LookupHeld(ctx, "key-refused", T0)
	if err != nil || f.State != store.HeldFinal || string(f.Outcome) != "550 refused" || f.Token != "" || !f.OnConfirm.Empty() {
		t.Errorf("final record: %s %v", brief(f), err)
	}
	for _, q := range []struct {
		key   string
		since time.Time
	}{{"key-1", T0.Add(time.Nanosecond)}, {"key-2", T0}, {"", T0}} {
		if _, err := s.LookupHeld(ctx, q.key, q.since); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("LookupHeld(%q, %v): %v, want ErrNotFound", q.key, q.since, err)
		}
	}
	// The caller's copy is not the store's.
	got.OnConfirm.Outbox[0].Raw[0] = 'X'
	again, _ := s.LookupHeld(ctx, "key-1", T0)
	if again.OnConfirm.Outbox[0].Raw[0] != 'M' {
		t.Error("a returned record shares memory with the store")
	}
}

func testHeldDuplicates(t *testing.T, s store.Store) {
	ctx := context.Background()
	hold(t, s, HeldStep(1, T0))
	sameKey := HeldStep(1, T0.Add(time.Second)) // a retry: same key, new token
	sameTok := HeldStep(2, T0)
	sameTok.Token = HeldStep(1, T0).Token
	twice := HeldStep(3, T0)
	twiceKey := HeldStep(4, T0)
	twiceKey.Key = twice.Key
	for name, hs := range map[string][]store.Held{
		"same key":                  {sameKey},
		"same token":                {sameTok},
		"same key within one batch": {twice, twiceKey},
	} {
		b := &store.Batch{Holds: hs}
		b.Log(SampleEvent(9, T0))
		b.Send(outboxItem("<dup-"+name+"@pec-a.test>", "alice@pec-a.test"))
		b.Track(store.TrackInsert{Identificativo: "dup@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0})
		if err := s.Commit(ctx, b); !errors.Is(err, store.ErrExists) {
			t.Errorf("%s: %v, want ErrExists", name, err)
		}
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events written by refused batches", n)
	}
	if items := claim(t, s, "x", 10); len(items) != 0 {
		t.Errorf("outbox items written by refused batches: %q", ids(items))
	}
	if rows, _ := s.Tracking(ctx, "dup@pec-a.test"); len(rows) != 0 {
		t.Errorf("tracking rows written by refused batches: %+v", rows)
	}
	if _, err := s.LookupHeld(ctx, twice.Key, T0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a record of a refused batch was kept: %v", err)
	}
	got, err := s.LookupHeld(ctx, "key-1", T0)
	if err != nil || got.Token != HeldStep(1, T0).Token {
		t.Errorf("the first record changed: %s %v", brief(got), err)
	}
	// Records without a key never collide on it.
	a, b := HeldStep(5, T0), HeldStep(6, T0)
	a.Key, b.Key = "", ""
	hold(t, s, a, b)
}

func testHeldInvalid(t *testing.T, s store.Store) {
	bad := func(f func(h *store.Held)) store.Held {
		h := HeldStep(1, T0)
		f(&h)
		return h
	}
	for name, h := range map[string]store.Held{
		"waiting without token":   bad(func(h *store.Held) { h.Token = "" }),
		"waiting without expiry":  bad(func(h *store.Held) { h.Expires = time.Time{} }),
		"written released":        bad(func(h *store.Held) { h.State = store.HeldReleased }),
		"final with token":        bad(func(h *store.Held) { h.State = store.HeldFinal; h.OnConfirm, h.OnExpiry = store.Batch{}, store.Batch{} }),
		"final with a batch":      bad(func(h *store.Held) { h.State, h.Token = store.HeldFinal, "" }),
		"no identificativo":       bad(func(h *store.Held) { h.Identificativo = "" }),
		"no creation time":        bad(func(h *store.Held) { h.Created = time.Time{} }),
		"invalid OnConfirm":       bad(func(h *store.Held) { h.OnConfirm.Outbox[0].Raw = nil }),
		"invalid OnExpiry":        bad(func(h *store.Held) { h.OnExpiry.Events[0].Kind = "made-up" }),
		"held record in a record": bad(func(h *store.Held) { h.OnConfirm.Hold(HeldStep(2, T0)) }),
	} {
		b := &store.Batch{Events: []store.Event{SampleEvent(1, T0)}, Holds: []store.Held{h}}
		if err := s.Commit(context.Background(), b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events written by invalid batches", n)
	}
}

func testHeldConfirm(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := HeldStep(1, T0)
	hold(t, s, h)
	wake := s.OutboxWait()
	at := T0.Add(3 * time.Second)
	got, err := s.Confirm(ctx, h.Token, at)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.HeldReleased || !got.ReleasedAt.Equal(at) || got.Late || got.Key != h.Key {
		t.Errorf("after Confirm: %s", brief(got))
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Error("Confirm queuing a receipt did not wake the drainer")
	}
	if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("%d accettazione events, want 1", n)
	}
	items := claim(t, s, "x", 10)
	if len(items) != 1 || !bytes.Equal(items[0].Raw, h.OnConfirm.Outbox[0].Raw) || items[0].MessageID != h.OnConfirm.Outbox[0].MessageID {
		t.Errorf("outbox after Confirm: %q", ids(items))
	}
	r := row(t, s, h.Identificativo, "bruno@pec-b.test")
	if r.State != store.StateSent || !r.Due12.Equal(T0.Add(time.Hour)) || !bytes.Equal(r.Data, []byte{0, 1, 2}) {
		t.Errorf("tracking row after Confirm: %+v", r)
	}
	// Later calls change nothing and say what happened.
	for i := 0; i < 2; i++ {
		again, err := s.Confirm(ctx, h.Token, at.Add(time.Minute))
		if err != nil || again.State != store.HeldReleased || !again.ReleasedAt.Equal(at) {
			t.Errorf("second Confirm: %s %v", brief(again), err)
		}
	}
	if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("%d accettazione events after repeated Confirm, want 1", n)
	}
	if looked, _ := s.LookupHeld(ctx, h.Key, T0); looked == nil || looked.State != store.HeldReleased {
		t.Errorf("LookupHeld after Confirm: %s", brief(looked))
	}
	for _, tok := range []string{"no-such-token", ""} {
		if _, err := s.Confirm(ctx, tok, at); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Confirm(%q): %v, want ErrNotFound", tok, err)
		}
	}
	if n, err := s.ExpireHeld(ctx, T0.Add(time.Hour), 0); n != 0 || err != nil {
		t.Errorf("ExpireHeld after Confirm: %d %v", n, err)
	}
}

// testHeldConfirmDedup: OnConfirm is committed like any batch: an outbox item whose
// MessageID is already queued and a tracking row that exists are left alone.
func testHeldConfirmDedup(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := HeldStep(1, T0)
	first := h.OnConfirm.Outbox[0]
	first.Raw = []byte("the copy queued first")
	b := &store.Batch{}
	b.Send(first)
	b.Track(store.TrackInsert{Identificativo: h.Identificativo, Recipient: "BRUNO@pec-b.test", SentAt: T0.Add(-time.Hour)})
	commit(t, s, b)
	hold(t, s, h)
	if _, err := s.Confirm(ctx, h.Token, T0); err != nil {
		t.Fatal(err)
	}
	items := claim(t, s, "x", 10)
	if len(items) != 1 || string(items[0].Raw) != "the copy queued first" {
		t.Errorf("outbox: %d items %q", len(items), ids(items))
	}
	rows, _ := s.Tracking(ctx, h.Identificativo)
	if len(rows) != 1 || !rows[0].SentAt.Equal(T0.Add(-time.Hour)) {
		t.Errorf("tracking: %+v", rows)
	}
	if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("%d accettazione events, want 1", n)
	}
}

// testHeldConfirmConflict: an OnConfirm that cannot be committed changes nothing.
func testHeldConfirmConflict(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := HeldStep(1, T0)
	h.OnConfirm.Apply(store.Transition{Identificativo: "untracked@pec-a.test", Recipient: "r@pec-b.test", Input: store.InputNotice12h, At: T0})
	hold(t, s, h)
	if _, err := s.Confirm(ctx, h.Token, T0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Confirm: %v, want ErrConflict", err)
	}
	got, _ := s.LookupHeld(ctx, h.Key, T0)
	if got == nil || got.State != store.HeldWaiting {
		t.Errorf("record after a failed Confirm: %s", brief(got))
	}
	if n := countEvents(t, s); n != 0 || len(claim(t, s, "x", 10)) != 0 {
		t.Errorf("a failed Confirm wrote %d events or outbox items", n)
	}
	// ExpireHeld expires the others and names the one it could not.
	bad := HeldStep(2, T0)
	bad.OnExpiry.Apply(store.Transition{Identificativo: "untracked@pec-a.test", Recipient: "r@pec-b.test", Input: store.InputNotice24h, At: T0})
	good := HeldStep(3, T0)
	hold(t, s, bad, good)
	n, err := s.ExpireHeld(ctx, T0.Add(time.Hour), 0)
	if n != 2 || !errors.Is(err, store.ErrConflict) {
		t.Errorf("ExpireHeld: %d %v, want 2 and ErrConflict", n, err)
	}
	for key, want := range map[string]store.HeldState{h.Key: store.HeldExpired, bad.Key: store.HeldWaiting, good.Key: store.HeldExpired} {
		if got, _ := s.LookupHeld(ctx, key, T0); got == nil || got.State != want {
			t.Errorf("%s: %s, want %s", key, brief(got), want)
		}
	}
}

func testHeldExpire(t *testing.T, s store.Store) {
	ctx := context.Background()
	var hs []store.Held
	for i := 0; i < 3; i++ {
		hs = append(hs, HeldStep(i, T0.Add(time.Duration(i)*time.Minute))) // expire at +10, +11, +12 min
	}
	hold(t, s, hs...)
	expire := func(at time.Duration, limit, want int) {
		t.Helper()
		n, err := s.ExpireHeld(ctx, T0.Add(at), limit)
		if err != nil || n != want {
			t.Fatalf("ExpireHeld at +%v limit %d: %d %v, want %d", at, limit, n, err, want)
		}
	}
	expire(10*time.Minute-time.Nanosecond, 0, 0)
	expire(11*time.Minute, 1, 1) // the oldest first
	got, _ := s.LookupHeld(ctx, hs[0].Key, T0)
	if got.State != store.HeldExpired || !got.ExpiredAt.Equal(T0.Add(11*time.Minute)) {
		t.Fatalf("first expired: %s", brief(got))
	}
	expire(11*time.Minute, 0, 1)
	expire(11*time.Minute, 0, 0)
	for i, h := range hs[:2] {
		if n := kindCount(t, s, h.Identificativo, store.KindNonAccettazione); n != 1 {
			t.Errorf("record %d: %d expiry events, want 1", i, n)
		}
		if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 0 {
			t.Errorf("record %d: accettazione logged on expiry", i)
		}
	}
	// Postfix did queue it after all: the attestation is true, OnConfirm goes, Late says so.
	late, err := s.Confirm(ctx, hs[0].Token, T0.Add(20*time.Minute))
	if err != nil || late.State != store.HeldReleased || !late.Late || !late.ExpiredAt.Equal(T0.Add(11*time.Minute)) ||
		!late.ReleasedAt.Equal(T0.Add(20*time.Minute)) {
		t.Fatalf("late Confirm: %s %v", brief(late), err)
	}
	if n := kindCount(t, s, hs[0].Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("late Confirm: %d accettazione events", n)
	}
	if again, _ := s.Confirm(ctx, hs[0].Token, T0.Add(21*time.Minute)); again == nil || !again.ReleasedAt.Equal(T0.Add(20*time.Minute)) {
		t.Errorf("second late Confirm: %s", brief(again))
	}
	if n := kindCount(t, s, hs[0].Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("second late Confirm: %d accettazione events", n)
	}
	expire(time.Hour, 0, 1)
	if n := kindCount(t, s, hs[0].Identificativo, store.KindNonAccettazione); n != 1 {
		t.Errorf("a released record expired again: %d expiry events", n)
	}
}

func testHeldPurge(t *testing.T, s store.Store) {
	ctx := context.Background()
	released, expired, waiting, recent := HeldStep(1, T0), HeldStep(2, T0), HeldStep(3, T0), HeldStep(4, T0.Add(time.Hour))
	final := store.Held{Key: "key-final", Identificativo: "f@pec-a.test", State: store.HeldFinal, Created: T0}
	waiting.Expires = T0.Add(48 * time.Hour)
	hold(t, s, released, expired, waiting, recent, final)
	if _, err := s.Confirm(ctx, released.Token, T0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Confirm(ctx, recent.Token, T0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ExpireHeld(ctx, T0.Add(30*time.Minute), 0); n != 1 || err != nil {
		t.Fatalf("ExpireHeld: %d %v", n, err)
	}
	n, err := s.PurgeHeld(ctx, T0.Add(time.Minute))
	if err != nil || n != 3 {
		t.Fatalf("PurgeHeld: %d %v, want 3", n, err)
	}
	for _, h := range []store.Held{released, expired, final} {
		if _, err := s.LookupHeld(ctx, h.Key, time.Time{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s kept: %v", h.Key, err)
		}
	}
	for _, h := range []store.Held{waiting, recent} {
		if _, err := s.LookupHeld(ctx, h.Key, time.Time{}); err != nil {
			t.Errorf("%s purged: %v", h.Key, err)
		}
	}
	if _, err := s.Confirm(ctx, released.Token, T0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Confirm of a purged record: %v", err)
	}
	// The key of a purged record is free again; the log is untouched by purging.
	hold(t, s, HeldStep(1, T0.Add(2*time.Hour)))
	if kindCount(t, s, released.Identificativo, store.KindAccettazione) != 1 {
		t.Error("purge touched the log")
	}
}
