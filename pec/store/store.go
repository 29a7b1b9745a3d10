// Package store keeps the durable state of a PEC provider: the legal log (registro, pec-spec
// §6.4), the tracking of each (identificativo, certified recipient) for the 12 h / 24 h
// notices (§6.3), the outbox of generated messages waiting to be reinjected into Postfix, the
// virus quarantine (DPR 68/2005 art. 12) and the daily log seals.
//
// # How the engine uses it
//
// Each processing step (one milter end-of-message, one LMTP recipient batch, one sweep of
// a due tracking row) builds ONE Batch and calls Store.Commit ONCE, before it answers
// Postfix:
//
//	now := clock.Now() // the single time reference of the transaction (pec-spec §6.2)
//	b := &store.Batch{}
//	b.Log(store.Event{Time: now, Identificativo: id, Kind: store.KindAccettazione, ...})
//	b.Log(store.Event{Time: now, Identificativo: id, Kind: store.KindBustaTrasporto, ...})
//	for _, r := range certifiedRcpts {
//		b.Track(store.TrackInsert{Identificativo: id, Recipient: r, SentAt: now, ...})
//	}
//	b.Send(store.OutboxItem{MessageID: accID, Kind: "accettazione", From: svc, Rcpts: []string{sender}, Raw: acc})
//	if err := st.Commit(ctx, b); err != nil {
//		return tempfail // nothing was written: Postfix retries
//	}
//	return accept
//
// Commit is all or nothing: the events, tracking rows, transitions, outbox items,
// quarantine items, held records and delivery marks of a Batch are written in one
// transaction, so a crash leaves either all of them or none (DESIGN.md "Durability"). After Commit returns nil the data is on disk
// (SQLite: WAL + synchronous=FULL). A failed Commit may be retried with the same Batch.
//
// Commit is idempotent where replays are expected: an outbox item whose MessageID is already
// in the outbox and a tracking row that already exists are left as they are. Receipts
// (Transition with a receipt Input) never fail a Commit: a duplicate, late or unknown receipt
// is recorded or ignored as the transition table in tracking.go says. Notices (Notice12h,
// Notice24h) that no longer apply (a receipt arrived meanwhile) make Commit fail with
// ErrConflict, so that the sweeper's notice, whose outbox item is in the same Batch, is not
// sent.
//
// The log is append-only: the interface has no way to change or delete an event, and the
// SQL schemas have triggers that abort any UPDATE or DELETE of the events table.
//
// Implementations: sqlite (default, several processes on one machine share one file),
// postgres (several nodes share one database) and storetest.Memory (fast engine tests).
// storetest.Run is the conformance suite every implementation passes.
package store

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Store is the whole durable state. Implementations are safe for concurrent use.
type Store interface {
	// Commit writes a Batch atomically. See the package documentation.
	Commit(ctx context.Context, b *Batch) error

	// ScanLog calls fn for each event matching q, in ascending sequence order, and stops
	// at the first error fn returns (which ScanLog returns). q.Limit caps the number of
	// events (0: no limit).
	ScanLog(ctx context.Context, q Query, fn func(*Event) error) error

	// Tracking returns the tracking rows of one identificativo, ordered by recipient.
	Tracking(ctx context.Context, identificativo string) ([]Tracking, error)
	// PurgeTracking deletes tracking rows in a terminal state (delivered, failed, final
	// notice sent) dispatched before before, and returns how many. Tracking is working state,
	// not the legal record (that is the log), so it can go once no receipt is expected:
	// e.g. before = now - 30 days.
	PurgeTracking(ctx context.Context, before time.Time) (int64, error)
	// DueTracking returns up to limit rows needing a notice at now, with Due set: in dispatch
	// order, cut from the limit rows of each kind whose deadline passed first (each kind is
	// read in deadline order through its partial index, so that a page costs its own size,
	// not the number of rows due). When every row has the same deadlines that is oldest
	// dispatch first. The order of rows with the same deadline is fixed, so a caller that
	// leaves out the rows of a page still in flight gets the next ones.
	// Due is Notice12h for rows still in StateSent at their Due12, Notice24h for rows
	// still waiting for a consegna at their Due22 (pec-spec §6.3: 12 h and 22 h after
	// dispatch with the default Deadlines). The deadlines are the row's own, fixed at
	// insert. A row due for both gets Notice12h first; after that is committed it comes
	// back for Notice24h.
	DueTracking(ctx context.Context, now time.Time, limit int) ([]Tracking, error)
	// OpenTracking counts the tracking rows not in a terminal state, by state (StateSent,
	// StateTaken, StateNotified12): the certified recipients still waiting for a receipt or a
	// notice (pec-spec §6.3), for metrics. States with no row are absent. It reads the
	// partial indexes of DueTracking, not the whole table.
	OpenTracking(ctx context.Context) (map[State]int64, error)

	// ClaimOutbox leases up to c.Limit pending items whose next attempt is due, for
	// c.Owner for c.Lease. Items leased by another owner whose lease has not expired are
	// skipped, so several drainers (processes, nodes) never send the same item at the same
	// time. Items still leased by c.Owner itself are claimed again at once: an owner names
	// one drainer, stable across its restarts, so a restarted drainer resumes its own work
	// without waiting for its old leases (see Claim.Owner).
	//
	// The store's clock decides what is due and when a lease expires (the database's clock
	// for SQL stores), never the caller's: nodes whose clocks disagree still never hold one
	// item at once.
	ClaimOutbox(ctx context.Context, c Claim) ([]OutboxItem, error)
	// MarkOutbox records the outcome of one delivery attempt of item id by owner: sent,
	// retry later, or parked (permanent failure; the item is kept, never deleted). A
	// retry or park by an owner that no longer holds the lease returns ErrLeaseLost and
	// changes nothing; marking sent always succeeds (the message did go out).
	MarkOutbox(ctx context.Context, id int64, owner string, m Mark) error
	// OutboxWait returns a channel that is closed by the next Commit of this Store value
	// that adds outbox items (in-process wake-up). Take the channel before ClaimOutbox so
	// no wake-up is lost; other processes' items are found by polling.
	OutboxWait() <-chan struct{}
	// ListOutbox returns items in a state (OutboxPending, OutboxSent, OutboxParked), oldest
	// first, without their Raw bytes, for operators and metrics.
	ListOutbox(ctx context.Context, state OutboxState, limit int) ([]OutboxItem, error)
	// PurgeSentOutbox lets go of the message bytes of the items sent before before and
	// returns how many it purged. The items themselves stay, as every outbox item does:
	// their Message-ID still makes a replayed Commit leave them as they are (no receipt is
	// sent twice), and they are still listed. Pending and parked items keep their bytes.
	PurgeSentOutbox(ctx context.Context, before time.Time) (int64, error)

	// Quarantined returns the quarantined messages of one identificativo.
	Quarantined(ctx context.Context, identificativo string) ([]QuarantineItem, error)
	// PurgeQuarantine deletes quarantined messages older than the 30-month retention
	// (DPR 68/2005 art. 12) at now and returns how many it deleted.
	PurgeQuarantine(ctx context.Context, now time.Time) (int64, error)

	// PutSeal stores the seal of a day. A day is sealed once: storing a second seal for
	// the same day returns ErrExists.
	PutSeal(ctx context.Context, s Seal) error
	// GetSeal returns the seal of a day (YYYY-MM-DD), or ErrNotFound.
	GetSeal(ctx context.Context, day string) (*Seal, error)
	// LastSeal returns the latest seal of a day strictly before day, or ErrNotFound.
	LastSeal(ctx context.Context, before string) (*Seal, error)

	// TryLease takes or renews the named lease for owner for ttl, when it is free, expired,
	// or already owner's, and reports whether owner holds it. Expiry is decided by the
	// store's clock (the database's for SQL stores), not the caller's. It is how one node
	// among several runs the sweeper.
	TryLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)

	// Holder keeps the held steps (held.go).
	Holder

	// Deliveries keeps the delivery point's records: one copy per mailbox (delivery.go).
	Deliveries

	Close() error
}

