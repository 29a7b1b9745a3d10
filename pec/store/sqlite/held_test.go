package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// oldSchema is a new database file at schema version v (the first v migrations), open
// outside the store, as a program of that version left it.
func oldSchema(t *testing.T, v int) (string, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.db", v))
	db, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(fmt.Sprintf(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (%d);`, v) +
		strings.Join(migrations[:v], "")); err != nil {
		t.Fatal(err)
	}
	return path, db
}

// TestMigrationToV2KeepsData: a database written by the first schema opens under the
// current one with its data, and gains the held records.
func TestMigrationToV2KeepsData(t *testing.T) {
	path, db := oldSchema(t, 1)
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

// TestMigrationToV5KeepsOutbox: a database of schema 4 with a pending and a sent outbox item
// (the bytes still in outbox.raw) migrates to outbox_raw with every byte; the pending item is
// claimed with its bytes, and a new item after it gets its own.
func TestMigrationToV5KeepsOutbox(t *testing.T) {
	path, db := oldSchema(t, 4)
	pending := append([]byte("Message-ID: <p@x>\r\n\r\n"), 0, 0xff, '\r', '\n')
	if _, err := db.Exec(`INSERT INTO outbox (message_id, kind, identificativo, mail_from, rcpts, raw, created, state)
		VALUES ('<s@x>', 'accettazione', 'i@x', 'f@x', '["a@x"]', x'73656e74', 1, 'sent'),
		('<p@x>', 'consegna-completa', 'i@x', 'f@x', '["a@x"]', ?, 2, 'pending')`, pending); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var sent []byte
	if err := s.r.QueryRow(`SELECT raw FROM outbox_raw WHERE id = (SELECT id FROM outbox WHERE message_id = '<s@x>')`).Scan(&sent); err != nil || string(sent) != "sent" {
		t.Fatalf("sent item's bytes after the migration: %q %v", sent, err)
	}
	items, err := s.ClaimOutbox(ctx, store.Claim{Owner: "w", Lease: time.Minute})
	if err != nil || len(items) != 1 || !bytes.Equal(items[0].Raw, pending) {
		t.Fatalf("claim after the migration: %+v %v", items, err)
	}
	if err := s.Commit(ctx, &store.Batch{Outbox: []store.OutboxItem{{MessageID: "<n@x>", Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte("new")}}}); err != nil {
		t.Fatal(err)
	}
	items, err = s.ClaimOutbox(ctx, store.Claim{Owner: "w2", Lease: time.Minute})
	if err != nil || len(items) != 1 || string(items[0].Raw) != "new" {
		t.Fatalf("claim of a new item: %+v %v", items, err)
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
