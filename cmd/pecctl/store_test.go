package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
)

// TestStoreMigrate: a SQLite store with two sealed days is migrated to PostgreSQL; with the
// configuration switched to the new store, log verify passes for both days (the seal chain
// survived: same events, same sequence numbers, same seals), searches answer alike, the
// next event continues the numbering, a second migration into the now full store is
// refused, and a change behind the triggers is still found by verify.
func TestStoreMigrate(t *testing.T) {
	e := newLogEnv(t, "sqlite")
	if code, out, stderr := e.run(t, "log", "seal", "-config", e.config, "-due"); code != 0 {
		t.Fatalf("seal -due: %d\n%s%s", code, out, stderr)
	}
	_, before, _ := e.run(t, "log", "export", "-config", e.config, "-format", "json")
	dsn := pgtest.Shared(t).Schema(t)
	code, out, stderr := e.run(t, "store", "migrate", "-from", "sqlite:"+e.db, "-to", "postgres:"+dsn)
	// seal -due sealed every day from the first event to yesterday.
	var seals int
	if i := strings.Index(out, "seals "); i >= 0 {
		fmt.Sscanf(out[i:], "seals %d rows", &seals) //nolint:errcheck
	}
	if code != 0 || !strings.Contains(out, "events       8 rows") || seals < 2 ||
		!strings.Contains(out, fmt.Sprintf("last sequence number 8; %d sealed days compared", seals)) {
		t.Fatalf("migrate: %d\n%s%s", code, out, stderr)
	}
	// Switch the configuration to the new store.
	cfg := string(readTestFile(t, e.config))
	cfg = strings.Replace(cfg, `store: {driver: sqlite, dsn: "`+e.db+`"}`, `store: {driver: postgres, dsn: "`+dsn+`"}`, 1)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.db, e.store = dsn, store.Config{Driver: "postgres", DSN: dsn}
	for _, day := range []string{"2026-09-14", "2026-09-15"} {
		code, out, stderr := e.run(t, "log", "verify", "-config", e.config, "-day", day)
		if code != 0 || !strings.Contains(out, day+": OK") {
			t.Fatalf("verify %s on PostgreSQL: %d\n%s%s", day, code, out, stderr)
		}
	}
	if _, after, _ := e.run(t, "log", "export", "-config", e.config, "-format", "json"); after != before {
		t.Errorf("export differs after the migration:\n%s\n%s", before, after)
	}
	st, err := storeopen.Open(e.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	next := store.Event{Time: time.Date(2026, 9, 16, 9, 0, 0, 0, rome), Kind: store.KindAccettazione, Identificativo: "id9@pec-a.test"}
	err = st.Commit(context.Background(), &store.Batch{Events: []store.Event{next}})
	var got []int64
	if err == nil {
		err = st.ScanLog(context.Background(), store.Query{Identificativo: "id9@pec-a.test"}, func(e *store.Event) error {
			got = append(got, e.Seq)
			return nil
		})
	}
	st.Close()
	if err != nil || len(got) != 1 || got[0] != 9 {
		t.Fatalf("next event after the migration: %v %v, want seq 9", got, err)
	}
	if code, _, stderr := e.run(t, "store", "migrate", "-from", "sqlite:"+e.dbFile(), "-to", "postgres:"+dsn); code != 1 || !strings.Contains(stderr, "not empty") {
		t.Errorf("second migration: %d %s", code, stderr)
	}
	e.tamper(t, `UPDATE events SET subject = 'changed' WHERE seq = 2`)
	if code, out, _ := e.run(t, "log", "verify", "-config", e.config, "-day", "2026-09-14"); code != 1 || !strings.Contains(out, "[2]") {
		t.Errorf("verify after tampering on PostgreSQL: %d\n%s", code, out)
	}
	if code, _, _ := e.run(t, "store", "migrate", "-from", "postgres:"+dsn, "-to", "sqlite:/tmp/x.db"); code != 1 {
		t.Error("postgres to sqlite accepted")
	}
}
