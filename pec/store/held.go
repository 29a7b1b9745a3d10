package store

import (
	"context"
	"fmt"
	"time"
)

// # Held steps: nothing attested before Postfix holds the message
//
// The accettazione says the busta left; the presa in carico says we took the busta. Both may
// exist only once Postfix has queued that busta (DESIGN.md "Durability"). The engine
// therefore does not Commit such a step at end-of-message: it stores it as a Held record,
// whose OnConfirm batch (the receipt in the outbox, its log events, the tracking rows) is
// committed by Confirm when Postfix proves it queued the message, and whose OnExpiry batch (a
// log event saying what happened instead) is committed by ExpireHeld when no proof came in
// time. The proof is a confirmation recipient the milter adds to the queued message; Postfix
// delivers it to our confirmation listener, which calls Confirm with the token it carries.
// Only a queued message can produce that delivery, and the token is random, so nobody else
// can. A verified receipt about our own transaction is the same proof for the step that
// starts its tracking (the accettazione's): a peer can sign a presa in carico or a consegna
// of the busta only after Postfix queued it and sent it on. Such a receipt often overtakes
// the confirmation (Postfix delivers the busta and the confirmation recipient in parallel),
// so Commit releases that step first (Transition.ProvesQueued); the confirmation that comes
// later finds it released and commits nothing. The identificativo a receipt names carries 80
// random bits (pec.NewIdentificativo) and exists only in the busta, so no provider can name
// a step whose busta it never received.
//
// A Held record also makes a step idempotent: its Key (the engine's hash of login, client
// Message-ID and message bytes) finds the earlier outcome when a client retries after a lost
// reply, so the retry gets the same identificativo and no second receipt. Refusals are
// recorded as HeldFinal records in the same Commit as their avviso, for the same purpose.

// HeldState is the state of a Held record.
type HeldState string

const (
	HeldWaiting  HeldState = "held"     // prepared, waiting for Postfix's confirmation
	HeldReleased HeldState = "released" // confirmed: OnConfirm was committed
	HeldExpired  HeldState = "expired"  // not confirmed in time: OnExpiry was committed
	HeldFinal    HeldState = "final"    // an outcome kept only for retries (a refusal): nothing to release
)

// Held is a prepared processing step (see above).
type Held struct {
	// Token is the confirmation token: random, unique, carried by the confirmation recipient.
	// Required for HeldWaiting; "" for HeldFinal.
	Token string
	// Key is the idempotency key of the step; unique among all records ("" = none: no
	// retry can find this record).
	Key            string
	Identificativo string
	State          HeldState
	Created        time.Time // when the step was prepared
	Expires        time.Time // HeldWaiting: after it, ExpireHeld commits OnExpiry
	// Outcome is opaque to the store: what the engine needs to answer a retry identically
	// (the reply, the time reference, ...).
	Outcome []byte
	// OnConfirm is committed, atomically with the state change, by the first Confirm.
	OnConfirm Batch
	// OnExpiry is committed, atomically with the state change, by ExpireHeld.
	OnExpiry Batch

	// Maintained by the store.
	ReleasedAt time.Time // when Confirm committed OnConfirm
	ExpiredAt  time.Time // when ExpireHeld committed OnExpiry
	Late       bool      // Confirm came after ExpireHeld (OnExpiry and then OnConfirm were committed)
}

// StartsTracking reports whether h is the step that starts its transaction's tracking (its
// OnConfirm inserts the tracking rows): the access point's, which a receipt about the
// transaction proves queued (Transition.ProvesQueued).
func (h *Held) StartsTracking() bool { return len(h.OnConfirm.Inserts) > 0 }

// Release records that h's OnConfirm was committed at at (by Confirm or by a proving
// receipt): late when OnExpiry had been committed before.
func (h *Held) Release(at time.Time) {
	h.Late = h.State == HeldExpired
	h.State, h.ReleasedAt = HeldReleased, at
}

func (h *Held) validate() error {
	switch h.State {
	case HeldWaiting:
		if h.Token == "" || h.Expires.IsZero() {
			return fmt.Errorf("%w: a held step needs a token and an expiry", ErrInvalid)
		}
	case HeldFinal:
		if h.Token != "" || !h.OnConfirm.Empty() || !h.OnExpiry.Empty() {
			return fmt.Errorf("%w: a final record has no token and nothing to release", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: held records are written as %q or %q, not %q", ErrInvalid, HeldWaiting, HeldFinal, h.State)
	}
	if h.Created.IsZero() || h.Identificativo == "" {
		return fmt.Errorf("%w: held record needs identificativo and creation time", ErrInvalid)
	}
	for _, b := range []*Batch{&h.OnConfirm, &h.OnExpiry} {
		if len(b.Holds) > 0 || len(b.Deliveries) > 0 {
			return fmt.Errorf("%w: a held record's batches hold no held records and no delivery marks", ErrInvalid)
		}
		if err := b.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Holder is the part of Store that keeps held steps. Every Store implements it.
//
// Held records are written by Commit (Batch.Hold), so that a refusal's avviso and its
// HeldFinal record, or a held step and anything committed at once with it, are atomic. A
// Commit whose Hold duplicates an existing Key or Token fails with ErrExists and writes
// nothing: the caller looks the Key up and answers as the earlier attempt did.
//
// OnConfirm and OnExpiry are committed as any Batch is: an outbox item whose MessageID is
// already in the outbox and a tracking row that already exists are left as they are. Each
// is committed at most once per record, however many handles (processes, nodes) call
// Confirm and ExpireHeld at the same time.
type Holder interface {
	// LookupHeld returns the record with this Key created at or after since, or ErrNotFound.
	LookupHeld(ctx context.Context, key string, since time.Time) (*Held, error)
	// Confirm releases the record with this token: the first call commits OnConfirm and
	// sets HeldReleased (also after expiry: then Late is set, the message was queued after
	// all and the attestation is true); later calls change nothing. It returns the record
	// as it is after the call, or ErrNotFound for an unknown token. When OnConfirm cannot
	// be committed (ErrConflict: a notice in it no longer applies) Confirm returns that
	// error and changes nothing.
	Confirm(ctx context.Context, token string, at time.Time) (*Held, error)
	// ExpireHeld commits OnExpiry of up to limit HeldWaiting records whose Expires is at or
	// before now, setting HeldExpired and ExpiredAt = now, oldest Expires first (limit <= 0:
	// 100), and returns how many it expired. A record whose OnExpiry cannot be committed
	// stays HeldWaiting and is named in the returned error; the others are expired.
	ExpireHeld(ctx context.Context, now time.Time, limit int) (int, error)
	// PurgeHeld deletes records that are no longer HeldWaiting and were created before
	// before; the idempotency window of retries ends there.
	PurgeHeld(ctx context.Context, before time.Time) (int64, error)
}