// Errors.
var (
	// ErrConflict: a notice transition no longer applies; the whole Batch was rolled back.
	ErrConflict = errors.New("store: tracking state changed")
	// ErrNotFound: no such seal, item or row.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: the day is already sealed, or a held record's Key or Token is taken.
	ErrExists = errors.New("store: already exists")
	// ErrLeaseLost: the outbox item is no longer leased by this owner.
	ErrLeaseLost = errors.New("store: lease lost")
	// ErrInvalid: the Batch or query is malformed (a bug in the caller, not temporary).
	ErrInvalid = errors.New("store: invalid input")
	// ErrRetention: a purge would remove data younger than the legal retention.
	ErrRetention = errors.New("store: retention period not over")
)

// Temporary marks a store failure (database busy, disk error) as temporary, per the
// project's error contract: callers answer Postfix with a 4xx.
type Temporary struct{ Err error }

func (e *Temporary) Error() string   { return "store: temporary failure: " + e.Err.Error() }
func (e *Temporary) Unwrap() error   { return e.Err }
func (e *Temporary) Temporary() bool { return true }

// RetentionMonths is how long the log and the virus quarantine are kept: 30 months
// (RFC 6109 §2.3 for the log, DPR 68/2005 art. 12 for infected messages).
const RetentionMonths = 30

