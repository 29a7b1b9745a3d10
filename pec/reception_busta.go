package pec

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// A valid busta di trasporto at the reception point (RFC 6109 §3.2.1, §3.2.3; pec-spec.md §7.2
// "Outcomes", §7.4).
//
// The ricevuta di presa in carico says we took the busta in charge, which is true only once
// Postfix has queued it: it is held in the store exactly as the access point holds the
// accettazione (confirm.go), and the milter adds the confirmation recipient to the busta it
// accepts. The held record's Key (the signer, the identificativo and our recipients) makes the
// sending MTA's retries find the first outcome: the same confirmation while the first is
// unconfirmed, a discard once the first busta is queued (each mailbox gets it once), so a busta
// sent twice gets one presa in carico.
//
// The antivirus runs on the content before anything is held. An infected busta is not delivered:
// one avviso di rilevazione virus per local recipient to the sending provider's mailReceipt, the
// busta in quarantine for 30 months (DPR 68/2005 art. 12), committed before the answer; the
// transaction is accepted and discarded, so nothing depends on what Postfix does next, and a
// HeldFinal record under the same Key answers a retry with the same discard and no second set.
// No presa in carico is issued for it: the table of pec-spec.md §7.4 gives the rilevazione virus
// alone for that condition, and the busta is never queued for delivery (INFERENCE).

// busta decides a valid busta.
func (r *reception) busta(ctx context.Context) (*Received, error) {
	e, c := r.e, r.v.c
	id := c.Daticert.Dati.Identificativo
	key := receptionKey(r.v.trust.Signer.Raw, id, r.local)
	prev, err := e.lookup(ctx, key)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		if res, done := r.replay(prev); done {
			return res, nil
		}
		key = "" // a record this code cannot replay: a new transaction, not found again by this key
	}
	start := time.Now()
	virus, scans, err := e.scanReceived(ctx, r.raw, r.v.c.Postacert)
	r.tm.Scans = scans
	r.tm.Scan = time.Since(start)
	if err != nil {
		return nil, &Temporary{Op: "scan", Err: err}
	}
	if virus != "" {
		return r.infected(ctx, key, virus)
	}
	return r.takeCharge(ctx, key)
}

// builder is the builder of the identity of our first recipient: the receiving provider signs
// what it emits for this transaction.
func (r *reception) builder() *Builder {
	id, _ := r.e.IdentityFor(r.local[0])
	return r.e.builder(id)
}

// event is the log entry of the reception of a PEC message (pec-spec.md §6.4): the
// transaction's data from its daticert, the sending provider, our recipients.
func (r *reception) event(ref TimeRef, tx *Transaction) store.Event {
	ev := txEvent(ref, tx, r.v.c.Daticert.Dati.GestoreEmittente)
	ev.About = append([]string(nil), r.local...)
	ev.QueueID, ev.Size = r.in.QueueID, int64(len(r.raw))
	return ev
}

// takeCharge holds the presa in carico until Postfix confirms it queued the busta.
func (r *reception) takeCharge(ctx context.Context, key string) (*Received, error) {
	e, d := r.e, r.v.c.Daticert
	ref := e.now()
	tx := TransactionFrom(d)
	bd := r.builder()
	start := time.Now()
	pic, err := bd.PresaInCarico(ref, tx, r.v.trust.Provider.MailReceipt, r.local)
	if err != nil {
		return nil, &Temporary{Op: "presa-in-carico", Err: err}
	}
	r.tm.Build = time.Since(start)
	token, err := newToken(e.deps.Rand)
	if err != nil {
		return nil, &Temporary{Op: "token", Err: err}
	}
	h := store.Held{Token: token, Key: key, Identificativo: tx.ID, State: store.HeldWaiting,
		Created: e.deps.Clock.Now(), Outcome: outcome{Ref: ref.Time()}.encode()}
	h.Expires = h.Created.Add(e.cfg.ConfirmExpiry)
	ev := r.event(ref, tx)
	ev.Kind = store.KindRicezioneBusta
	h.OnConfirm.Log(ev)
	if flags := contentFlags(r.v.c); flags != "" {
		// Issue 16 item 4: what the sending provider's content inspection found stays on the
		// busta and is in our log.
		fl := ev
		fl.Kind, fl.ErrorDetail = store.KindContenuto, flags
		h.OnConfirm.Log(fl)
	}
	own := ev
	own.Gestore, own.About = bd.ID.Name, nil
	emit(&h.OnConfirm, pic, own, ref.Time())
	ev.Kind = store.KindNonAccodato
	ev.ErrorDetail = fmt.Sprintf("busta %s ricevuta ma mai accodata da Postfix entro %s: nessuna ricevuta di presa in carico emessa", tx.ID, e.cfg.ConfirmExpiry)
	h.OnExpiry.Log(ev)
	start = time.Now()
	if err := e.deps.Store.Commit(ctx, &store.Batch{Holds: []store.Held{h}}); err != nil {
		if errors.Is(err, store.ErrExists) && key != "" {
			return r.decided(ctx, key) // a concurrent attempt decided first
		}
		return nil, &Temporary{Op: "commit", Err: err}
	}
	r.tm.Commit = time.Since(start)
	return &Received{Outcome: OutcomeAccepted, Kind: KindBusta, Identificativo: tx.ID,
		Confirm: e.ConfirmAddress(token), Timings: r.tm}, nil
}

