package store

import (
	"fmt"
	"time"
)

// State is the tracking state of one (identificativo, certified recipient) at the sender's
// provider (pec-spec §6.3).
type State string

const (
	StateSent       State = "sent"         // busta dispatched, nothing heard yet
	StateTaken      State = "taken"        // presa in carico received, consegna pending
	StateDelivered  State = "delivered"    // avvenuta consegna received: done
	StateFailed     State = "failed"       // mancata consegna (incl. virus) received: done
	StateNotified12 State = "notified-12h" // 12 h preavviso sent, consegna pending
	StateNotified24 State = "notified-24h" // final 24 h notice sent: tracking stopped
)

// Terminal reports whether no notice is due any more in state s.
func (s State) Terminal() bool {
	return s == StateDelivered || s == StateFailed || s == StateNotified24
}

// Input is what moves a tracking row: a receipt from the recipient's provider or a notice
// the sweeper sends.
type Input string

const (
	InputPresaInCarico   Input = "presa-in-carico"
	InputConsegna        Input = "avvenuta-consegna"
	InputMancataConsegna Input = "errore-consegna" // also the virus variant
	InputNotice12h       Input = "notice-12h"
	InputNotice24h       Input = "notice-24h"
)

// IsNotice reports whether in is a notice issued by the sweeper (as opposed to a receipt).
func (in Input) IsNotice() bool { return in == InputNotice12h || in == InputNotice24h }

// Outcome tells what a transition did.
type Outcome string

const (
	Applied   Outcome = "applied"   // the state changed
	Recorded  Outcome = "recorded"  // state unchanged, but the receipt's time was recorded (late receipt)
	Duplicate Outcome = "duplicate" // the same input was already applied: nothing changed
	Conflict  Outcome = "conflict"  // a notice that no longer applies
)

type step struct {
	in   Input
	from State
}

// transitions is the whole tracking state machine (pec-spec §6.3). A (state, input) pair not
// listed is a Conflict for notices; for receipts, a first receipt of its kind is Recorded
// (its time kept, the state unchanged) and a repeated one is a Duplicate.
//
//   - 12 h notice only when neither presa in carico nor consegna arrived;
//   - 24 h notice (sent between 22 h and 24 h) when no consegna arrived, whether or not
//     the 12 h notice went out or a presa in carico arrived;
//   - INFERENCE (pec-spec §6.3): a late consegna after a notice is still recorded; after
//     the 12 h notice it ends tracking (no 24 h notice is due any more), after the 24 h
//     notice tracking has stopped and only its time is recorded;
//   - INFERENCE (pec-spec §6.3): an errore-consegna ends tracking for that recipient.
var transitions = map[step]State{
	{InputPresaInCarico, StateSent}:         StateTaken,
	{InputConsegna, StateSent}:              StateDelivered,
	{InputMancataConsegna, StateSent}:       StateFailed,
	{InputNotice12h, StateSent}:             StateNotified12,
	{InputConsegna, StateTaken}:             StateDelivered,
	{InputMancataConsegna, StateTaken}:      StateFailed,
	{InputNotice24h, StateTaken}:            StateNotified24,
	{InputConsegna, StateNotified12}:        StateDelivered,
	{InputMancataConsegna, StateNotified12}: StateFailed,
	{InputNotice24h, StateNotified12}:       StateNotified24,
}

// Tracking is one tracked (identificativo, certified recipient).
type Tracking struct {
	Identificativo string
	Recipient      string
	State          State
	SentAt         time.Time // dispatch of the busta
	// The deadlines, fixed when the row is inserted (TrackInsert.Deadlines): DueTracking
	// works from these, so a change of configuration does not move rows already tracked.
	Due12       time.Time // SentAt + Deadlines.First (12 h): the preavviso is due
	Due22       time.Time // SentAt + Deadlines.FinalFrom (22 h): the final notice may go out from here
	Due24       time.Time // SentAt + Deadlines.Final (24 h): the final notice must be out by here
	TakenAt     time.Time // first presa in carico (zero: none)
	DeliveredAt time.Time // first avvenuta consegna
	FailedAt    time.Time // first errore-consegna
	Notice12At  time.Time
	Notice24At  time.Time
	// Context needed to build the notices without reading the log.
	Sender    string
	Subject   string
	MessageID string
	Data      []byte // opaque to the store (e.g. the engine's serialized daticert data)
	// Due is set by DueTracking: the notice the sweeper must send now.
	Due Input
}

// Deadlines are the notice deadlines of a tracked recipient, counted from the dispatch of
// the busta (pec-spec §6.3).
type Deadlines struct {
	First     time.Duration // the preavviso di mancata consegna is due (12 h)
	FinalFrom time.Duration // the final notice may go out from here (22 h)
	Final     time.Duration // the final notice must be out by here (24 h)
}

// DefaultDeadlines are the deadlines of pec-spec §6.3: 12 h, and 22 h to 24 h.
var DefaultDeadlines = Deadlines{First: 12 * time.Hour, FinalFrom: 22 * time.Hour, Final: 24 * time.Hour}

