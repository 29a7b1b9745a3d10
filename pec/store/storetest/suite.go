package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// T0 is the base time of the suite's data.
var T0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// DB is one database of the suite. Each call opens another handle on it, as another process
// or node would (SQLite: another Open of the same file; Memory: another Handle), and
// registers its cleanup with the test.
type DB func() store.Store

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Set sets the clock.
func (c *Clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// env is what a subtest gets: its database and the clock of the stores opened on it.
type env struct {
	db    DB
	clock *Clock
}

// Run is the conformance suite: every store.Store implementation must pass it. For each
// subtest, open returns a fresh, empty database whose handles use now as the store's own
// clock (lease expiry, due outbox items: what the store decides without the caller's
// time). Several subtests open two handles on one database and use them at once.
func Run(t *testing.T, open func(t *testing.T, now func() time.Time) DB) {
	one := func(fn func(*testing.T, store.Store)) func(*testing.T, *env) {
		return func(t *testing.T, e *env) { fn(t, e.db()) }
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"LogAppendAndSearch", one(testLogSearch)},
		{"LogEventFieldsRoundTrip", one(testLogRoundTrip)},
		{"InvalidBatchWritesNothing", one(testInvalidBatch)},
		{"ConflictRollsBackWholeBatch", one(testConflictAtomic)},
		{"TransitionTable", one(testTransitionTable)},
		{"IdempotentReceipts", one(testIdempotentReceipts)},
		{"LateReceiptAfterNotice", one(testLateReceipt)},
		{"UnknownReceiptIgnored", one(testUnknownReceipt)},
		{"ProvingReceipt", one(testProvingReceipt)},
		{"ProvingReceiptFailed", one(testProvingReceiptFailed)},
		{"DueRows", one(testDueRows)},
		{"DueRowsOwnDeadlines", one(testDueOwnDeadlines)},
		{"DuePages", one(testDuePages)},
		{"InvalidDeadlines", one(testInvalidDeadlines)},
		{"PurgeTracking", one(testPurgeTracking)},
		{"OpenTracking", one(testOpenTracking)},
		{"QuarantineRetention", one(testQuarantine)},
		{"OutboxClaimAndMark", testOutbox},
		{"OutboxOwnerReclaimsOwnLeases", testOutboxOwnLeases},
		{"OutboxDuplicateMessageID", one(testOutboxDuplicate)},
		{"OutboxWakeOnCommit", one(testOutboxWake)},
		{"OutboxPurgeSent", testOutboxPurgeSent},
		{"Seals", one(testSeals)},
		{"Leases", testLeases},
		{"HeldCommitAndLookup", one(testHeldRoundTrip)},
		{"HeldDuplicateKeyOrToken", one(testHeldDuplicates)},
		{"HeldInvalid", one(testHeldInvalid)},
		{"HeldConfirm", one(testHeldConfirm)},
		{"HeldConfirmDedup", one(testHeldConfirmDedup)},
		{"HeldConfirmConflict", one(testHeldConfirmConflict)},
		{"HeldExpireThenLateConfirm", one(testHeldExpire)},
		{"HeldPurge", one(testHeldPurge)},
		{"DeliveryClaimAndClose", testDeliveryClaimAndClose},
		{"DeliveryOpenRecords", testDeliveryOpenRecords},
		{"DeliveryRelease", testDeliveryRelease},
		{"DeliveryKeys", testDeliveryKeys},
		{"DeliveryPurge", testDeliveryPurge},
		{"DeliveryInvalid", testDeliveryInvalid},
		{"TwoHandlesShareOneDatabase", testTwoHandlesShare},
		{"TwoHandlesClaimConcurrently", testConcurrentClaims},
		{"TwoHandlesTransitionConcurrently", testConcurrentTransitions},
		{"TwoHandlesLeaseConcurrently", testConcurrentLeases},
		{"TwoHandlesConfirmConcurrently", testConcurrentConfirm},
		{"TwoHandlesConfirmAndExpireConcurrently", testConcurrentConfirmExpire},
		{"TwoHandlesClaimDeliveriesConcurrently", testConcurrentDeliveryClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClock(T0)
			tc.fn(t, &env{db: open(t, c.Now), clock: c})
		})
	}
}

