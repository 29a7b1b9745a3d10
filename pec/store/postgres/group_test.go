package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestGroupCommitFailuresStayAlone: many callers commit at once, so batches share
// transactions; some fail, each in its own way (a stale notice found before anything is
// written; a duplicate held key and a delivery record not open, found after the batch's
// tracking row and outbox item were sent). Each failing batch leaves nothing, the others
// all land, and batches were grouped.
func TestGroupCommitFailuresStayAlone(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s := openDSN(t, freshDSN(t), Deps{Registerer: reg})
	held := storetest.HeldStep(0, storetest.T0)
	if err := s.Commit(ctx, &store.Batch{Holds: []store.Held{held}}); err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []error
	fail := func(err error) { mu.Lock(); problems = append(problems, err); mu.Unlock() }
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := 0; i < per; i++ {
				n := w*per + i
				id := fmt.Sprintf("opec.group.%d@pec-a.test", n)
				b := &store.Batch{Events: []store.Event{storetest.SampleEvent(n, storetest.T0)}}
				b.Track(store.TrackInsert{Identificativo: id, Recipient: "r@pec-b.test", SentAt: storetest.T0})
				b.Send(store.OutboxItem{MessageID: "<" + id + ">", Kind: "accettazione", Rcpts: []string{"a@x"}, Raw: []byte("x")})
				var want error
				switch i % 8 {
				case 1:
					b.Apply(store.Transition{Identificativo: "nope", Recipient: "x@y", Input: store.InputNotice12h, At: storetest.T0})
					want = store.ErrConflict
				case 3:
					h := storetest.HeldStep(n+1000, storetest.T0)
					h.Key = held.Key
					b.Hold(h)
					want = store.ErrExists
				case 5:
					b.Mark(store.DeliveryMark{DeliveryKey: store.DeliveryKey{Mailbox: "m@pec-a.test", MessageID: "<x>"},
						Owner: "lmtpd/n1", Done: true, At: storetest.T0})
					want = store.ErrConflict
				}
				if err := s.Commit(ctx, b); !errors.Is(err, want) {
					fail(fmt.Errorf("batch %d: %v, want %v", n, err, want))
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(problems...); err != nil {
		t.Fatal(err)
	}
	ok := workers * per * 5 / 8
	counts := map[string]int{"events": ok, "outbox": ok, "tracking": ok, "event_addrs": 2 * ok}
	for table, want := range counts {
		if got, err := s.Count(ctx, table); err != nil || got != int64(want) {
			t.Errorf("%s: %d rows (%v), want %d", table, got, err, want)
		}
	}
	evs := storetest.Search(t, s, store.Query{})
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has sequence number %d", i, e.Seq)
		}
	}
	mfs, _ := reg.Gather()
	grouped := false
	for _, mf := range mfs {
		if h := mf.GetMetric()[0].GetHistogram(); mf.GetName() == "pec_store_commit_group_size" {
			grouped = h.GetSampleSum() > float64(h.GetSampleCount())
		}
	}
	if !grouped {
		t.Error("no two batches ever shared a transaction: group commit not exercised")
	}
}

// TestInsertAndTransitionsInOneBatch: a batch that starts tracking a row and moves it, twice,
// ends as the table says applied in order (the row is written before it is read; the second
// input sees the first's result).
func TestInsertAndTransitionsInOneBatch(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	b := &store.Batch{}
	b.Track(store.TrackInsert{Identificativo: "one@pec-a.test", Recipient: "Bruno@pec-b.test", SentAt: storetest.T0})
	b.Apply(store.Transition{Identificativo: "one@pec-a.test", Recipient: "bruno@PEC-B.test", Input: store.InputPresaInCarico, At: storetest.T0.Add(1)})
	b.Apply(store.Transition{Identificativo: "one@pec-a.test", Recipient: "bruno@pec-b.test", Input: store.InputConsegna, At: storetest.T0.Add(2)})
	b.Apply(store.Transition{Identificativo: "one@pec-a.test", Recipient: "bruno@pec-b.test", Input: store.InputConsegna, At: storetest.T0.Add(3)})
	if err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Tracking(ctx, "one@pec-a.test")
	if err != nil || len(rows) != 1 {
		t.Fatalf("%+v %v", rows, err)
	}
	r := rows[0]
	if r.State != store.StateDelivered || !r.TakenAt.Equal(storetest.T0.Add(1)) || !r.DeliveredAt.Equal(storetest.T0.Add(2)) {
		t.Errorf("row after insert, presa in carico, consegna, consegna: %+v", r)
	}
}
