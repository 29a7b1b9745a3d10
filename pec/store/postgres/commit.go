package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/heldcodec"
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
			if err := writeBatch(ctx, tx, group[0].b, w); err != nil {
				return err
			}
			return w.flush(ctx, tx, s)
		}
		for i, r := range group {
			sp, err := tx.Begin(ctx) // SAVEPOINT
			if err != nil {
				return err
			}
			mark := len(w.evs)
			if errs[i] = writeBatch(ctx, sp, r.b, w); errs[i] != nil {
				if retryable(errs[i]) {
					return errs[i] // the whole group again
				}
				w.evs = w.evs[:mark]
				if err := sp.Rollback(ctx); err != nil { // ROLLBACK TO SAVEPOINT
					return err
				}
				continue
			}
			if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
				return err
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
		wake = wake || errs[i] == nil && len(r.b.Outbox) > 0
		r.result <- temporary(errs[i])
	}
	if wake {
		s.waker.Wake()
	}
}

// writeBatch writes everything of b but its events, which it hands to w: the log's
// sequence numbers are given by the transaction's last statement (eventWriter.flush).
// Transitions are applied in (identificativo, recipient) order, so that two transactions
// lock the tracking rows they share in the same order; the inputs of one row keep their
// order.
func writeBatch(ctx context.Context, tx txn, b *store.Batch, w *eventWriter) error {
	for i := range b.Inserts {
		if err := insertTracking(ctx, tx, b.Inserts[i].Row()); err != nil {
			return err
		}
	}
	trs := slices.Clone(b.Transitions)
	slices.SortStableFunc(trs, func(a, b store.Transition) int {
		if c := strings.Compare(a.Identificativo, b.Identificativo); c != 0 {
			return c
		}
		return strings.Compare(strings.ToLower(a.Recipient), strings.ToLower(b.Recipient))
	})
	for i := range trs {
		if err := applyTransition(ctx, tx, &trs[i]); err != nil {
			return err
		}
	}
	for i := range b.Outbox {
		if err := insertOutbox(ctx, tx, &b.Outbox[i], w.now); err != nil {
			return err
		}
	}
	for i := range b.Quarantine {
		if err := insertQuarantine(ctx, tx, &b.Quarantine[i]); err != nil {
			return err
		}
	}
	for i := range b.Holds {
		if err := insertHeld(ctx, tx, &b.Holds[i]); err != nil {
			return err
		}
	}
	for i := range b.Deliveries {
		if err := markDelivery(ctx, tx, &b.Deliveries[i]); err != nil {
			return err
		}
	}
	for i := range b.Events {
		w.evs = append(w.evs, &b.Events[i])
	}
	return nil
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

func insertTracking(ctx context.Context, tx txn, r store.Tracking) error {
	// ON CONFLICT DO NOTHING: a replayed batch leaves an existing row (and its state) alone.
	_, err := tx.Exec(ctx, `INSERT INTO tracking (identificativo, recipient, state, sent_at, due12, due22, due24,
		sender, subject, message_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (identificativo, lower(recipient)) DO NOTHING`,
		r.Identificativo, r.Recipient, string(r.State), ns(r.SentAt), ns(r.Due12), ns(r.Due22), ns(r.Due24),
		r.Sender, r.Subject, r.MessageID, r.Data)
	return err
}

const trackingCols = `identificativo, recipient, state, sent_at, due12, due22, due24, taken_at, delivered_at,
	failed_at, notice12_at, notice24_at, sender, subject, message_id, data`

type scanner interface{ Scan(...any) error }

func scanTracking(sc scanner) (store.Tracking, error) {
	var r store.Tracking
	var state string
	var t [9]int64
	err := sc.Scan(&r.Identificativo, &r.Recipient, &state, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6],
		&t[7], &t[8], &r.Sender, &r.Subject, &r.MessageID, &r.Data)
	r.State = store.State(state)
	r.SentAt, r.Due12, r.Due22, r.Due24 = fromNS(t[0]), fromNS(t[1]), fromNS(t[2]), fromNS(t[3])
	r.TakenAt, r.DeliveredAt, r.FailedAt = fromNS(t[4]), fromNS(t[5]), fromNS(t[6])
	r.Notice12At, r.Notice24At = fromNS(t[7]), fromNS(t[8])
	return r, err
}