func commit(t *testing.T, s store.Store, b *store.Batch) {
	t.Helper()
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// Search returns the events matching q.
func Search(t testing.TB, s store.Store, q store.Query) []store.Event {
	t.Helper()
	var out []store.Event
	if err := s.ScanLog(context.Background(), q, func(e *store.Event) error { out = append(out, *e); return nil }); err != nil {
		t.Fatalf("ScanLog: %v", err)
	}
	return out
}

func seqs(evs []store.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// SampleEvent is a realistic event, shaped like a line of a real provider's log (the
// [ULIB] corpus in testdata/corpus/ulib-pec-log).
func SampleEvent(i int, at time.Time) store.Event {
	return store.Event{
		Time:           at,
		Identificativo: fmt.Sprintf("opec2026.%s.%05d.01@pec-a.test", at.Format("20060102150405"), i),
		Kind:           store.KindAccettazione,
		Sender:         fmt.Sprintf("user%d@pec-a.test", i%100),
		Recipients: []store.Recipient{
			{Addr: fmt.Sprintf("dest%d@pec-b.test", i%1000), Type: store.Certified},
			{Addr: "ufficio@posta.test", Type: store.External},
		},
		Subject:   fmt.Sprintf("Fattura n. %d del %s - sollecito di pagamento", i, at.Format("02/01/2006")),
		MessageID: fmt.Sprintf("<%d.%d@client.example>", i, at.Unix()),
		Gestore:   "Provider A S.p.A.",
		QueueID:   fmt.Sprintf("4Q%08X", i),
		Size:      int64(20000 + i%50000),
		Generated: []string{fmt.Sprintf("opec2026.%05d.01.acc@pec-a.test", i)},
	}
}

// (Long on purpose: one table of queries and the events each must find.)
func testLogSearch(t *testing.T, s store.Store) {
	ev := func(kind store.EventKind, id, sender, subj string, at time.Time, rcpts ...string) store.Event {
		e := store.Event{Time: at, Identificativo: id, Kind: kind, Sender: sender, Subject: subj, Gestore: "Provider A S.p.A."}
		for _, r := range rcpts {
			e.Recipients = append(e.Recipients, store.Recipient{Addr: r, Type: store.Certified})
		}
		return e
	}
	b := &store.Batch{}
	b.Log(ev(store.KindAccettazione, "id1@pec-a.test", "alice@pec-a.test", "Contratto", T0, "bruno@pec-b.test"))
	b.Log(ev(store.KindBustaTrasporto, "id1@pec-a.test", "alice@pec-a.test", "Contratto", T0, "bruno@pec-b.test"))
	commit(t, s, b)
	b = &store.Batch{}
	c := ev(store.KindConsegna, "id2@pec-b.test", "Bruno@PEC-B.test", "Fattura marzo", T0.Add(time.Hour), "anna@pec-a.test")
	c.About = []string{"anna@pec-a.test"}
	b.Log(c)
	commit(t, s, b)
	b = &store.Batch{}
	b.Log(ev(store.KindNonAccettazione, "id3@pec-a.test", "anna@pec-a.test", "FATTURA aprile", T0.Add(48*time.Hour), "x@pec-b.test"))
	commit(t, s, b)

	all := Search(t, s, store.Query{})
	if len(all) != 4 {
		t.Fatalf("got %d events, want 4", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("sequence not increasing: %v", seqs(all))
		}
	}
	s1, s2, s3, s4 := all[0].Seq, all[1].Seq, all[2].Seq, all[3].Seq
	cases := []struct {
		name string
		q    store.Query
		want []int64
	}{
		{"identificativo", store.Query{Identificativo: "id1@pec-a.test"}, []int64{s1, s2}},
		{"sender any case", store.Query{Sender: "ALICE@pec-a.test"}, []int64{s1, s2}},
		{"sender stored mixed case", store.Query{Sender: "bruno@pec-b.test"}, []int64{s3}},
		{"recipient", store.Query{Recipient: "Bruno@pec-b.test"}, []int64{s1, s2}},
		{"mailbox as sender or recipient", store.Query{Mailbox: "anna@pec-a.test"}, []int64{s3, s4}},
		{"subject substring any case", store.Query{Subject: "fattura"}, []int64{s3, s4}},
		{"kind", store.Query{Kinds: []store.EventKind{store.KindConsegna, store.KindNonAccettazione}}, []int64{s3, s4}},
		{"time range [from,to)", store.Query{From: T0.Add(time.Hour), To: T0.Add(48 * time.Hour)}, []int64{s3}},
		{"from only", store.Query{From: T0.Add(time.Minute)}, []int64{s3, s4}},
		{"after seq and limit", store.Query{AfterSeq: s1, Limit: 2}, []int64{s2, s3}},
		{"sender and range", store.Query{Sender: "anna@pec-a.test", From: T0, To: T0.Add(72 * time.Hour)}, []int64{s4}},
		{"nothing", store.Query{Identificativo: "nope"}, nil},
	}
	for _, tc := range cases {
		got := seqs(Search(t, s, tc.q))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	// ScanLog stops at the callback's error and returns it.
	stop := errors.New("stop")
	n := 0
	err := s.ScanLog(context.Background(), store.Query{}, func(*store.Event) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("ScanLog with failing callback: err %v after %d calls", err, n)
	}
}

func testLogRoundTrip(t *testing.T, s store.Store) {
	e := SampleEvent(7, T0.Add(1234567891*time.Nanosecond))
	e.Kind = store.KindMancataConsegna
	e.ReceiptType = "breve"
	e.About = []string{"dest7@pec-b.test"}
	e.Error = "no-dest"
	e.ErrorDetail = "5.1.1 - Provider B S.p.A. - indirizzo non valido"
	e.Virus = "Eicar-Test-Signature"
	e.Subject = "Test con euro nel subject € òàù °ç§ \"'<>&"
	commit(t, s, &store.Batch{Events: []store.Event{e}})
	got := Search(t, s, store.Query{})
	if len(got) != 1 {
		t.Fatalf("got %d events", len(got))
	}
	g := got[0]
	if g.Seq == 0 || !g.Time.Equal(e.Time) {
		t.Errorf("seq %d time %v, want time %v", g.Seq, g.Time, e.Time)
	}
	g.Seq, g.Time, e.Time = 0, time.Time{}, time.Time{}
	if fmt.Sprintf("%#v", g) != fmt.Sprintf("%#v", e) {
		t.Errorf("round trip:\n got %#v\nwant %#v", g, e)
	}
}

func countEvents(t *testing.T, s store.Store) int {
	return len(Search(t, s, store.Query{}))
}

func testInvalidBatch(t *testing.T, s store.Store) {
	bad := []*store.Batch{
		{Events: []store.Event{SampleEvent(1, T0), {Identificativo: "x@y", Kind: store.KindAccettazione}}},
		{Events: []store.Event{SampleEvent(1, T0)}, Outbox: []store.OutboxItem{{MessageID: "<m@x>"}}},
		{Events: []store.Event{{Time: T0, Identificativo: "x@y", Kind: "made-up"}}},
		{Transitions: []store.Transition{{Identificativo: "x", Recipient: "y", Input: "bogus", At: T0}}},
	}
	for i, b := range bad {
		if err := s.Commit(context.Background(), b); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("batch %d: err %v, want ErrInvalid", i, err)
		}
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events written by invalid batches", n)
	}
}

func outboxItem(id string, rcpt string) store.OutboxItem {
	return store.OutboxItem{MessageID: id, Kind: "accettazione", Identificativo: "id@pec-a.test",
		From: "posta-certificata@pec-a.test", Rcpts: []string{rcpt}, Raw: []byte("Message-ID: " + id + "\r\n\r\nbody\r\n")}
}

func testConflictAtomic(t *testing.T, s store.Store) {
	commit(t, s, &store.Batch{Inserts: []store.TrackInsert{{Identificativo: "id@pec-a.test", Recipient: "b@pec-b.test", SentAt: T0}}})
	commit(t, s, &store.Batch{Transitions: []store.Transition{{Identificativo: "id@pec-a.test", Recipient: "b@pec-b.test", Input: store.InputPresaInCarico, At: T0.Add(time.Minute)}}})
	// The sweeper's stale 12 h notice: must fail, and take its event and outbox item with it.
	b := &store.Batch{}
	b.Log(store.Event{Time: T0.Add(12 * time.Hour), Identificativo: "id@pec-a.test", Kind: store.KindPreavviso12h})
	b.Send(outboxItem("<n12@pec-a.test>", "alice@pec-a.test"))
	b.Apply(store.Transition{Identificativo: "id@pec-a.test", Recipient: "b@pec-b.test", Input: store.InputNotice12h, At: T0.Add(12 * time.Hour)})
	if err := s.Commit(context.Background(), b); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale notice: err %v, want ErrConflict", err)
	}
	if n := countEvents(t, s); n != 0 {
		t.Errorf("%d events left by a rolled back batch", n)
	}
	items, err := s.ClaimOutbox(context.Background(), store.Claim{Owner: "x", Lease: time.Minute, Limit: 10})
	if err != nil || len(items) != 0 {
		t.Errorf("outbox after rollback: %d items, err %v", len(items), err)
	}
	rows, _ := s.Tracking(context.Background(), "id@pec-a.test")
	if len(rows) != 1 || rows[0].State != store.StateTaken || !rows[0].Notice12At.IsZero() {
		t.Errorf("tracking after rollback: %+v", rows)
	}
	// Notices for rows that do not exist conflict too.
	err = s.Commit(context.Background(), &store.Batch{Transitions: []store.Transition{{Identificativo: "nope", Recipient: "b@pec-b.test", Input: store.InputNotice24h, At: T0}}})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("notice for unknown row: %v", err)
	}
}

