package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/heldcodec"
)

// writeBatch writes everything of b but its events, which it hands to w on success: the
// log's sequence numbers are given by the transaction's last statement (eventWriter.flush).
//
// The writes go to PostgreSQL as one pipeline (pgx.Batch: one round trip), after the reads
// that decide them: the tracking rows a transition moves, read under their row lock. With sp
// set the batch runs inside savepoint sp, rolled back when the batch fails, so that the other
// batches of a group commit are kept.
func writeBatch(ctx context.Context, tx txn, b *store.Batch, w *eventWriter, sp string) (err error) {
	var p pgx.Batch
	opened := false // the savepoint was sent
	send := func() error {
		if p.Len() == 0 {
			return nil
		}
		opened = opened || sp != ""
		err := tx.SendBatch(ctx, &p).Close()
		p = pgx.Batch{}
		return err
	}
	defer func() {
		if err != nil && opened && !retryable(err) {
			if _, rbErr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT `+sp); rbErr != nil {
				err = rbErr // the transaction itself is broken: the whole group fails
			}
		}
	}()
	if sp != "" {
		p.Queue(`SAVEPOINT ` + sp)
	}
	if b, err = releaseProven(ctx, tx, &p, send, b, w.now); err != nil {
		return err
	}
	for i := range b.Inserts {
		queueTracking(&p, b.Inserts[i].Row())
	}
	if len(b.Transitions) > 0 {
		if len(b.Inserts) > 0 {
			if err := send(); err != nil { // rows are inserted before transitions read them
				return err
			}
		}
		if err := transitions(ctx, tx, &p, b.Transitions); err != nil {
			return err
		}
	}
	for i := range b.Outbox {
		queueOutbox(&p, &b.Outbox[i], w.now)
	}
	for i := range b.Quarantine {
		queueQuarantine(&p, &b.Quarantine[i])
	}
	for i := range b.Holds {
		if err := queueHeld(&p, &b.Holds[i]); err != nil {
			return err
		}
	}
	for i := range b.Deliveries {
		queueDeliveryMark(&p, &b.Deliveries[i])
	}
	if err := send(); err != nil {
		return err
	}
	for i := range b.Events {
		w.evs = append(w.evs, &b.Events[i])
	}
	return nil
}

func queueQuarantine(p *pgx.Batch, q *store.QuarantineItem) {
	p.Queue(`INSERT INTO quarantine (identificativo, time, virus, sender, recipients, queue_id, raw)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, q.Identificativo, ns(q.Time), q.Virus, q.Sender,
		js(nonNil(q.Recipients)), q.QueueID, q.Raw)
}

func queueTracking(p *pgx.Batch, r store.Tracking) {
	// ON CONFLICT DO NOTHING: a replayed batch leaves an existing row (and its state) alone.
	p.Queue(`INSERT INTO tracking (identificativo, recipient, state, sent_at, due12, due22, due24,
		sender, subject, message_id, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (identificativo, lower(recipient)) DO NOTHING`,
		r.Identificativo, r.Recipient, string(r.State), ns(r.SentAt), ns(r.Due12), ns(r.Due22), ns(r.Due24),
		r.Sender, r.Subject, r.MessageID, r.Data)
}

// transitions reads the tracking rows the transitions move under their row locks (SELECT
// ... FOR UPDATE: a concurrent transition of the same row, on any node, waits for this
// transaction and then reads the row as it left it), applies the table (store.Next, pec-spec
// §6.3) and queues the updates. Rows are locked in (identificativo, recipient) order, so
// that two transactions lock the rows they share in the same order; the inputs of one row
// keep their order, each seeing the row as the previous one left it.
func transitions(ctx context.Context, tx txn, p *pgx.Batch, in []store.Transition) error {
	trs := slices.Clone(in)
	slices.SortStableFunc(trs, func(a, b store.Transition) int {
		if c := strings.Compare(a.Identificativo, b.Identificativo); c != 0 {
			return c
		}
		return strings.Compare(strings.ToLower(a.Recipient), strings.ToLower(b.Recipient))
	})
	rows := map[[2]string]*store.Tracking{} // read in this batch; nil: no such row
	var changed []*store.Tracking
	for _, t := range trs {
		key := [2]string{t.Identificativo, strings.ToLower(t.Recipient)}
		r, seen := rows[key]
		if !seen {
			got, err := scanTracking(tx.QueryRow(ctx, `SELECT `+trackingCols+` FROM tracking
				WHERE identificativo = $1 AND lower(recipient) = lower($2) FOR UPDATE`, t.Identificativo, t.Recipient))
			switch {
			case isNoRows(err):
			case err != nil:
				return err
			default:
				r = &got
			}
			rows[key] = r
		}
		if r == nil {
			if t.Input.IsNotice() {
				return fmt.Errorf("%w: no tracking row for %s %s", store.ErrConflict, t.Identificativo, t.Recipient)
			}
			continue // a receipt about something we do not track: ignored
		}
		nr, out := store.Next(*r, t.Input, t.At)
		switch out {
		case store.Conflict:
			return fmt.Errorf("%w: %s in state %s for %s %s", store.ErrConflict, t.Input, r.State, t.Identificativo, t.Recipient)
		case store.Duplicate:
			continue
		}
		if !slices.Contains(changed, r) {
			changed = append(changed, r)
		}
		*r = nr
	}
	for _, r := range changed {
		p.Queue(`UPDATE tracking SET state = $1, taken_at = $2, delivered_at = $3, failed_at = $4,
			notice12_at = $5, notice24_at = $6 WHERE identificativo = $7 AND lower(recipient) = lower($8)`,
			string(r.State), ns(r.TakenAt), ns(r.DeliveredAt), ns(r.FailedAt), ns(r.Notice12At), ns(r.Notice24At),
			r.Identificativo, r.Recipient)
	}
	return nil
}

// releaseProven queues the release of the waiting step that starts the tracking of each
// transaction b's receipts prove queued (store.Transition.ProvesQueued), as
// Confirm would, and returns b with the OnConfirm batches of those steps before it: their
// tracking rows are inserted before b's transitions read them, all in b's savepoint. The
// steps are read under their row locks, so a Confirm of the same step on another node waits
// and then finds it released. send is writeBatch's: what p holds goes first, so that the
// savepoint is open before the reads.
func releaseProven(ctx context.Context, tx txn, p *pgx.Batch, send func() error, b *store.Batch, at time.Time) (*store.Batch, error) {
	ids := b.Proven()
	if len(ids) == 0 {
		return b, nil
	}
	if err := send(); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT `+heldCols+` FROM held WHERE identificativo = ANY($1) AND state = 'held'
		ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	var parts []*store.Batch
	for rows.Next() {
		id, h, err := scanHeld(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		if !h.StartsTracking() {
			continue
		}
		h.Release(at)
		p.Queue(`UPDATE held SET state = 'released', released_at = $1, late = $2 WHERE id = $3`, ns(at), h.Late, id)
		parts = append(parts, &h.OnConfirm)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		return b, nil
	}
	return store.Merge(append(parts, b)...), nil
}

func queueOutbox(p *pgx.Batch, o *store.OutboxItem, now interface{ UnixNano() int64 }) {
	created := ns(o.Created)
	if created == 0 {
		created = now.UnixNano()
	}
	// ON CONFLICT DO NOTHING on the unique Message-ID: queuing the same generated message
	// twice (a replayed batch) keeps the first copy.
	p.Queue(`INSERT INTO outbox (message_id, kind, identificativo, mail_from, rcpts, raw, created, state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT (message_id) DO NOTHING`,
		o.MessageID, o.Kind, o.Identificativo, o.From, js(o.Rcpts), o.Raw, created)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// queueHeld writes a held record. A duplicate Key or Token is ErrExists; ON CONFLICT DO
// NOTHING keeps the statement from failing (the savepoint or transaction is rolled back
// by the caller on the error).
func queueHeld(p *pgx.Batch, h *store.Held) error {
	onConfirm, err := heldcodec.Encode(&h.OnConfirm)
	if err != nil {
		return err
	}
	onExpiry, err := heldcodec.Encode(&h.OnExpiry)
	if err != nil {
		return err
	}
	p.Queue(`INSERT INTO held (token, idem_key, identificativo, state, created, expires, outcome,
		on_confirm, on_expiry) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
		nullable(h.Token), nullable(h.Key), h.Identificativo, string(h.State), ns(h.Created), ns(h.Expires),
		h.Outcome, onConfirm, onExpiry).Exec(func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() == 0 {
			return fmt.Errorf("%w: held record with this key or token (%s)", store.ErrExists, h.Identificativo)
		}
		return nil
	})
	return nil
}

// queueDeliveryMark closes (Done) or releases a record claimed by d.Owner.
func queueDeliveryMark(p *pgx.Batch, d *store.DeliveryMark) {
	mb := store.NormMailbox(d.Mailbox)
	if !d.Done {
		p.Queue(`DELETE FROM deliveries WHERE mailbox = $1 AND message_id = $2 AND owner = $3 AND NOT done`,
			mb, d.MessageID, d.Owner)
		return
	}
	p.Queue(`UPDATE deliveries SET done = true, outcome = $1, done_at = $2 WHERE mailbox = $3
		AND message_id = $4 AND owner = $5 AND NOT done`, d.Outcome, ns(d.At), mb, d.MessageID, d.Owner).
		Exec(func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() == 0 {
				return fmt.Errorf("%w: delivery record of %s %s is not open for %s", store.ErrConflict, d.Mailbox, d.MessageID, d.Owner)
			}
			return nil
		})
}
