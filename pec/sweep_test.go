package pec_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// tracked submits a message to bruno (certified) and oscar (esterno) and confirms it: bruno's
// tracking row starts.
func tracked(t *testing.T, f *fixture) *pec.Submitted {
	t.Helper()
	res, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatal(err)
	}
	f.confirm(t, res)
	return res
}

func (f *fixture) sweep(t *testing.T) pec.Swept {
	t.Helper()
	sw, err := f.ap.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// notices returns the timeout notices in the outbox, by kind.
func (f *fixture) notices(t *testing.T) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	for _, it := range f.outbox(t) {
		if it.Kind == "preavviso-12h" || it.Kind == "preavviso-24h" {
			out[it.Kind] = append(out[it.Kind], it.Raw)
		}
	}
	return out
}

// The three cases of pec-spec.md §6.3, each notice exactly once whatever the number of
// sweeps, and only for the certified recipient.
func TestSweepCases(t *testing.T) {
	for _, c := range []struct {
		name           string
		receipt        store.Input // applied at receiptAt after dispatch ("" = none)
		receiptAt      time.Duration
		want12, want24 int
		final          store.State
	}{
		{"nothing arrives", "", 0, 1, 1, store.StateNotified24},
		{"presa in carico in time, no consegna", store.InputPresaInCarico, time.Hour, 0, 1, store.StateNotified24},
		{"consegna between 12 h and 24 h", store.InputConsegna, 13 * time.Hour, 1, 0, store.StateDelivered},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			res := tracked(t, f)
			sent := f.now
			for _, step := range []time.Duration{time.Hour, 11*time.Hour + 59*time.Minute, 12 * time.Hour, 12*time.Hour + time.Minute,
				13 * time.Hour, 21*time.Hour + 59*time.Minute, 22 * time.Hour, 23 * time.Hour, 25 * time.Hour} {
				if c.receipt != "" && step >= c.receiptAt && f.now.Sub(sent) < c.receiptAt {
					b := &store.Batch{}
					b.Apply(store.Transition{Identificativo: res.Identificativo, Recipient: "bruno@pec-b.test", Input: c.receipt, At: sent.Add(c.receiptAt)})
					if err := f.st.Commit(context.Background(), b); err != nil {
						t.Fatal(err)
					}
				}
				f.now = sent.Add(step)
				f.sweep(t)
				f.sweep(t) // a second sweep at the same instant sends nothing more
			}
			n := f.notices(t)
			if len(n["preavviso-12h"]) != c.want12 || len(n["preavviso-24h"]) != c.want24 {
				t.Fatalf("12 h notices %d, 24 h notices %d; want %d and %d", len(n["preavviso-12h"]), len(n["preavviso-24h"]), c.want12, c.want24)
			}
			rows, err := f.st.Tracking(context.Background(), res.Identificativo)
			if err != nil || len(rows) != 1 || rows[0].State != c.final {
				t.Fatalf("tracking %+v %v, want one row (bruno) in %s", rows, err, c.final)
			}
			for kind, msgs := range n {
				for _, m := range msgs {
					cl := classify(t, m, f.kr.CA)
					want := map[string]string{"preavviso-12h": "4.4.7 - ", "preavviso-24h": "5.4.7 - "}[kind]
					if !cl.Conforms() || cl.Daticert.Dati.Consegna != "bruno@pec-b.test" || cl.Daticert.Dati.Identificativo != res.Identificativo ||
						len(cl.Daticert.Dati.ErroreEsteso) < 8 || cl.Daticert.Dati.ErroreEsteso[:8] != want {
						t.Errorf("%s: conforms %v, daticert %+v", kind, cl.Conforms(), cl.Daticert.Dati)
					}
				}
			}
		})
	}
}

// A notice whose row moved meanwhile (a consegna committed between the sweep's read and its
// commit) is not sent: the transition conflicts and the whole batch is rolled back.
func TestSweepSupersededByReceipt(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	res := tracked(t, f)
	f.now = f.now.Add(12*time.Hour + time.Second)
	f.st.beforeCommit = func() {
		b := &store.Batch{}
		b.Apply(store.Transition{Identificativo: res.Identificativo, Recipient: "bruno@pec-b.test", Input: store.InputConsegna, At: f.now})
		f.st.beforeCommit = nil
		if err := f.st.Memory.Commit(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	sw := f.sweep(t)
	if sw.Superseded != 1 || sw.Notice12 != 0 || len(f.notices(t)) != 0 {
		t.Fatalf("swept %+v, notices %d", sw, len(f.notices(t)))
	}
}

// Pages are pipelined (the next one is read and signed while one commits): over 600 due rows,
// three pages, every row gets its notice once. A store that fails at the third page's commit
// stops the sweep with a temporary failure after two pages; the next sweep sends the rest, and
// nothing twice.
func TestSweepPages(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	const n = 600
	b := &store.Batch{}
	for i := range n {
		id := fmt.Sprintf("20261122.sweep.%04d@pec-a.test", i)
		d := &daticert.Postacert{Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno}
		d.Intestazione.Mittente, d.Intestazione.Risposte = "alice@pec-a.test", "alice@pec-a.test"
		d.Intestazione.Destinatari = []daticert.Destinatario{{Tipo: daticert.Certificato, Addr: "bruno@pec-b.test"}}
		d.Intestazione.Oggetto = daticert.Subject("pagine")
		d.Dati = daticert.Dati{GestoreEmittente: provider.Name, Data: daticert.Data{Zona: "+0100", Giorno: "22/11/2026", Ora: "10:00:00"},
			Identificativo: id, Msgid: "<p@x>", Ricevuta: daticert.Completa}
		b.Track(store.TrackInsert{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: f.now,
			Sender: "alice@pec-a.test", Subject: "pagine", Data: daticert.Marshal(d)})
	}
	if err := f.st.Memory.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(12*time.Hour + time.Second)
	commits := 0
	var hook func()
	hook = func() {
		if commits++; commits == 2 {
			f.st.broken = true // from the third commit on
			return
		}
		f.st.beforeCommit = hook
	}
	f.st.beforeCommit = hook
	sw, err := f.ap.Sweep(context.Background())
	var tmp *store.Temporary
	if !errors.As(err, &tmp) || sw.Notice12 != 512 || sw.Failed != n-512 {
		t.Fatalf("sweep with the store failing at the third page: %+v, %v; want 512 notices, %d failed and a temporary failure", sw, err, n-512)
	}
	f.st.broken, f.st.beforeCommit = false, nil
	if sw = f.sweep(t); sw.Notice12 != n-512 || sw.Failed != 0 {
		t.Fatalf("second sweep: %+v, want %d notices", sw, n-512)
	}
	if sw = f.sweep(t); sw.Notice12 != 0 {
		t.Fatalf("third sweep: %+v, want nothing left", sw)
	}
	seen := map[string]int{}
	for {
		items := f.outbox(t)
		if len(items) == 0 {
			break
		}
		for _, it := range items {
			if it.Kind == "preavviso-12h" {
				seen[it.Identificativo]++
			}
			if err := f.st.MarkOutbox(context.Background(), it.ID, "t", store.Mark{State: store.OutboxSent, At: f.now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s: %d notices", id, c)
		}
	}
	if len(seen) != n {
		t.Errorf("%d rows got a notice, want %d", len(seen), n)
	}
}