func testQuarantine(t *testing.T, s store.Store) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	b := &store.Batch{}
	b.Keep(store.QuarantineItem{Identificativo: "old@pec-a.test", Time: now.AddDate(0, -31, 0), Virus: "Eicar", Sender: "a@pec-a.test", Recipients: []string{"b@pec-b.test"}, Raw: []byte("infected 31")})
	b.Keep(store.QuarantineItem{Identificativo: "young@pec-a.test", Time: now.AddDate(0, -29, 0), Virus: "Eicar", Sender: "a@pec-a.test", Recipients: []string{"b@pec-b.test"}, QueueID: "4QABC", Raw: []byte("infected 29")})
	commit(t, s, b)
	n, err := s.PurgeQuarantine(context.Background(), now)
	if err != nil || n != 1 {
		t.Fatalf("PurgeQuarantine: %d, %v; want 1", n, err)
	}
	old, _ := s.Quarantined(context.Background(), "old@pec-a.test")
	young, _ := s.Quarantined(context.Background(), "young@pec-a.test")
	if len(old) != 0 || len(young) != 1 {
		t.Fatalf("after purge: %d old, %d young", len(old), len(young))
	}
	y := young[0]
	if !bytes.Equal(y.Raw, []byte("infected 29")) || y.Virus != "Eicar" || y.QueueID != "4QABC" || len(y.Recipients) != 1 || !y.Time.Equal(now.AddDate(0, -29, 0)) {
		t.Errorf("kept item: %+v", y)
	}
	if n, _ := s.PurgeQuarantine(context.Background(), now); n != 0 {
		t.Errorf("second purge removed %d", n)
	}
}

