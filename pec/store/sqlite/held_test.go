package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestMigrationToV2KeepsData: a database written by the first schema opens under the
// current one with its data, and gains the held records.
func TestMigrationToV2KeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);` + migrations[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO tracking (identificativo, recipient, state, sent_at, due12, due22, due24, sender, subject, message_id)
		VALUES ('old@pec-a.test', 'r@pec-b.test', 'sent', 1, 2, 3, 4, 's', 'subj', 'm')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	if err := s.r.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations) || v < 2 {
		t.Fatalf("version %d %v", v, err)
	}
	rows, err := s.Tracking(context.Background(), "old@pec-a.test")
	if err != nil || len(rows) != 1 || rows[0].Due12 != fromNS(2) {
		t.Fatalf("old row: %+v %v", rows, err)
	}
	h := storetest.HeldStep(1, storetest.T0)
	if err := s.Commit(context.Background(), &store.Batch{Holds: []store.Held{h}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Confirm(context.Background(), h.Token, storetest.T0); err != nil || got.State != store.HeldReleased {
		t.Fatalf("Confirm after migration: %v", err)
	}
}

// TestLeasesOnTheDatabaseClock: without an injected clock, lease expiry is decided by
// SQLite's clock, whatever time the caller believes it is.
func TestLeasesOnTheDatabaseClock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pec.db")
	a, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if ok, err := a.TryLease(ctx, "sweeper", "node-1", 600*time.Millisecond); !ok || err != nil {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	if ok, _ := b.TryLease(ctx, "sweeper", "node-2", time.Minute); ok {
		t.Fatal("second owner took a held lease")
	}
	if err := a.Commit(ctx, &store.Batch{Outbox: []store.OutboxItem{{MessageID: "<m@x>", Kind: "accettazione",
		Rcpts: []string{"a@x"}, Raw: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	items, err := a.ClaimOutbox(ctx, store.Claim{Owner: "node-1", Lease: 600 * time.Millisecond})
	after := time.Now()
	if err != nil || len(items) != 1 {
		t.Fatalf("claim: %d %v", len(items), err)
	}
	// SQLite's clock has millisecond precision.
	if lu := items[0].LeaseUntil; lu.Before(before.Add(600*time.Millisecond-time.Millisecond)) || lu.After(after.Add(600*time.Millisecond)) {
		t.Errorf("lease until %v, want now + 600ms (%v .. %v)", lu, before, after)
	}
	if got, _ := b.ClaimOutbox(ctx, store.Claim{Owner: "node-2", Lease: time.Minute}); len(got) != 0 {
		t.Fatal("second owner claimed a leased item")
	}
	time.Sleep(700 * time.Millisecond)
	if ok, err := b.TryLease(ctx, "sweeper", "node-2", time.Minute); !ok || err != nil {
		t.Fatalf("expired lease not taken over: %v %v", ok, err)
	}
	if got, _ := b.ClaimOutbox(ctx, store.Claim{Owner: "node-2", Lease: time.Minute}); len(got) != 1 {
		t.Fatal("expired claim not taken over")
	}
}
