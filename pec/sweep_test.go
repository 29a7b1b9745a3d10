package pec_test

import (
	"context"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
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