func testSeals(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.GetSeal(ctx, "2026-11-19"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSeal on empty store: %v", err)
	}
	s1 := store.Seal{Day: "2026-11-18", FirstSeq: 1, LastSeq: 9, Count: 9, Hash: []byte{1}, Signed: []byte{2}, Token: []byte{3}, Created: T0}
	s2 := store.Seal{Day: "2026-11-19", FirstSeq: 10, LastSeq: 12, Count: 3, Hash: []byte{4}, PrevHash: []byte{1}, Signed: []byte{5}, Token: []byte{6}, Created: T0}
	for _, x := range []store.Seal{s1, s2} {
		if err := s.PutSeal(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutSeal(ctx, s1); !errors.Is(err, store.ErrExists) {
		t.Errorf("sealing a day twice: %v", err)
	}
	got, err := s.GetSeal(ctx, "2026-11-19")
	if err != nil || got.Count != 3 || !bytes.Equal(got.PrevHash, []byte{1}) || !bytes.Equal(got.Token, []byte{6}) {
		t.Errorf("GetSeal: %+v %v", got, err)
	}
	last, err := s.LastSeal(ctx, "2026-11-19")
	if err != nil || last.Day != "2026-11-18" {
		t.Errorf("LastSeal before 19: %+v %v", last, err)
	}
	if _, err := s.LastSeal(ctx, "2026-11-18"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LastSeal before first: %v", err)
	}
}

func testLeases(t *testing.T, e *env) {
	ctx := context.Background()
	s := e.db()
	ok := func(name, owner string, at time.Time) bool {
		t.Helper()
		e.clock.Set(at)
		got, err := s.TryLease(ctx, name, owner, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if !ok("sweeper", "a", T0) || ok("sweeper", "b", T0.Add(30*time.Second)) || !ok("sweeper", "a", T0.Add(30*time.Second)) {
		t.Fatal("lease not exclusive or not renewable")
	}
	if !ok("other", "b", T0) {
		t.Fatal("leases are per name")
	}
	if ok("sweeper", "b", T0.Add(89*time.Second)) {
		t.Fatal("renewed lease taken over before its new end")
	}
	if !ok("sweeper", "b", T0.Add(91*time.Second)) {
		t.Fatal("expired lease not taken over")
	}
	if ok("sweeper", "a", T0.Add(92*time.Second)) {
		t.Fatal("old owner took back a lease held by another")
	}
	if _, err := s.TryLease(ctx, "", "a", time.Minute); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("lease without a name: %v", err)
	}
	if _, err := s.TryLease(ctx, "x", "a", 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("lease without a duration: %v", err)
	}
}