// Validate checks 0 < First <= FinalFrom <= Final.
func (d Deadlines) Validate() error {
	if d.First <= 0 || d.FinalFrom < d.First || d.Final < d.FinalFrom {
		return fmt.Errorf("%w: deadlines %v, %v, %v: want 0 < first <= final_from <= final", ErrInvalid, d.First, d.FinalFrom, d.Final)
	}
	return nil
}

// OrDefault returns d, or DefaultDeadlines when d is the zero value.
func (d Deadlines) OrDefault() Deadlines {
	if d == (Deadlines{}) {
		return DefaultDeadlines
	}
	return d
}

// TrackInsert starts tracking a certified recipient when its busta is dispatched.
type TrackInsert struct {
	Identificativo string
	Recipient      string
	SentAt         time.Time
	Sender         string
	Subject        string
	MessageID      string
	Data           []byte
	// Deadlines of the notices for this row; the zero value means DefaultDeadlines.
	Deadlines Deadlines
}

// Row returns the new tracking row for t, with its deadlines.
func (t TrackInsert) Row() Tracking {
	d := t.Deadlines.OrDefault()
	return Tracking{
		Identificativo: t.Identificativo, Recipient: t.Recipient, State: StateSent,
		SentAt: t.SentAt, Due12: t.SentAt.Add(d.First), Due22: t.SentAt.Add(d.FinalFrom),
		Due24: t.SentAt.Add(d.Final), Sender: t.Sender, Subject: t.Subject,
		MessageID: t.MessageID, Data: t.Data,
	}
}

func (t *TrackInsert) validate() error {
	if t.Identificativo == "" || t.Recipient == "" || t.SentAt.IsZero() {
		return fmt.Errorf("%w: tracking insert needs identificativo, recipient and time", ErrInvalid)
	}
	return t.Deadlines.OrDefault().Validate()
}

// Transition applies a receipt or notice to one tracked recipient.
type Transition struct {
	Identificativo string
	Recipient      string
	Input          Input
	At             time.Time
	// ProvesQueued marks a verified receipt about a transaction of our own senders. A receipt
	// can only exist once Postfix queued the busta and sent it on, so it is the same proof
	// as the confirmation recipient's delivery (held.go), and it can overtake that delivery
	// (the busta is queued and delivered, the confirmation recipient not yet). When the
	// transaction's held step that starts its tracking still waits (Held.StartsTracking),
	// Commit first releases it, as Confirm would and in the same transaction, and then
	// applies the input to the rows it inserted. Taken without them, the receipt would be
	// lost to the tracking and the sweep would send a false preavviso later; refused until
	// the confirmation came, it would cost the peer a retry and delay the accettazione.
	ProvesQueued bool
}

func (t *Transition) validate() error {
	switch t.Input {
	case InputPresaInCarico, InputConsegna, InputMancataConsegna, InputNotice12h, InputNotice24h:
	default:
		return fmt.Errorf("%w: tracking input %q", ErrInvalid, t.Input)
	}
	if t.Identificativo == "" || t.Recipient == "" || t.At.IsZero() {
		return fmt.Errorf("%w: transition needs identificativo, recipient and time", ErrInvalid)
	}
	return nil
}

// Next is the pure transition function both stores use: it returns the updated row and what
// happened. It never fails: ErrConflict is the caller's to raise for a Conflict outcome.
func Next(r Tracking, in Input, at time.Time) (Tracking, Outcome) {
	stamp := r.stamp(in)
	to, ok := transitions[step{in, r.State}]
	if ok {
		r.State = to
		if stamp.IsZero() {
			r.setStamp(in, at)
		}
		return r, Applied
	}
	if in.IsNotice() {
		return r, Conflict
	}
	if !stamp.IsZero() {
		return r, Duplicate
	}
	r.setStamp(in, at)
	return r, Recorded
}

func (r *Tracking) stamp(in Input) time.Time {
	switch in {
	case InputPresaInCarico:
		return r.TakenAt
	case InputConsegna:
		return r.DeliveredAt
	case InputMancataConsegna:
		return r.FailedAt
	case InputNotice12h:
		return r.Notice12At
	default:
		return r.Notice24At
	}
}

func (r *Tracking) setStamp(in Input, at time.Time) {
	switch in {
	case InputPresaInCarico:
		r.TakenAt = at
	case InputConsegna:
		r.DeliveredAt = at
	case InputMancataConsegna:
		r.FailedAt = at
	case InputNotice12h:
		r.Notice12At = at
	default:
		r.Notice24At = at
	}
}

// DueAt returns the notice due for r at now, or "" when none is. It reads the row's own
// deadlines (Due12, Due22), whatever the defaults are now.
func (r *Tracking) DueAt(now time.Time) Input {
	switch r.State {
	case StateSent:
		if !now.Before(r.Due12) {
			return InputNotice12h
		}
	case StateTaken, StateNotified12:
		if !now.Before(r.Due22) {
			return InputNotice24h
		}
	}
	return ""
}
