package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

const (
	trID   = "opec.tracking@pec-a.test"
	trRcpt = "bruno@pec-b.test"
)

func track(t *testing.T, s store.Store, id, rcpt string, sent time.Time) {
	t.Helper()
	commit(t, s, &store.Batch{Inserts: []store.TrackInsert{{Identificativo: id, Recipient: rcpt, SentAt: sent,
		Sender: "alice@pec-a.test", Subject: "Contratto", MessageID: "<orig@client>", Data: []byte(`{"k":1}`)}}})
}

func apply(s store.Store, id, rcpt string, in store.Input, at time.Time) error {
	return s.Commit(context.Background(), &store.Batch{Transitions: []store.Transition{{Identificativo: id, Recipient: rcpt, Input: in, At: at}}})
}

func row(t *testing.T, s store.Store, id, rcpt string) store.Tracking {
	t.Helper()
	rows, err := s.Tracking(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Recipient == rcpt {
			return r
		}
	}
	t.Fatalf("no tracking row for %s %s", id, rcpt)
	return store.Tracking{}
}

func stampOf(r store.Tracking, in store.Input) time.Time {
	switch in {
	case store.InputPresaInCarico:
		return r.TakenAt
	case store.InputConsegna:
		return r.DeliveredAt
	case store.InputMancataConsegna:
		return r.FailedAt
	case store.InputNotice12h:
		return r.Notice12At
	}
	return r.Notice24At
}

// reach drives a fresh row to state via the shortest path of inputs.
var reach = map[store.State][]store.Input{
	store.StateSent:       nil,
	store.StateTaken:      {store.InputPresaInCarico},
	store.StateDelivered:  {store.InputConsegna},
	store.StateFailed:     {store.InputMancataConsegna},
	store.StateNotified12: {store.InputNotice12h},
	store.StateNotified24: {store.InputNotice12h, store.InputNotice24h},
}

// TransitionTable is the expected state machine, written independently of the
// implementation's table (pec-spec §6.3). "conflict" means Commit fails with ErrConflict.
var TransitionTable = []struct {
	From store.State
	In   store.Input
	To   store.State
	Out  store.Outcome
}{
	{store.StateSent, store.InputPresaInCarico, store.StateTaken, store.Applied},
	{store.StateSent, store.InputConsegna, store.StateDelivered, store.Applied},
	{store.StateSent, store.InputMancataConsegna, store.StateFailed, store.Applied},
	{store.StateSent, store.InputNotice12h, store.StateNotified12, store.Applied},
	{store.StateSent, store.InputNotice24h, store.StateSent, store.Conflict},

	{store.StateTaken, store.InputPresaInCarico, store.StateTaken, store.Duplicate},
	{store.StateTaken, store.InputConsegna, store.StateDelivered, store.Applied},
	{store.StateTaken, store.InputMancataConsegna, store.StateFailed, store.Applied},
	{store.StateTaken, store.InputNotice12h, store.StateTaken, store.Conflict},
	{store.StateTaken, store.InputNotice24h, store.StateNotified24, store.Applied},

	{store.StateDelivered, store.InputPresaInCarico, store.StateDelivered, store.Recorded},
	{store.StateDelivered, store.InputConsegna, store.StateDelivered, store.Duplicate},
	{store.StateDelivered, store.InputMancataConsegna, store.StateDelivered, store.Recorded},
	{store.StateDelivered, store.InputNotice12h, store.StateDelivered, store.Conflict},
	{store.StateDelivered, store.InputNotice24h, store.StateDelivered, store.Conflict},

	{store.StateFailed, store.InputPresaInCarico, store.StateFailed, store.Recorded},
	{store.StateFailed, store.InputConsegna, store.StateFailed, store.Recorded},
	{store.StateFailed, store.InputMancataConsegna, store.StateFailed, store.Duplicate},
	{store.StateFailed, store.InputNotice12h, store.StateFailed, store.Conflict},
	{store.StateFailed, store.InputNotice24h, store.StateFailed, store.Conflict},

	{store.StateNotified12, store.InputPresaInCarico, store.StateNotified12, store.Recorded},
	{store.StateNotified12, store.InputConsegna, store.StateDelivered, store.Applied},
	{store.StateNotified12, store.InputMancataConsegna, store.StateFailed, store.Applied},
	{store.StateNotified12, store.InputNotice12h, store.StateNotified12, store.Conflict},
	{store.StateNotified12, store.InputNotice24h, store.StateNotified24, store.Applied},

	{store.StateNotified24, store.InputPresaInCarico, store.StateNotified24, store.Recorded},
	{store.StateNotified24, store.InputConsegna, store.StateNotified24, store.Recorded},
	{store.StateNotified24, store.InputMancataConsegna, store.StateNotified24, store.Recorded},
	{store.StateNotified24, store.InputNotice12h, store.StateNotified24, store.Conflict},
	{store.StateNotified24, store.InputNotice24h, store.StateNotified24, store.Conflict},
}

