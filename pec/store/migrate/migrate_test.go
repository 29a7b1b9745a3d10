package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// TestEveryTableCarriesOn: a SQLite store with work in flight in every table (a pending,
// a sent and a parked outbox item, a tracking row due for its notice, a waiting and a final
// held record, an open and a closed delivery record, a quarantined message, a seal) is
// migrated, and the PostgreSQL store carries on where SQLite stopped: the pending item is
// claimed, the notice is due, the held step is confirmed once, the closed delivery is done,
// numbers continue after the old ones.
func TestEveryTableCarriesOn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pec.db")
	src, err := sqlite.Open(path, sqlite.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	T0 := storetest.T0
	b := &store.Batch{Events: []store.Event{storetest.SampleEvent(1, T0), storetest.SampleEvent(2, T0.AddDate(0, -2, 0))}}
	b.Track(store.TrackInsert{Identificativo: "tr@pec-a.test", Recipient: "r@pec-b.test", SentAt: T0, Data: []byte{0, 1, 255}})
	for _, id := range []string{"<sent@x>", "<parked@x>", "<pending@x>"} {
		b.Send(store.OutboxItem{MessageID: id, Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte(id)})
	}
	b.Keep(store.QuarantineItem{Identificativo: "q@pec-a.test", Time: T0, Virus: "Eicar", Raw: []byte("infected")})
	waiting, final := storetest.HeldStep(1, T0), storetest.HeldStep(2, T0)
	final.Token, final.State, final.OnConfirm, final.OnExpiry = "", store.HeldFinal, store.Batch{}, store.Batch{}
	b.Hold(waiting)
	b.Hold(final)
	must(t, src.Commit(ctx, b))
	items, err := src.ClaimOutbox(ctx, store.Claim{Owner: "n1", Lease: time.Minute})
	if err != nil || len(items) != 3 {
		t.Fatalf("claim: %d %v", len(items), err)
	}
	must(t, src.MarkOutbox(ctx, items[0].ID, "n1", store.Mark{State: store.OutboxSent, At: T0}))
	must(t, src.MarkOutbox(ctx, items[1].ID, "n1", store.Mark{State: store.OutboxParked, At: T0, Error: "550 no"}))
	must(t, src.MarkOutbox(ctx, items[2].ID, "n1", store.Mark{State: store.OutboxPending, Release: true}))
	// The sent item's bytes were purged (store.PurgeSentOutbox): the item is copied all the same.
	if n, err := src.PurgeSentOutbox(ctx, T0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("purge in SQLite: %d %v", n, err)
	}
	open, done := store.DeliveryKey{Mailbox: "m@pec-a.test", MessageID: "<open@x>"}, store.DeliveryKey{Mailbox: "m@pec-a.test", MessageID: "<done@x>"}
	if _, err := src.ClaimDeliveries(ctx, "lmtpd/n1", time.Minute, []store.DeliveryKey{open, done}); err != nil {
		t.Fatal(err)
	}
	must(t, src.Commit(ctx, &store.Batch{Deliveries: []store.DeliveryMark{{DeliveryKey: done, Owner: "lmtpd/n1", Done: true, Outcome: "stored", At: T0}}}))
	must(t, src.PutSeal(ctx, store.Seal{Day: "2026-11-19", FirstSeq: 1, LastSeq: 2, Count: 2, Hash: []byte{1}, Signed: []byte{2}, Token: []byte{3}, Created: T0}))
	src.Close()

	dsn := pgtest.Shared(t).Schema(t)
	rep, err := SQLiteToPostgres(ctx, path, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastSeq != 2 || rep.Seals != 1 || rep.Rows["outbox"] != 3 || rep.Rows["held"] != 2 || rep.Rows["deliveries"] != 2 ||
		rep.Rows["event_addrs"] != 4 || rep.Rows["quarantine"] != 1 || rep.Rows["tracking"] != 1 {
		t.Fatalf("report %+v", rep)
	}
	dst, err := postgres.Open(ctx, dsn, postgres.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	got, err := dst.ClaimOutbox(ctx, store.Claim{Owner: "n2", Lease: time.Minute})
	if err != nil || len(got) != 1 || got[0].MessageID != "<pending@x>" || got[0].ID != items[2].ID {
		t.Fatalf("claim on PostgreSQL: %+v %v", got, err)
	}
	if sent, _ := dst.ListOutbox(ctx, store.OutboxSent, 0); len(sent) != 1 || sent[0].MessageID != "<sent@x>" {
		t.Errorf("sent: %+v", sent)
	}
	if n, err := dst.PurgeSentOutbox(ctx, T0.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("purge on PostgreSQL after the copy: %d %v, want nothing left to purge", n, err)
	}
	parked, _ := dst.ListOutbox(ctx, store.OutboxParked, 0)
	if len(parked) != 1 || parked[0].LastError != "550 no" || parked[0].Attempts != 1 {
		t.Errorf("parked: %+v", parked)
	}
	if due, err := dst.DueTracking(ctx, T0.Add(12*time.Hour), 0); err != nil || len(due) != 1 || string(due[0].Data) != "\x00\x01\xff" {
		t.Errorf("due on PostgreSQL: %+v %v", due, err)
	}
	if h, err := dst.Confirm(ctx, waiting.Token, T0.Add(time.Second)); err != nil || h.State != store.HeldReleased {
		t.Fatalf("confirm on PostgreSQL: %v", err)
	}
	if h, err := dst.LookupHeld(ctx, final.Key, T0); err != nil || h.State != store.HeldFinal {
		t.Errorf("final record: %v", err)
	}
	cl, err := dst.ClaimDeliveries(ctx, "lmtpd/n1", time.Minute, []store.DeliveryKey{open, done})
	if err != nil || cl[0].State != store.DeliveryOpen || cl[1].State != store.DeliveryDone || cl[1].Outcome != "stored" {
		t.Errorf("deliveries on PostgreSQL: %+v %v", cl, err)
	}
	if q, _ := dst.Quarantined(ctx, "q@pec-a.test"); len(q) != 1 || string(q[0].Raw) != "infected" {
		t.Errorf("quarantine: %+v", q)
	}
	// The confirmation logged the held step's events after the copied ones, and queued its
	// receipt with a new id.
	evs := storetest.Search(t, dst, store.Query{AfterSeq: 2})
	if len(evs) == 0 || evs[0].Seq != 3 {
		t.Errorf("events after the migration: %+v", evs)
	}
	next, _ := dst.ClaimOutbox(ctx, store.Claim{Owner: "n3", Lease: time.Minute})
	for _, o := range next {
		if o.ID <= items[2].ID {
			t.Errorf("new outbox item %s got id %d, not after %d", o.MessageID, o.ID, items[2].ID)
		}
	}
	if _, err := SQLiteToPostgres(ctx, path, dsn); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("second migration: %v, want ErrNotEmpty", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
