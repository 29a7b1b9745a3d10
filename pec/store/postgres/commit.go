package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// groupTimeout bounds one group transaction, so that a database that stops answering (a
// failover) fails the queued Commits as temporary instead of holding them for ever.
const groupTimeout = 30 * time.Second

type writeReq struct {
	b      *store.Batch
	result chan error
}

// Commit implements store.Store: the whole Batch in one transaction (or one savepoint of a
// group transaction). Once queued, the request is waited for even if ctx ends, because it
// may be committed anyway: returning early would tell the caller "failed" about data that is
// in the database.
func (s *Store) Commit(ctx context.Context, b *store.Batch) (err error) {
	if err := b.Validate(); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	if err := s.ensureMonths(ctx, eventTimes(b.Events)); err != nil {
		return temporary(err)
	}
	req := &writeReq{b: b, result: make(chan error, 1)}
	defer func() {
		if r := recover(); r != nil { // send on closed channel: Close raced with a write
			err = &store.Temporary{Err: errors.New("store closed")}
		}
	}()
	select {
	case s.wq <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.result
}

func eventTimes(evs []store.Event) []int64 {
	out := make([]int64, len(evs))
	for i := range evs {
		out[i] = evs[i].Time.UnixNano()
	}
	return out
}

func (s *Store) writer() {
	defer close(s.done)
	for req := range s.wq {
		group := []*writeReq{req}
	more:
		for len(group) < s.max {
			select {
			case r, ok := <-s.wq:
				if !ok {
					break more
				}
				group = append(group, r)
			default:
				break more
			}
		}
		s.runGroup(group)
	}
}

// runGroup writes a group of Commits in one transaction, each batch in its own savepoint
// (one failing batch does not fail the others), and the events of all of them last.
func (s *Store) runGroup(group []*writeReq) {
	s.groups.Observe(float64(len(group)))
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	errs := make([]error, len(group))
	err := s.inTx(ctx, func(tx txn) error {
		clear(errs)
		w := &eventWriter{now: s.goNow()}
		if len(group) == 1 {
			if err := writeBatch(ctx, tx, group[0].b, w, ""); err != nil {
				return err
			}
			return w.flush(ctx, tx, s)
		}
		for i, r := range group {
			// Each batch in its own savepoint: one that fails is rolled back alone.
			if errs[i] = writeBatch(ctx, tx, r.b, w, fmt.Sprintf("b%d", i)); retryable(errs[i]) {
				return errs[i] // the whole group again
			}
		}
		return w.flush(ctx, tx, s)
	})
	if err != nil {
		if len(group) > 1 {
			s.log.Error("store group commit failed", slog.Any("err", err), slog.Int("batches", len(group)))
		}
		for _, r := range group {
			r.result <- temporary(err)
		}
		return
	}
	wake := false
	for i, r := range group {
		// A proving receipt may have released a held step, whose accettazione is in the outbox.
		wake = wake || errs[i] == nil && (len(r.b.Outbox) > 0 || len(r.b.Proven()) > 0)
		r.result <- temporary(errs[i])
	}
	if wake {
		s.waker.Wake()
	}
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only slices of strings and plain structs are marshalled here
	}
	return string(b)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// eventWriter collects the events of a transaction and writes them last.
type eventWriter struct {
	now time.Time // logged_at
	evs []*store.Event
}

// insertEventsSQL takes the next len(events) sequence numbers (the row lock on log_seq is
// held until commit: the log is ordered by commit) and writes the events and their
// addresses, in one statement.
const insertEventsSQL = `WITH s AS (UPDATE log_seq SET last = last + $1 RETURNING last - $1 AS base),
ev AS (INSERT INTO events (seq, time, identificativo, kind, sender, recipients, subject, message_id, gestore,
	receipt_type, about, error, error_detail, virus, queue_id, size, generated, logged_at)
	SELECT s.base + u.i, u.time, u.identificativo, u.kind, u.sender, u.recipients, u.subject, u.message_id,
		u.gestore, u.receipt_type, u.about, u.error, u.error_detail, u.virus, u.queue_id, u.size, u.generated, $2::bigint
	FROM s, unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
		$18::bigint[], $19::text[])
		AS u(i, time, identificativo, kind, sender, recipients, subject, message_id, gestore, receipt_type, about,
		error, error_detail, virus, queue_id, size, generated))
INSERT INTO event_addrs (addr, time, seq)
	SELECT a.addr, a.time, s.base + a.i FROM s, unnest($20::text[], $21::bigint[], $22::bigint[]) AS a(addr, time, i)`

// flush writes the collected events: the transaction's last statement.
func (w *eventWriter) flush(ctx context.Context, tx txn, s *Store) error {
	n := len(w.evs)
	if n == 0 {
		return nil
	}
	var missing []int64
	for _, e := range w.evs {
		if _, ok := s.parts.Load(month(e.Time.UnixNano()).UnixNano()); !ok {
			missing = append(missing, e.Time.UnixNano())
		}
	}
	if len(missing) > 0 {
		return &needMonths{times: missing}
	}
	idx, tm, size := make([]int64, n), make([]int64, n), make([]int64, n)
	var cols [13][]string
	var addr []string
	var addrTime, addrIdx []int64
	for i, e := range w.evs {
		idx[i], tm[i], size[i] = int64(i+1), e.Time.UnixNano(), e.Size
		for c, v := range []string{e.Identificativo, string(e.Kind), e.Sender, js(nonNil(e.Recipients)), e.Subject,
			e.MessageID, e.Gestore, e.ReceiptType, js(nonNil(e.About)), e.Error, e.ErrorDetail, e.Virus, e.QueueID} {
			cols[c] = append(cols[c], v)
		}
		for _, a := range e.Addresses() {
			addr, addrTime, addrIdx = append(addr, a), append(addrTime, tm[i]), append(addrIdx, int64(i+1))
		}
	}
	gen := make([]string, n)
	for i, e := range w.evs {
		gen[i] = js(nonNil(e.Generated))
	}
	args := []any{n, w.now.UnixNano(), idx, tm}
	for _, c := range cols {
		args = append(args, c)
	}
	args = append(args, size, gen, nonNil(addr), nonNil(addrTime), nonNil(addrIdx))
	_, err := tx.Exec(ctx, insertEventsSQL, args...)
	return err
}