// infected records the avvisi di rilevazione virus and the quarantined busta, and discards it.
func (r *reception) infected(ctx context.Context, key, virus string) (*Received, error) {
	e, d := r.e, r.v.c.Daticert
	ref := e.now()
	tx := TransactionFrom(d)
	bd := r.builder()
	b := &store.Batch{}
	ev := r.event(ref, tx)
	ev.Kind, ev.Virus = store.KindRicezioneBusta, virus
	b.Log(ev)
	start := time.Now()
	for _, rcpt := range r.local {
		// RFC 6109 §3.2.3: one per recipient of the receiving provider.
		m, err := bd.RilevazioneVirus(ref, tx, r.v.trust.Provider.MailReceipt, rcpt, virus)
		if err != nil {
			return nil, &Temporary{Op: "rilevazione-virus", Err: err}
		}
		own := ev
		own.Gestore, own.About = bd.ID.Name, nil
		emit(b, m, own, ref.Time())
	}
	r.tm.Build = time.Since(start)
	b.Keep(store.QuarantineItem{Identificativo: tx.ID, Time: ref.Time(), Virus: virus, Sender: tx.Sender,
		Recipients: r.local, QueueID: r.in.QueueID, Raw: r.raw})
	if key != "" {
		o := outcome{Ref: ref.Time()}
		o.Refused = &struct {
			Kind   string `json:"kind"`
			Reason string `json:"reason"`
			Virus  string `json:"virus,omitempty"`
		}{KindRilevazioneVirus.Info().Name, virusText(virus), virus}
		b.Hold(store.Held{Key: key, Identificativo: tx.ID, State: store.HeldFinal, Created: e.deps.Clock.Now(), Outcome: o.encode()})
	}
	start = time.Now()
	if err := e.deps.Store.Commit(ctx, b); err != nil {
		if errors.Is(err, store.ErrExists) && key != "" {
			return r.decided(ctx, key)
		}
		return nil, &Temporary{Op: "commit", Err: err}
	}
	r.tm.Commit = time.Since(start)
	return &Received{Outcome: OutcomeVirus, Kind: KindBusta, Identificativo: tx.ID, Discard: true, Virus: virus, Timings: r.tm}, nil
}

// replay answers a retried busta as its first transaction was answered: the same confirmation
// while it is unconfirmed (Postfix may not have queued the first copy), a discard once it is
// queued or after a virus.
//
// An expired attempt is unconfirmed too (see Engine.replay): the node that took the first
// copy may hold it in a Postfix that was down past confirm.expiry, while the sending MTA
// retried through our other MX. A new transaction would then give two prese in carico for
// one busta (RFC 6109 §3.2.1, §4: one receipt per event) once the first copy's late
// confirmation comes; the same confirmation gives one, released by whichever copy Postfix
// queues first (the delivery point stores the busta once per mailbox, by Message-ID). done is
// false only for a state this code does not know.
func (r *reception) replay(h *store.Held) (*Received, bool) {
	res := &Received{Kind: KindBusta, Identificativo: h.Identificativo, Retry: true, Timings: r.tm}
	switch h.State {
	case store.HeldWaiting, store.HeldExpired:
		res.Outcome, res.Confirm = OutcomeAccepted, r.e.ConfirmAddress(h.Token)
	case store.HeldReleased:
		res.Outcome, res.Discard = OutcomeDuplicate, true
	case store.HeldFinal:
		res.Outcome, res.Discard = OutcomeDuplicate, true
		if o, err := decodeOutcome(h.Outcome); err == nil && o.Refused != nil {
			res.Virus = o.Refused.Virus
		}
	default:
		return nil, false
	}
	return res, true
}

// decided answers a busta whose key a concurrent attempt stored first, as that attempt was.
func (r *reception) decided(ctx context.Context, key string) (*Received, error) {
	h, err := r.e.deps.Store.LookupHeld(ctx, key, time.Time{})
	if err != nil {
		return nil, &Temporary{Op: "lookup", Err: err}
	}
	res, done := r.replay(h)
	if !done {
		return nil, &Temporary{Op: "retry", Err: fmt.Errorf("attempt %s expired while retried", h.Identificativo)}
	}
	return res, nil
}
