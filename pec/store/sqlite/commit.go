package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Commit implements store.Store: the whole Batch in one transaction (or one savepoint of a
// group transaction).
func (s *Store) Commit(ctx context.Context, b *store.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	// A proving receipt may release a held step, whose accettazione goes to the outbox.
	wake := len(b.Outbox) > 0 || len(b.Proven()) > 0
	return s.write(ctx, wake, func(tx *sql.Tx) error { return commitBatch(tx, b, s.goNow()) })
}

func commitBatch(tx *sql.Tx, b *store.Batch, now time.Time) error {
	if err := releaseProven(tx, b, now); err != nil {
		return err
	}
	for i := range b.Inserts {
		if err := insertTracking(tx, b.Inserts[i].Row()); err != nil {
			return err
		}
	}
	for i := range b.Transitions {
		if err := applyTransition(tx, &b.Transitions[i]); err != nil {
			return err
		}
	}
	for i := range b.Events {
		if _, err := insertEvent(tx, &b.Events[i], now); err != nil {
			return err
		}
	}
	for i := range b.Outbox {
		if err := insertOutbox(tx, &b.Outbox[i], now); err != nil {
			return err
		}
	}
	for i := range b.Quarantine {
		if err := insertQuarantine(tx, &b.Quarantine[i]); err != nil {
			return err
		}
	}
	for i := range b.Holds {
		if err := insertHeld(tx, &b.Holds[i]); err != nil {
			return err
		}
	}
	for i := range b.Deliveries {
		if err := markDelivery(tx, &b.Deliveries[i]); err != nil {
			return err
		}
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

const insertEventSQL = `INSERT INTO events (time, identificativo, kind, sender, recipients, subject,
	message_id, gestore, receipt_type, about, error, error_detail, virus, queue_id, size, generated, logged_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func insertEvent(tx *sql.Tx, e *store.Event, now time.Time) (int64, error) {
	res, err := tx.Exec(insertEventSQL, e.Time.UnixNano(), e.Identificativo, string(e.Kind), e.Sender,
		js(nonNil(e.Recipients)), e.Subject, e.MessageID, e.Gestore, e.ReceiptType, js(nonNil(e.About)),
		e.Error, e.ErrorDetail, e.Virus, e.QueueID, e.Size, js(nonNil(e.Generated)), now.UnixNano())
	if err != nil {
		return 0, err
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	for _, a := range e.Addresses() {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO event_addrs (addr, seq) VALUES (?, ?)`, a, seq); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

func insertTracking(tx *sql.Tx, r store.Tracking) error {
	// INSERT OR IGNORE: a replayed batch leaves an existing row (and its state) alone.
	_, err := tx.Exec(`INSERT OR IGNORE INTO tracking (identificativo, recipient, state, sent_at, due12, due22, due24,
		sender, subject, message_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
	var t [10]int64
	err := sc.Scan(&r.Identificativo, &r.Recipient, &state, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6],
		&t[7], &t[8], &r.Sender, &r.Subject, &r.MessageID, &r.Data)
	r.State = store.State(state)
	r.SentAt, r.Due12, r.Due22, r.Due24 = fromNS(t[0]), fromNS(t[1]), fromNS(t[2]), fromNS(t[3])
	r.TakenAt, r.DeliveredAt, r.FailedAt = fromNS(t[4]), fromNS(t[5]), fromNS(t[6])
	r.Notice12At, r.Notice24At = fromNS(t[7]), fromNS(t[8])
	return r, err
}

func applyTransition(tx *sql.Tx, t *store.Transition) error {
	r, err := scanTracking(tx.QueryRow(`SELECT `+trackingCols+` FROM tracking WHERE identificativo = ? AND recipient = ?`,
		t.Identificativo, t.Recipient))
	if err == sql.ErrNoRows {
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
	_, err = tx.Exec(`UPDATE tracking SET state = ?, taken_at = ?, delivered_at = ?, failed_at = ?, notice12_at = ?,
		notice24_at = ? WHERE identificativo = ? AND recipient = ?`,
		string(nr.State), ns(nr.TakenAt), ns(nr.DeliveredAt), ns(nr.FailedAt), ns(nr.Notice12At), ns(nr.Notice24At),
		t.Identificativo, t.Recipient)
	return err
}

func insertOutbox(tx *sql.Tx, o *store.OutboxItem, now time.Time) error {
	created := o.Created
	if created.IsZero() {
		created = now
	}
	// INSERT OR IGNORE on the unique Message-ID: queuing the same generated message twice
	// (a replayed batch) keeps the first copy.
	// The bytes go to outbox_raw (schema migration 5), so that the drainer's updates of the
	// row do not rewrite them.
	res, err := tx.Exec(`INSERT OR IGNORE INTO outbox (message_id, kind, identificativo, mail_from, rcpts, created, state)
		VALUES (?, ?, ?, ?, ?, ?, 'pending')`,
		o.MessageID, o.Kind, o.Identificativo, o.From, js(o.Rcpts), ns(created))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // ignored: the first copy stays
	}
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO outbox_raw (id, raw) VALUES (?, ?)`, id, o.Raw)
	return err
}

func insertQuarantine(tx *sql.Tx, q *store.QuarantineItem) error {
	_, err := tx.Exec(`INSERT INTO quarantine (identificativo, time, virus, sender, recipients, queue_id, raw)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, q.Identificativo, ns(q.Time), q.Virus, q.Sender, js(nonNil(q.Recipients)), q.QueueID, q.Raw)
	return err
}
