package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestAppendOnlyTriggers: the log has no update or delete path in the API, and the schema
// refuses a raw UPDATE or DELETE too.
func TestAppendOnlyTriggers(t *testing.T) {
	s := openTemp(t)
	if err := s.Commit(context.Background(), &store.Batch{Events: []store.Event{storetest.SampleEvent(1, storetest.T0)},
		Outbox: []store.OutboxItem{{MessageID: "<m@x>", Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE events SET subject = 'changed'`,
		`DELETE FROM events`,
		`UPDATE event_addrs SET addr = 'x@y'`,
		`DELETE FROM event_addrs`,
		`DELETE FROM outbox`,
		`DELETE FROM outbox_raw`, // a pending item's bytes (only a sent item's may go)
	} {
		_, err := s.w.Exec(q)
		if err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "never deleted") {
			t.Errorf("%s: err %v, want the trigger's abort", q, err)
		}
	}
	evs := storetest.Search(t, s, store.Query{})
	if len(evs) != 1 || evs[0].Subject != storetest.SampleEvent(1, storetest.T0).Subject {
		t.Errorf("log changed: %+v", evs)
	}
}

func TestMigrationVersionAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pec.db")
	for i := 0; i < 2; i++ {
		s, err := Open(path, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := s.r.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations) {
			t.Fatalf("schema version %d (%v), want %d", v, err, len(migrations))
		}
		var mode string
		if err := s.r.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("journal_mode %q %v", mode, err)
		}
		var sync int
		if err := s.w.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
			t.Fatalf("synchronous %d %v, want 2 (FULL)", sync, err)
		}
		s.Close()
	}
	db, _ := sql.Open("sqlite3", path)
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Deps{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema: %v", err)
	}
}

// TestConcurrentCommitsGroup: many goroutines commit at once; every batch lands exactly once,
// and a failing batch inside a group does not take the others down.
func TestConcurrentCommitsGroup(t *testing.T) {
	s := openTemp(t)
	const workers, per = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				b := &store.Batch{Events: []store.Event{storetest.SampleEvent(w*per+i, storetest.T0)}}
				if i%10 == 0 { // a stale notice: must fail alone
					b.Apply(store.Transition{Identificativo: "nope", Recipient: "x@y", Input: store.InputNotice12h, At: storetest.T0})
					if err := s.Commit(context.Background(), b); err == nil {
						errs <- fmt.Errorf("stale notice committed")
					}
					continue
				}
				if err := s.Commit(context.Background(), b); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(storetest.Search(t, s, store.Query{})); n != workers*per*9/10 {
		t.Errorf("%d events, want %d", n, workers*per*9/10)
	}
}

const childEnv = "PEC_STORE_TEST_CHILD"

// TestTwoProcesses runs this test binary twice as children writing to one database file at
// the same time, each with several goroutines. Afterwards exactly 2N events are there and
// no "database is locked" surfaced.
func TestTwoProcesses(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		return // the child's work is in TestMain
	}
	path := filepath.Join(t.TempDir(), "shared.db")
	const n = 400
	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for i := 0; i < 2; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path+","+strconv.Itoa(i)+","+strconv.Itoa(n))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v\n%s", i, err, outs[i])
		}
		if strings.Contains(outs[i].String(), "locked") {
			t.Errorf("child %d saw a lock error:\n%s", i, outs[i])
		}
	}
	s, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := storetest.Search(t, s, store.Query{})
	if len(evs) != 2*n {
		t.Fatalf("%d events, want %d", len(evs), 2*n)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.Identificativo] {
			t.Fatalf("duplicate %s", e.Identificativo)
		}
		seen[e.Identificativo] = true
	}
}

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(child(v))
	}
	os.Exit(m.Run())
}

// child appends n events to the database with 4 goroutines; both children also open the
// database (and run the migration) at the same moment.
func child(arg string) int {
	parts := strings.Split(arg, ",")
	id, _ := strconv.Atoi(parts[1])
	n, _ := strconv.Atoi(parts[2])
	s, err := Open(parts[0], Deps{})
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	defer s.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				e := storetest.SampleEvent(i, time.Now())
				e.Identificativo = fmt.Sprintf("child%d.%d@pec-a.test", id, i)
				if err := s.Commit(context.Background(), &store.Batch{Events: []store.Event{e}}); err != nil {
					mu.Lock()
					failed++
					fmt.Println("commit:", err)
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if failed > 0 {
		return 1
	}
	return 0
}