func testTransitionTable(t *testing.T, s store.Store) {
	for i, tc := range TransitionTable {
		id := fmt.Sprintf("opec.table.%d@pec-a.test", i)
		track(t, s, id, trRcpt, T0)
		at := T0
		for _, in := range reach[tc.From] {
			at = at.Add(13 * time.Hour) // far enough for the notices
			if err := apply(s, id, trRcpt, in, at); err != nil {
				t.Fatalf("%d: reaching %s with %s: %v", i, tc.From, in, err)
			}
		}
		before := row(t, s, id, trRcpt)
		if before.State != tc.From {
			t.Fatalf("%d: reached %s, want %s", i, before.State, tc.From)
		}
		at = at.Add(time.Hour)
		err := apply(s, id, trRcpt, tc.In, at)
		after := row(t, s, id, trRcpt)
		name := fmt.Sprintf("%s + %s", tc.From, tc.In)
		if tc.Out == store.Conflict {
			if !errors.Is(err, store.ErrConflict) {
				t.Errorf("%s: err %v, want ErrConflict", name, err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if after.State != tc.To {
			t.Errorf("%s: state %s, want %s", name, after.State, tc.To)
		}
		stamp, prev := stampOf(after, tc.In), stampOf(before, tc.In)
		switch tc.Out {
		case store.Applied, store.Recorded:
			if !prev.IsZero() && tc.Out == store.Recorded || (prev.IsZero() && !stamp.Equal(at)) {
				t.Errorf("%s: stamp %v (was %v), want %v", name, stamp, prev, at)
			}
		default:
			if !stamp.Equal(prev) {
				t.Errorf("%s: stamp changed from %v to %v", name, prev, stamp)
			}
		}
		// Whatever happened, the pure function agrees with the table.
		if _, out := store.Next(before, tc.In, at); out != tc.Out {
			t.Errorf("%s: Next says %s, table says %s", name, out, tc.Out)
		}
	}
}

func testIdempotentReceipts(t *testing.T, s store.Store) {
	track(t, s, trID, trRcpt, T0)
	first := T0.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if err := apply(s, trID, trRcpt, store.InputConsegna, first.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	r := row(t, s, trID, trRcpt)
	if r.State != store.StateDelivered || !r.DeliveredAt.Equal(first) {
		t.Errorf("after the same receipt three times: %s at %v, want delivered at %v", r.State, r.DeliveredAt, first)
	}
	// Inserting the same row again (a replayed batch) changes nothing either.
	track(t, s, trID, trRcpt, T0.Add(time.Hour))
	r2 := row(t, s, trID, trRcpt)
	if r2.State != store.StateDelivered || !r2.SentAt.Equal(T0) {
		t.Errorf("re-insert changed the row: %+v", r2)
	}
	if string(r2.Data) != `{"k":1}` || r2.Sender != "alice@pec-a.test" || r2.Subject != "Contratto" || r2.MessageID != "<orig@client>" {
		t.Errorf("row context: %+v", r2)
	}
}

func testLateReceipt(t *testing.T, s store.Store) {
	track(t, s, trID, trRcpt, T0)
	must := func(in store.Input, at time.Time) {
		t.Helper()
		if err := apply(s, trID, trRcpt, in, at); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
	}
	must(store.InputNotice12h, T0.Add(12*time.Hour))
	must(store.InputNotice24h, T0.Add(23*time.Hour))
	late := T0.Add(30 * time.Hour)
	must(store.InputConsegna, late) // pec-spec §6.3 INFERENCE: still recorded
	r := row(t, s, trID, trRcpt)
	if r.State != store.StateNotified24 || !r.DeliveredAt.Equal(late) || !r.Notice24At.Equal(T0.Add(23*time.Hour)) {
		t.Errorf("late consegna after the final notice: %+v", r)
	}
	// After only the 12 h notice a late consegna ends tracking: no 24 h notice any more.
	track(t, s, "late2@pec-a.test", trRcpt, T0)
	if err := apply(s, "late2@pec-a.test", trRcpt, store.InputNotice12h, T0.Add(12*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := apply(s, "late2@pec-a.test", trRcpt, store.InputConsegna, T0.Add(13*time.Hour)); err != nil {
		t.Fatal(err)
	}
	due, _ := s.DueTracking(context.Background(), T0.Add(23*time.Hour), 0)
	for _, d := range due {
		if d.Identificativo == "late2@pec-a.test" {
			t.Errorf("delivered row still due: %+v", d)
		}
	}
}

func testUnknownReceipt(t *testing.T, s store.Store) {
	// A receipt about an identificativo we never sent (or an external recipient) must not
	// fail the batch: the engine still logs and delivers it.
	b := &store.Batch{}
	b.Log(store.Event{Time: T0, Identificativo: "foreign@pec-b.test", Kind: store.KindRicezioneRicevuta})
	b.Apply(store.Transition{Identificativo: "foreign@pec-b.test", Recipient: "x@pec-b.test", Input: store.InputConsegna, At: T0})
	commit(t, s, b)
	if rows, _ := s.Tracking(context.Background(), "foreign@pec-b.test"); len(rows) != 0 {
		t.Errorf("receipt created tracking rows: %+v", rows)
	}
	if countEvents(t, s) != 1 {
		t.Error("event of the batch not written")
	}
}

// testProvingReceipt: a receipt about one of our transactions (ProvesQueued) that overtook
// Postfix's confirmation of its busta releases, in its own transaction, the waiting step that
// starts the tracking (its accettazione, log event and tracking rows), then moves the row it
// inserted; the confirmation that comes later commits nothing more. A waiting step of the
// same transaction that starts no tracking (a presa in carico's) stays waiting; the same
// receipt again releases nothing more; a receipt with no waiting step, or about a recipient
// the transaction does not track, is ignored.
func testProvingReceipt(t *testing.T, s store.Store) {
	ctx := context.Background()
	h, other := HeldStep(90, T0), HeldStep(91, T0)
	other.Identificativo, other.OnConfirm.Inserts = h.Identificativo, nil
	hold(t, s, h, other)
	receipt := provingReceipt
	state := func(key string) store.HeldState { return heldState(t, s, key) }

	commit(t, s, receipt(h.Identificativo, "bruno@pec-b.test"))
	if r := row(t, s, h.Identificativo, "bruno@pec-b.test"); r.State != store.StateFailed {
		t.Errorf("state %s after the proving receipt, want %s", r.State, store.StateFailed)
	}
	if st := state(h.Key); st != store.HeldReleased {
		t.Errorf("proven step %s, want %s", st, store.HeldReleased)
	}
	if st := state(other.Key); st != store.HeldWaiting {
		t.Errorf("a step that starts no tracking was %s by the receipt, want %s", st, store.HeldWaiting)
	}
	evs := Search(t, s, store.Query{Identificativo: h.Identificativo})
	if len(evs) != 2 || evs[0].Kind != store.KindAccettazione || evs[1].Kind != store.KindRicezioneRicevuta {
		t.Errorf("log after the proving receipt: %+v, want the accettazione, then the receipt", evs)
	}
	if got := claim(t, s, "w", 10); len(got) != 1 || got[0].Kind != "accettazione" {
		t.Errorf("outbox after the proving receipt: %s, want the accettazione", ids(got))
	}

	c, err := s.Confirm(ctx, h.Token, T0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.State != store.HeldReleased || c.Late {
		t.Errorf("confirmation after the receipt: %s late=%v", c.State, c.Late)
	}
	if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("%d accettazione events after the confirmation, want 1", n)
	}
	if got := claim(t, s, "w2", 10); len(got) != 0 {
		t.Errorf("the confirmation queued %s again", ids(got))
	}

	// The same receipt again (the peer's retry after a lost reply): the step is released
	// already, nothing is queued or logged a second time but the receipt's own event.
	commit(t, s, receipt(h.Identificativo, "bruno@pec-b.test"))
	if n := kindCount(t, s, h.Identificativo, store.KindAccettazione); n != 1 {
		t.Errorf("%d accettazione events after the repeated receipt, want 1", n)
	}
	if got := claim(t, s, "w3", 10); len(got) != 0 {
		t.Errorf("the repeated receipt queued %s", ids(got))
	}

	commit(t, s, receipt("nowait@pec-a.test", "bruno@pec-b.test")) // no waiting step: ignored
	commit(t, s, receipt(h.Identificativo, "nobody@pec-b.test"))   // not tracked: ignored
	if rows, _ := s.Tracking(ctx, "nowait@pec-a.test"); len(rows) != 0 {
		t.Errorf("receipt without a waiting step created rows: %+v", rows)
	}
}

// testProvingReceiptFailed: a batch with a proving receipt that fails (here a notice about a
// row that does not exist) rolls back the release with everything else.
func testProvingReceiptFailed(t *testing.T, s store.Store) {
	failing := HeldStep(92, T0)
	hold(t, s, failing)
	bad := provingReceipt(failing.Identificativo, "bruno@pec-b.test")
	bad.Apply(store.Transition{Identificativo: "nobody@pec-a.test", Recipient: "x@pec-b.test", Input: store.InputNotice12h, At: T0})
	if err := s.Commit(context.Background(), bad); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("failing batch: %v, want ErrConflict", err)
	}
	if st := heldState(t, s, failing.Key); st != store.HeldWaiting {
		t.Errorf("a failed batch left its proven step %s, want %s", st, store.HeldWaiting)
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events committed by a failed batch", n)
	}
	if got := claim(t, s, "w", 10); len(got) != 0 {
		t.Errorf("a failed batch queued %s", ids(got))
	}
}

func provingReceipt(id, rcpt string) *store.Batch {
	b := &store.Batch{}
	b.Log(store.Event{Time: T0, Identificativo: id, Kind: store.KindRicezioneRicevuta})
	b.Apply(store.Transition{Identificativo: id, Recipient: rcpt, Input: store.InputMancataConsegna, At: T0, ProvesQueued: true})
	return b
}

func heldState(t *testing.T, s store.Store, key string) store.HeldState {
	t.Helper()
	got, err := s.LookupHeld(context.Background(), key, T0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return got.State
}

func testDueRows(t *testing.T, s store.Store) {
	ctx := context.Background()
	track(t, s, "a@pec-a.test", "r@pec-b.test", T0)                    // nothing arrives
	track(t, s, "b@pec-a.test", "r@pec-b.test", T0.Add(time.Minute))   // presa in carico arrives
	track(t, s, "c@pec-a.test", "r@pec-b.test", T0.Add(2*time.Minute)) // consegna arrives
	track(t, s, "d@pec-a.test", "r@pec-b.test", T0.Add(12*time.Hour))  // dispatched later
	if err := apply(s, "b@pec-a.test", "r@pec-b.test", store.InputPresaInCarico, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := apply(s, "c@pec-a.test", "r@pec-b.test", store.InputConsegna, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	due := func(at time.Duration, limit int) string {
		rows, err := s.DueTracking(ctx, T0.Add(at), limit)
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, r := range rows {
			out += fmt.Sprintf("%s:%s ", r.Identificativo[:1], r.Due)
		}
		return out
	}
	steps := []struct {
		at    time.Duration
		limit int
		want  string
		apply string // identificativo whose due notice is then committed
	}{
		{12*time.Hour - time.Nanosecond, 0, "", ""},
		{12 * time.Hour, 0, "a:notice-12h ", "a"},
		{12 * time.Hour, 0, "", ""},
		{22*time.Hour + time.Minute - time.Nanosecond, 0, "a:notice-24h ", ""},
		{22*time.Hour + time.Minute, 0, "a:notice-24h b:notice-24h ", ""},
		{22*time.Hour + time.Minute, 1, "a:notice-24h ", "a"},
		{25 * time.Hour, 0, "b:notice-24h d:notice-12h ", "b"}, // late rows are still due
		{25 * time.Hour, 0, "d:notice-12h ", ""},
	}
	for i, st := range steps {
		got := due(st.at, st.limit)
		if got != st.want {
			t.Fatalf("step %d at +%v: due %q, want %q", i, st.at, got, st.want)
		}
		if st.apply != "" {
			rows, _ := s.DueTracking(ctx, T0.Add(st.at), 1)
			r := rows[0]
			if err := apply(s, r.Identificativo, r.Recipient, r.Due, T0.Add(st.at)); err != nil {
				t.Fatalf("step %d: applying %s: %v", i, r.Due, err)
			}
		}
	}
	r := row(t, s, "a@pec-a.test", "r@pec-b.test")
	if !r.Due12.Equal(T0.Add(12*time.Hour)) || !r.Due22.Equal(T0.Add(22*time.Hour)) || !r.Due24.Equal(T0.Add(24*time.Hour)) {
		t.Errorf("deadlines: %v %v %v", r.Due12, r.Due22, r.Due24)
	}
}

func testPurgeTracking(t *testing.T, s store.Store) {
	ctx := context.Background()
	track(t, s, "done@pec-a.test", "r@pec-b.test", T0)
	track(t, s, "open@pec-a.test", "r@pec-b.test", T0)
	track(t, s, "recent@pec-a.test", "r@pec-b.test", T0.Add(48*time.Hour))
	for _, id := range []string{"done@pec-a.test", "recent@pec-a.test"} {
		if err := apply(s, id, "r@pec-b.test", store.InputConsegna, T0.Add(49*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PurgeTracking(ctx, T0.Add(24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PurgeTracking: %d %v, want 1", n, err)
	}
	for id, want := range map[string]int{"done@pec-a.test": 0, "open@pec-a.test": 1, "recent@pec-a.test": 1} {
		if rows, _ := s.Tracking(ctx, id); len(rows) != want {
			t.Errorf("%s: %d rows, want %d", id, len(rows), want)
		}
	}
}

// testDueOwnDeadlines: each row carries its own deadlines, fixed at insert; DueTracking
// reads them from the row, so rows with short deadlines (2 s, 3 s, 4 s) and rows with the
// defaults are due each at their own time.
func testDueOwnDeadlines(t *testing.T, s store.Store) {
	ctx := context.Background()
	short := store.Deadlines{First: 2 * time.Second, FinalFrom: 3 * time.Second, Final: 4 * time.Second}
	commit(t, s, &store.Batch{Inserts: []store.TrackInsert{
		{Identificativo: "s@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0, Deadlines: short},
		{Identificativo: "t@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0, Deadlines: short},
		{Identificativo: "u@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0}, // defaults
	}})
	r := row(t, s, "s@pec-a.test", "r@pec-b.test")
	if !r.Due12.Equal(T0.Add(2*time.Second)) || !r.Due22.Equal(T0.Add(3*time.Second)) || !r.Due24.Equal(T0.Add(4*time.Second)) {
		t.Fatalf("short deadlines stored as %v %v %v", r.Due12, r.Due22, r.Due24)
	}
	if err := apply(s, "t@pec-a.test", "r@pec-b.test", store.InputPresaInCarico, T0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	due := func(at time.Duration) string {
		t.Helper()
		rows, err := s.DueTracking(ctx, T0.Add(at), 0)
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, r := range rows {
			out += fmt.Sprintf("%s:%s ", r.Identificativo[:1], r.Due)
		}
		return out
	}
	for _, st := range []struct {
		at    time.Duration
		want  string
		apply string
	}{
		{2*time.Second - time.Nanosecond, "", ""},
		{2 * time.Second, "s:notice-12h ", "s"},
		{3*time.Second - time.Nanosecond, "", ""},
		{3 * time.Second, "s:notice-24h t:notice-24h ", "s"},
		{4 * time.Second, "t:notice-24h ", "t"},
		{12*time.Hour - time.Nanosecond, "", ""},
		{12 * time.Hour, "u:notice-12h ", ""},
	} {
		if got := due(st.at); got != st.want {
			t.Fatalf("at +%v: due %q, want %q", st.at, got, st.want)
		}
		if st.apply != "" {
			id := st.apply + "@pec-a.test"
			in := store.InputNotice12h
			if row(t, s, id, "r@pec-b.test").State != store.StateSent {
				in = store.InputNotice24h
			}
			if err := apply(s, id, "r@pec-b.test", in, T0.Add(st.at)); err != nil {
				t.Fatalf("at +%v: %s for %s: %v", st.at, in, id, err)
			}
		}
	}
	// The defaults are pec-spec §6.3's.
	if d := store.DefaultDeadlines; d.First != 12*time.Hour || d.FinalFrom != 22*time.Hour || d.Final != 24*time.Hour {
		t.Errorf("DefaultDeadlines %+v", d)
	}
}

func testInvalidDeadlines(t *testing.T, s store.Store) {
	for _, d := range []store.Deadlines{
		{First: -time.Second, FinalFrom: time.Second, Final: time.Second},
		{First: 2 * time.Second, FinalFrom: time.Second, Final: 3 * time.Second},
		{First: time.Second, FinalFrom: 3 * time.Second, Final: 2 * time.Second},
		{FinalFrom: time.Second, Final: time.Second}, // partly set is not "zero: defaults"
	} {
		err := s.Commit(context.Background(), &store.Batch{
			Events:  []store.Event{SampleEvent(1, T0)},
			Inserts: []store.TrackInsert{{Identificativo: "x@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0, Deadlines: d}},
		})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("deadlines %+v: %v, want ErrInvalid", d, err)
		}
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events written by invalid batches", n)
	}
}

// testOpenTracking: OpenTracking counts the rows still waiting, by state; terminal rows are
// not counted.
func testOpenTracking(t *testing.T, s store.Store) {
	for i, in := range []store.Input{"", "", store.InputPresaInCarico, store.InputNotice12h, store.InputConsegna, store.InputMancataConsegna} {
		id := fmt.Sprintf("open%d@pec-a.test", i)
		track(t, s, id, "r@pec-b.test", T0)
		if in != "" {
			if err := apply(s, id, "r@pec-b.test", in, T0.Add(13*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
	}
	track(t, s, "final@pec-a.test", "r@pec-b.test", T0)
	for _, in := range []store.Input{store.InputNotice12h, store.InputNotice24h} {
		if err := apply(s, "final@pec-a.test", "r@pec-b.test", in, T0.Add(23*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.OpenTracking(context.Background())
	want := map[store.State]int64{store.StateSent: 2, store.StateTaken: 1, store.StateNotified12: 1}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("OpenTracking: %v %v, want %v", got, err, want)
	}
}

// testDuePages: a page of DueTracking is cut, in dispatch order, from the rows of each kind
// whose deadline passed first, and paging by committing each page's notices visits every due
// row once. A row with short deadlines dispatched after rows with the default deadlines comes
// in the first page, ahead of older rows whose deadline passed later.
func testDuePages(t *testing.T, s store.Store) {
	ctx := context.Background()
	var ins []store.TrackInsert
	for i := range 6 {
		ins = append(ins, store.TrackInsert{Identificativo: fmt.Sprintf("%d@pec-a.test", i), Recipient: "r@pec-b.test", SentAt: T0.Add(time.Duration(i) * time.Minute)})
	}
	short := store.Deadlines{First: 2 * time.Second, FinalFrom: 3 * time.Second, Final: 4 * time.Second}
	ins = append(ins, store.TrackInsert{Identificativo: "s@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0.Add(time.Hour), Deadlines: short},
		store.TrackInsert{Identificativo: "f@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0.Add(2 * time.Hour), Deadlines: short})
	commit(t, s, &store.Batch{Inserts: ins})
	if err := apply(s, "f@pec-a.test", "r@pec-b.test", store.InputPresaInCarico, T0.Add(2*time.Hour+time.Second)); err != nil {
		t.Fatal(err)
	}
	now := T0.Add(12*time.Hour + 3*time.Minute) // rows 0-3 due for the first notice, s too; f for the final one
	var pages []string
	for range 10 {
		rows, err := s.DueTracking(ctx, now, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			break
		}
		page := ""
		for _, r := range rows {
			page += fmt.Sprintf("%s:%s ", r.Identificativo[:1], r.Due)
			in := store.Input(r.Due)
			if err := apply(s, r.Identificativo, r.Recipient, in, now); err != nil {
				t.Fatalf("committing %s of %s: %v", in, r.Identificativo, err)
			}
		}
		pages = append(pages, page)
	}
	// Page 1: of the first notices, s (due 2 s after its dispatch), 0 and 1 passed their
	// deadline first; of the final ones, f. In dispatch order 0, 1, s, f: cut at 3. Then s is
	// due for its final notice, and rows 4 and 5 are not due yet.
	want := []string{"0:notice-12h 1:notice-12h s:notice-12h ", "2:notice-12h 3:notice-12h s:notice-24h ", "f:notice-24h "}
	if fmt.Sprint(pages) != fmt.Sprint(want) {
		t.Errorf("pages %q\nwant  %q", pages, want)
	}
}
