//go:build integration

package integration

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

// A running pec-milter seals yesterday's log by itself (issue 20 item 2): the leased job
// "seal" signs and timestamps the day with the lab TSA, once; `pecctl log verify` accepts the
// seal; a restarted pec-milter does not seal the day again.
func TestSealJobInPecMilter(t *testing.T) {
	t.Parallel()
	l, a, _, _ := pecLab(t)
	rome, _ := time.LoadLocation("Europe/Rome")
	yesterday := time.Now().In(rome).AddDate(0, 0, -1)
	day := yesterday.Format("2006-01-02")
	p := startPrivateAPWith(t, l, a, apOptions{keepSeal: true, before: func(p *privateAP) {
		st, err := sqlite.Open(p.db, sqlite.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		b := &store.Batch{}
		b.Log(store.Event{Time: time.Date(yesterday.Year(), yesterday.Month(), yesterday.Day(), 12, 0, 0, 0, rome),
			Identificativo: "20260101.seal.test@pec-a.test", Kind: store.KindAccettazione, Sender: "alice@pec-a.test", Subject: "ieri"})
		if err := st.Commit(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}})
	st, err := sqlite.Open(p.db, sqlite.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var seal *store.Seal
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		seal, err = st.GetSeal(context.Background(), day)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) {
			t.Fatalf("no seal of %s from the running pec-milter: %v", day, err)
		}
	}
	if seal.Count != 1 {
		t.Errorf("seal of %s covers %d events, want 1", day, seal.Count)
	}
	db, err := sql.Open("sqlite3", "file:"+p.db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var owner string
	if err := db.QueryRow("SELECT owner FROM leases WHERE name = 'seal'").Scan(&owner); err != nil || !strings.HasPrefix(owner, "pec-milter/") {
		t.Errorf("seal lease owner %q (%v)", owner, err)
	}
	out, err := exec.Command(pecctl(t), "log", "verify", "-config", p.cfg, "-day", day).CombinedOutput()
	if err != nil {
		t.Fatalf("pecctl log verify: %v\n%s", err, out)
	}
	// Restarted, the job finds the day sealed and seals nothing again.
	p.killMilter()
	p.startMilter(t)
	time.Sleep(3 * time.Second)
	log, _ := os.ReadFile(p.logf.Name())
	if strings.Contains(string(log), "daily log seal failed") || strings.Count(string(log), `"sealed"`) > 1 {
		t.Errorf("the seal job failed or sealed twice:\n%s", log)
	}
	again, err := st.GetSeal(context.Background(), day)
	if err != nil || string(again.Hash) != string(seal.Hash) {
		t.Errorf("the seal changed after a restart: %v", err)
	}
}