// RetentionCutoff is the instant before which data may be purged at now.
func RetentionCutoff(now time.Time) time.Time { return now.AddDate(0, -RetentionMonths, 0) }

// Batch is everything one processing step writes. Build it with the helper methods or by
// filling the slices; Commit writes it in one transaction.
type Batch struct {
	Events      []Event
	Inserts     []TrackInsert
	Transitions []Transition
	Outbox      []OutboxItem
	Quarantine  []QuarantineItem
	Holds       []Held
	Deliveries  []DeliveryMark
}

// Log appends an event.
func (b *Batch) Log(e Event) { b.Events = append(b.Events, e) }

// Track starts tracking one certified recipient.
func (b *Batch) Track(t TrackInsert) { b.Inserts = append(b.Inserts, t) }

// Apply records a receipt or notice for one tracked recipient.
func (b *Batch) Apply(t Transition) { b.Transitions = append(b.Transitions, t) }

// Send queues a generated message for reinjection.
func (b *Batch) Send(o OutboxItem) { b.Outbox = append(b.Outbox, o) }

// Keep quarantines an infected message.
func (b *Batch) Keep(q QuarantineItem) { b.Quarantine = append(b.Quarantine, q) }

// Hold stores a held step or a final outcome kept for retries (see Held).
func (b *Batch) Hold(h Held) { b.Holds = append(b.Holds, h) }

// Mark closes or releases a delivery record (see Deliveries).
func (b *Batch) Mark(d DeliveryMark) { b.Deliveries = append(b.Deliveries, d) }

// Proven is the identificativi whose held steps b's transitions prove queued
// (Transition.ProvesQueued), each once, in order of first appearance.
func (b *Batch) Proven() []string {
	var ids []string
	for i := range b.Transitions {
		if t := &b.Transitions[i]; t.ProvesQueued && !slices.Contains(ids, t.Identificativo) {
			ids = append(ids, t.Identificativo)
		}
	}
	return ids
}

// Merge is the batches in one (a new one; none is changed), each part after the previous.
func Merge(bs ...*Batch) *Batch {
	out := &Batch{}
	for _, b := range bs {
		out.Events = append(out.Events, b.Events...)
		out.Inserts = append(out.Inserts, b.Inserts...)
		out.Transitions = append(out.Transitions, b.Transitions...)
		out.Outbox = append(out.Outbox, b.Outbox...)
		out.Quarantine = append(out.Quarantine, b.Quarantine...)
		out.Holds = append(out.Holds, b.Holds...)
		out.Deliveries = append(out.Deliveries, b.Deliveries...)
	}
	return out
}

// Empty reports whether the batch writes nothing.
func (b *Batch) Empty() bool {
	return len(b.Events)+len(b.Inserts)+len(b.Transitions)+len(b.Outbox)+len(b.Quarantine)+len(b.Holds)+len(b.Deliveries) == 0
}
