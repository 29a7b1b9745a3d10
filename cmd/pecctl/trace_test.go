package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

// pecctl trace tells a transaction's story: its events in order, each recipient's state at
// the sender's provider, external recipients as such; by identificativo, by the client's
// Message-ID, and every transaction of a sender since a date.
func TestTrace(t *testing.T) {
	db := filepath.Join(t.TempDir(), "pec.db")
	st, err := sqlite.Open(db, sqlite.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	id := "20261130100000.n1.abc@pec-a.test"
	rcpts := []store.Recipient{{Addr: "bruno@pec-b.test", Type: store.Certified}, {Addr: "oscar@posta.test", Type: store.External}}
	ev := store.Event{Time: at, Identificativo: id, Sender: "alice@pec-a.test", Recipients: rcpts, Subject: "Fattura",
		MessageID: "<c1@client>", Gestore: "Provider A", QueueID: "4XyZ"}
	b := &store.Batch{}
	for _, k := range []store.EventKind{store.KindAccettazione, store.KindBustaTrasporto} {
		e := ev
		e.Kind = k
		b.Log(e)
	}
	b.Track(store.TrackInsert{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: at, Sender: "alice@pec-a.test", Subject: "Fattura"})
	e := ev
	e.Time, e.Kind, e.About, e.QueueID = at.Add(time.Minute), store.KindRicezioneRicevuta, []string{"bruno@pec-b.test"}, ""
	b.Log(e)
	b.Apply(store.Transition{Identificativo: id, Recipient: "bruno@pec-b.test", Input: store.InputConsegna, At: at.Add(time.Minute)})
	other := ev
	other.Identificativo, other.Kind, other.MessageID = "20261130110000.n1.def@pec-a.test", store.KindAccettazione, "<c2@client>"
	other.Time = at.Add(time.Hour)
	b.Log(other)
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	st.Close()

	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := dispatch(append([]string{"trace", "-db", db}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	out, code := run(id)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"transaction " + id, "bruno@pec-b.test", "delivered; consegna 2026-11-30 11:01:00",
		"oscar@posta.test", "not tracked here (external", "accettazione", "busta-trasporto", "queue=4XyZ", "ricezione-ricevuta"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "accettazione"), strings.Index(out, "ricezione-ricevuta"); i > j {
		t.Error("events not in order")
	}
	out, code = run("--json", "--msgid", "<c1@client>", "--since", "2026-11-01")
	var s story
	if code != 0 || json.Unmarshal([]byte(strings.TrimSpace(out)), &s) != nil || s.Identificativo != id || len(s.Events) != 3 {
		t.Fatalf("--msgid: exit %d, %s", code, out)
	}
	out, code = run("--from", "alice@pec-a.test", "--since", "2026-11-30")
	if code != 0 || strings.Count("\n"+out, "\ntransaction ") != 2 {
		t.Fatalf("--from: exit %d, %s", code, out)
	}
	if _, code = run("nosuch@pec-a.test"); code != 1 {
		t.Errorf("unknown identificativo: exit %d", code)
	}
	if _, code = run(); code != 2 {
		t.Errorf("no argument: exit %d", code)
	}
}
