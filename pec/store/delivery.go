package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// # Deliveries: one copy per mailbox, however often Postfix retries
//
// The delivery point stores a PEC message (busta, receipt, notice, anomaly) into a mailbox
// at most once and issues the avvenuta consegna once (DESIGN.md "Durability"). Postfix
// retries a delivery whose reply it did not get, and pec-lmtpd may die between Dovecot's
// answer and its own commit; so each (mailbox, Message-ID) has a record:
//
//   - before the message is handed to Dovecot, ClaimDeliveries records the intent (an open
//     record, leased to its owner);
//   - the Commit that writes the receipt, its log events and the outcome also closes the
//     record (Batch.Deliveries, DeliveryMark with Done), or deletes it when nothing was
//     stored (Done false: Dovecot refused, or was not reached);
//   - a later attempt finds a closed record (acknowledge, store nothing, emit nothing), or an
//     open one whose owner is gone (the engine then asks the mailbox whether the message is
//     already there before storing it again), or an open one another owner still holds
//     (try later).
//
// Owners name processes stable across restarts ("pec-lmtpd/<node>"), as leases do: a
// restarted process takes its own open records back at once (it knows nothing of them is
// still in flight); another owner's record is taken only after its lease ends, by the
// store's clock.

// DeliveryKey names one message in one mailbox. Mailbox is the envelope recipient,
// compared without regard to ASCII case; MessageID is the Message-ID with angle brackets,
// compared exactly.
type DeliveryKey struct {
	Mailbox   string
	MessageID string
}

func (k DeliveryKey) validate() error {
	if strings.TrimSpace(k.Mailbox) == "" || k.MessageID == "" {
		return fmt.Errorf("%w: delivery key needs a mailbox and a Message-ID", ErrInvalid)
	}
	return nil
}

// DeliveryState is what ClaimDeliveries found for a key.
type DeliveryState string

const (
	// DeliveryNew: no record; an open record now belongs to the caller: deliver.
	DeliveryNew DeliveryState = "new"
	// DeliveryOpen: an earlier attempt recorded its intent and never closed it (its owner
	// died, or it is the caller itself after a restart); the record now belongs to the
	// caller, who must find out whether the mailbox holds the message before storing it.
	DeliveryOpen DeliveryState = "open"
	// DeliveryBusy: another owner's attempt holds the record and its lease runs: try later.
	DeliveryBusy DeliveryState = "busy"
	// DeliveryDone: an earlier attempt closed the record (Outcome says how): acknowledge.
	DeliveryDone DeliveryState = "done"
)

// DeliveryClaim is the answer of ClaimDeliveries for one key.
type DeliveryClaim struct {
	DeliveryKey
	State   DeliveryState
	Outcome string    // DeliveryDone: the outcome the closing attempt recorded
	Since   time.Time // when the first attempt claimed the key
	Owner   string    // DeliveryBusy: who holds it
}

// DeliveryMark closes or releases a record claimed by Owner, in the Commit that writes what
// the attempt produced (receipt, log events).
type DeliveryMark struct {
	DeliveryKey
	Owner string
	// Done closes the record: the mailbox holds the message, or the message failed for good
	// (Outcome, opaque to the store, says which; at most 64 bytes). A closed record is
	// never reopened. A Commit whose Done mark finds the record not open under Owner (the
	// lease was lost to another owner, who may have closed it) fails with ErrConflict and
	// writes nothing.
	//
	// Done false releases the record (nothing was stored: the next attempt starts anew);
	// a record no longer open under Owner is left as it is.
	Done    bool
	Outcome string
	At      time.Time
}

func (d *DeliveryMark) validate() error {
	if err := d.DeliveryKey.validate(); err != nil {
		return err
	}
	switch {
	case d.Owner == "":
		return fmt.Errorf("%w: delivery mark without owner", ErrInvalid)
	case d.Done && d.At.IsZero():
		return fmt.Errorf("%w: closing delivery mark without time", ErrInvalid)
	case len(d.Outcome) > 64:
		return fmt.Errorf("%w: delivery outcome longer than 64 bytes", ErrInvalid)
	}
	return nil
}

// Deliveries is the part of Store that keeps the delivery point's records (see above).
// Every Store implements it.
type Deliveries interface {
	// ClaimDeliveries answers, for each key in order, what the records say, in one
	// transaction: a key without record gets an open record for owner (DeliveryNew); an
	// open record of owner, or of another owner whose lease ended, is taken over
	// (DeliveryOpen); an open record of another owner whose lease runs is left alone
	// (DeliveryBusy); a closed record is reported (DeliveryDone). Records taken get
	// owner and a lease of lease from now, by the store's clock. A key listed twice gets
	// the same answer twice.
	ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, keys []DeliveryKey) ([]DeliveryClaim, error)
	// PurgeDeliveries deletes the closed records closed before before, and the open ones
	// whose lease ended before before, and returns how many. After that a retry of the
	// same message is delivered anew: keep them longer than Postfix keeps a message in its
	// queue (maximal_queue_lifetime).
	PurgeDeliveries(ctx context.Context, before time.Time) (int64, error)
}

// NormMailbox is the comparison form of a mailbox in delivery keys.
func NormMailbox(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