// applyTransition moves one tracking row under its row lock (SELECT ... FOR UPDATE): a
// concurrent transition of the same row, on any node, waits for this transaction and then
// reads the row as it left it (pec-spec §6.3; the table is store.Next).
func applyTransition(ctx context.Context, tx txn, t *store.Transition) error {
	r, err := scanTracking(tx.QueryRow(ctx, `SELECT `+trackingCols+` FROM tracking
		WHERE identificativo = $1 AND lower(recipient) = lower($2) FOR UPDATE`, t.Identificativo, t.Recipient))
	if isNoRows(err) {
		if t.Input.IsNotice() {
			return fmt.Errorf("%w: no tracking row for %s %s", store.ErrConflict, t.Identificativo, t.Recipient)
		}
		return nil // a receipt about something we do not track: ignored
	}
	if err != nil {
		return err
	}
	nr, out := store.Next(r, t.Input, t.At)
	switch out {
	case store.Conflict:
		return fmt.Errorf("%w: %s in state %s for %s %s", store.ErrConflict, t.Input, r.State, t.Identificativo, t.Recipient)
	case store.Duplicate:
		return nil
	}
	_, err = tx.Exec(ctx, `UPDATE tracking SET state = $1, taken_at = $2, delivered_at = $3, failed_at = $4,
		notice12_at = $5, notice24_at = $6 WHERE identificativo = $7 AND lower(recipient) = lower($8)`,
		string(nr.State), ns(nr.TakenAt), ns(nr.DeliveredAt), ns(nr.FailedAt), ns(nr.Notice12At), ns(nr.Notice24At),
		r.Identificativo, r.Recipient)
	return err
}

func insertOutbox(ctx context.Context, tx txn, o *store.OutboxItem, now time.Time) error {
	created := o.Created
	if created.IsZero() {
		created = now
	}
	// ON CONFLICT DO NOTHING on the unique Message-ID: queuing the same generated message
	// twice (a replayed batch) keeps the first copy.
	_, err := tx.Exec(ctx, `INSERT INTO outbox (message_id, kind, identificativo, mail_from, rcpts, raw, created, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT (message_id) DO NOTHING`,
		o.MessageID, o.Kind, o.Identificativo, o.From, js(o.Rcpts), o.Raw, ns(created))
	return err
}

func insertQuarantine(ctx context.Context, tx txn, q *store.QuarantineItem) error {
	_, err := tx.Exec(ctx, `INSERT INTO quarantine (identificativo, time, virus, sender, recipients, queue_id, raw)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, q.Identificativo, ns(q.Time), q.Virus, q.Sender,
		js(nonNil(q.Recipients)), q.QueueID, q.Raw)
	return err
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// insertHeld writes a held record. A duplicate Key or Token is ErrExists; ON CONFLICT DO
// NOTHING keeps the transaction usable (the caller decides), where a unique violation
// would abort it.
func insertHeld(ctx context.Context, tx txn, h *store.Held) error {
	onConfirm, err := heldcodec.Encode(&h.OnConfirm)
	if err != nil {
		return err
	}
	onExpiry, err := heldcodec.Encode(&h.OnExpiry)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO held (token, idem_key, identificativo, state, created, expires, outcome,
		on_confirm, on_expiry) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
		nullable(h.Token), nullable(h.Key), h.Identificativo, string(h.State), ns(h.Created), ns(h.Expires),
		h.Outcome, onConfirm, onExpiry)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: held record with this key or token (%s)", store.ErrExists, h.Identificativo)
	}
	return nil
}
