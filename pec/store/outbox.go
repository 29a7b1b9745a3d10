package store

import (
	"fmt"
	"sync"
	"time"
)

// OutboxState is the delivery state of a generated message.
type OutboxState string

const (
	OutboxPending OutboxState = "pending" // waiting for (another) attempt
	OutboxSent    OutboxState = "sent"    // Postfix answered 250 to DATA
	OutboxParked  OutboxState = "parked"  // permanent failure: kept for the operator, never deleted
)

// OutboxItem is a generated message (receipt, notice, busta di anomalia) waiting to be
// reinjected into Postfix. Raw is sent byte for byte; MessageID is the deterministic
// Message-ID the engine put in Raw, unique in the outbox.
type OutboxItem struct {
	ID             int64 // assigned by the store
	MessageID      string
	Kind           string // message kind, e.g. "accettazione" (bounded set: used as a metric label)
	Identificativo string
	From           string   // envelope sender
	Rcpts          []string // envelope recipients
	Raw            []byte
	Created        time.Time

	// Delivery state, maintained by the store.
	State       OutboxState
	Attempts    int
	NextAttempt time.Time
	LastError   string
	ClaimedBy   string
	LeaseUntil  time.Time
	SentAt      time.Time
}

func (o *OutboxItem) validate() error {
	if o.MessageID == "" || len(o.Rcpts) == 0 || len(o.Raw) == 0 || o.Kind == "" {
		return fmt.Errorf("%w: outbox item needs message id, kind, recipients and bytes", ErrInvalid)
	}
	return nil
}

// Claim asks for outbox items to send. Which items are due (NextAttempt) and when the lease
// ends are decided by the store's clock.
type Claim struct {
	// Owner names the drainer: stable across its restarts (e.g. "reinject/<node>"), so that
	// a restarted drainer reclaims its own leases at once, and never used by two drainers
	// running at the same time.
	Owner string
	Lease time.Duration // how long the claim holds; longer than one SMTP attempt
	Limit int           // 0: 100
}

// Mark is the outcome of one delivery attempt.
type Mark struct {
	State OutboxState // OutboxSent, OutboxPending (retry) or OutboxParked
	At    time.Time
	// NextAttempt (for OutboxPending) is compared with the store's clock by ClaimOutbox;
	// a skewed caller clock only moves the retry, it never makes two drainers share an item.
	NextAttempt time.Time
	Error       string // the SMTP reply or error, for retry and parked (and partial sends)
	// Release (with State OutboxPending) ends a claim on an item that was not attempted
	// (drainer shutting down, lease running short): it becomes claimable at once, and
	// Attempts, NextAttempt and LastError are left alone.
	Release bool
}

// Waker is the in-process broadcast behind Store.OutboxWait, for implementations to embed.
type Waker struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns the channel the next Wake closes.
func (w *Waker) Wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// Wake closes the current channel, waking every waiter.
func (w *Waker) Wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// QuarantineItem is an infected message kept for 30 months (DPR 68/2005 art. 12).
type QuarantineItem struct {
	ID             int64
	Identificativo string
	Time           time.Time
	Virus          string
	Sender         string
	Recipients     []string
	QueueID        string
	Raw            []byte
}

func (q *QuarantineItem) validate() error {
	if q.Time.IsZero() || len(q.Raw) == 0 {
		return fmt.Errorf("%w: quarantine item needs time and bytes", ErrInvalid)
	}
	return nil
}

// Seal is the record of one sealed day of log (see package seal for the format).
type Seal struct {
	Day      string // YYYY-MM-DD, local day in the provider's time zone
	FirstSeq int64  // 0 when the day has no events
	LastSeq  int64
	Count    int64
	Hash     []byte // SHA-256 of the canonical export
	PrevHash []byte // Hash of the previous sealed day (nil for the first seal)
	Signed   []byte // CMS SignedData (.p7m) of the export
	Token    []byte // RFC 3161 TimeStampResp (.tsr) over Hash
	Created  time.Time
}

// Validate checks a Batch without writing it.
func (b *Batch) Validate() error {
	for i := range b.Events {
		if err := b.Events[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Inserts {
		if err := b.Inserts[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Transitions {
		if err := b.Transitions[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Outbox {
		if err := b.Outbox[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Quarantine {
		if err := b.Quarantine[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Holds {
		if err := b.Holds[i].validate(); err != nil {
			return err
		}
	}
	for i := range b.Deliveries {
		if err := b.Deliveries[i].validate(); err != nil {
			return err
		}
	}
	return nil
}
