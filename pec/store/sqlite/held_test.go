package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// fill sets every exported field of the struct v points to (recursively) to a non-zero
// value, except the named ones.
func fill(t *testing.T, v reflect.Value, skip map[string]bool, n *int) {
	t.Helper()
	typ := v.Type()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), typ.Field(i)
		if !sf.IsExported() || skip[typ.Name()+"."+sf.Name] {
			continue
		}
		*n++
		switch {
		case sf.Type == reflect.TypeOf(time.Time{}):
			f.Set(reflect.ValueOf(time.Unix(1_700_000_000, int64(*n)).UTC()))
		case sf.Type == reflect.TypeOf(time.Duration(0)):
			f.SetInt(int64(*n) * int64(time.Second))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf("v%d", *n))
		case f.Kind() == reflect.Int64 || f.Kind() == reflect.Int:
			f.SetInt(int64(*n))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Uint8:
			f.SetBytes([]byte{byte(*n), 0, 255})
		case f.Kind() == reflect.Slice:
			s := reflect.MakeSlice(sf.Type, 2, 2)
			for j := 0; j < 2; j++ {
				if s.Index(j).Kind() == reflect.Struct {
					fill(t, s.Index(j), skip, n)
				} else {
					s.Index(j).SetString(fmt.Sprintf("e%d.%d", *n, j))
				}
			}
			f.Set(s)
		case f.Kind() == reflect.Struct:
			fill(t, f, skip, n)
		default:
			t.Fatalf("fill: %s.%s of kind %s: teach fill (and the held codec) about it", typ.Name(), sf.Name, f.Kind())
		}
	}
}

// TestHeldCodecCoversEveryField: every field a caller sets in a Batch survives the stored
// form of OnConfirm / OnExpiry. A field added to a store type without adding it to the wire
// types (and a new codec version, if the shape changes) fails here.
func TestHeldCodecCoversEveryField(t *testing.T) {
	// Set by the store at Commit, never by the caller; and a held record's batches hold no
	// held records and no delivery marks.
	skip := map[string]bool{"Batch.Holds": true, "Batch.Deliveries": true, "Event.Seq": true, "OutboxItem.ID": true, "OutboxItem.State": true,
		"OutboxItem.Attempts": true, "OutboxItem.NextAttempt": true, "OutboxItem.LastError": true,
		"OutboxItem.ClaimedBy": true, "OutboxItem.LeaseUntil": true, "OutboxItem.SentAt": true, "QuarantineItem.ID": true}
	var b store.Batch
	n := 0
	fill(t, reflect.ValueOf(&b).Elem(), skip, &n)
	data, err := encodeBatch(&b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Errorf("round trip lost data:\n got %+v\nwant %+v\nstored %s", got, b, data)
	}
	if e, _ := decodeBatch(nil); !e.Empty() {
		t.Error("nil is not the empty batch")
	}
	if d, _ := encodeBatch(&store.Batch{}); d != nil {
		t.Errorf("empty batch stored as %q", d)
	}
	if _, err := decodeBatch([]byte(`{"v":2,"events":[]}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("unknown version: %v", err)
	}
}

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
