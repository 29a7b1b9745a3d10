package pec

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// errAborted is the result of the recipients an aborted delivery never handed to Dovecot.
var errAborted = errors.New("delivery aborted before the message was handed to the mailbox store")

// Commit decides every recipient from the mailbox store's answers, writes the receipts,
// their log events and the delivery records in one store commit, and returns one outcome per
// recipient in RCPT order. It must be called once, after SetResult for every Forward
// recipient (a recipient without a result counts as "Dovecot not reached").
//
// One time reference for the whole transaction (DM art. 9, pec-spec.md §6.2): every
// receipt and avviso of it says the same instant.
func (d *Delivery) Commit(ctx context.Context) []RcptOutcome {
	return d.finish(ctx, false)
}

// Abort ends a delivery whose message was not handed to the mailbox store: every open
// record is released, no avviso is emitted whatever the busta's age, and every undecided
// recipient gets a temporary failure. After Commit it does nothing, so adapters may defer it.
func (d *Delivery) Abort(ctx context.Context) {
	if !d.done {
		d.finish(ctx, true)
	}
}

func (d *Delivery) finish(ctx context.Context, abort bool) []RcptOutcome {
	defer d.release()
	d.done = true
	ref := d.e.now()
	b := &store.Batch{}
	for _, r := range d.rcpts {
		if r.out != nil {
			continue
		}
		if r.noDomain {
			// pec-spec.md §7.4: an unknown or unserved domain is no-dominio (INFERENCE).
			r.out = d.avviso(r, &RcptOutcome{Rcpt: r.addr}, daticert.ErroreNoDominio, "5.1.2", failureText("5.1.2", ""), ref, b)
			continue
		}
		res := r.result
		if res == nil || abort {
			res = &MailboxResult{Err: errAborted}
			if !abort {
				res.Err = errors.New("no answer from the mailbox store")
			}
		}
		r.out = d.decide(r, res, ref, b, abort)
	}
	outs := make([]RcptOutcome, len(d.rcpts))
	err := d.e.deps.Store.Commit(ctx, b)
	for i, r := range d.rcpts {
		outs[i] = *r.out
		if err != nil && r.claimed {
			// Nothing of this transaction is recorded: the retry finds the record open and
			// asks the mailbox (a stored message is not stored twice, its receipt not lost).
			outs[i] = RcptOutcome{Rcpt: r.addr, Err: &Temporary{Op: "commit", Err: err}, Outcome: DeliveredTempfail, Found: r.found}
		}
	}
	return outs
}

// release forgets the records this delivery registered as in flight.
func (d *Delivery) release() {
	d.e.mu.Lock()
	for _, k := range d.held {
		delete(d.e.delivering, k)
	}
	d.held = nil
	d.e.mu.Unlock()
}

// decide turns one recipient's answer into its outcome and adds to b what it commits.
func (d *Delivery) decide(r *deliveryRcpt, res *MailboxResult, ref TimeRef, b *store.Batch, abort bool) *RcptOutcome {
	out := &RcptOutcome{Rcpt: r.addr, Found: r.found}
	stored := res.Err == nil && res.Code >= 200 && res.Code < 300
	switch {
	case stored:
		return d.stored(r, out, ref, b)
	case res.Err != nil && res.Unknown:
		// The message may be in the mailbox: the record stays open, the retry asks the
		// mailbox (see "The crash window").
		out.Err, out.Outcome = &Temporary{Op: "mailbox", Err: res.Err}, DeliveredTempfail
		return out
	case res.Err == nil && res.Code >= 500:
		return d.refused(r, out, res, ref, b)
	}
	// Refused for now, or Dovecot not reached: nothing was stored.
	if !abort && d.busta && !d.bustaTime.IsZero() && ref.Time().Sub(d.bustaTime) > d.e.cfg.Delivery.MaxDelay {
		code, desc := "5.4.7", "tempo massimo di consegna superato"
		if res.Err == nil {
			desc += " (" + failureText(res.Enhanced, "") + ")"
		} else {
			desc += " (casella non raggiungibile)"
		}
		return d.avviso(r, out, daticert.ErroreAltro, code, desc, ref, b)
	}
	d.mark(b, r, false, "", ref)
	out.Outcome = DeliveredTempfail
	if res.Err != nil {
		out.Err = &Temporary{Op: "mailbox", Err: res.Err}
	} else {
		out.Err = &StatusError{Code: res.Code, Enhanced: enhancedOr(res.Enhanced, res.Code), Text: "Mailbox temporarily unavailable, try again later"}
	}
	return out
}

// stored: the mailbox holds the message. A valid busta gets its avvenuta consegna (RFC 6109
// §3.3.2); anything else is delivered with no receipt (§2.2.3).
func (d *Delivery) stored(r *deliveryRcpt, out *RcptOutcome, ref TimeRef, b *store.Batch) *RcptOutcome {
	out.Text, out.Outcome = "Delivered", DeliveredSilently
	if !d.busta {
		out.Detail = d.why
		if d.wrapped != nil {
			b.Log(d.anomalyEvent(ref, r.addr))
		}
		if d.kind.IsReceipt() && d.tx != nil && d.tx.ID != "" {
			// The log records that a receipt or notice reached our user's mailbox.
			ev := txEvent(ref, d.tx, d.c.Daticert.Dati.GestoreEmittente)
			ev.Kind, ev.About, ev.Generated, ev.QueueID = store.KindConsegnaRicevuta, []string{r.addr}, []string{d.msgID}, d.req.QueueID
			ev.Size = int64(len(d.req.Message))
			b.Log(ev)
		}
		d.mark(b, r, true, DeliveredSilently, ref)
		return out
	}
	id, _ := d.e.IdentityFor(r.addr)
	m, err := d.e.builder(id).Consegna(ref, d.tx, r.addr, RecipientInTo(d.c.Postacert, r.addr), d.c.Postacert)
	if err != nil {
		// The message is in the mailbox but its receipt cannot be built now (the signer is
		// down): the record stays open and the retry, finding it stored, tries again.
		out.Err, out.Outcome = &Temporary{Op: "consegna", Err: err}, DeliveredTempfail
		return out
	}
	d.emitReceipt(b, m, ref, r.addr)
	d.mark(b, r, true, m.Kind.Info().Name, ref)
	out.Receipt, out.Outcome, out.Text = m.Kind, DeliveredReceipt, "Delivered; ricevuta di avvenuta consegna sent to the sender"
	return out
}

// refused: Dovecot refused for good. A valid busta gets the avviso di mancata consegna and
// Postfix gets 250, because the sender is told through PEC, not through a DSN (pec-spec.md
// §7.3); anything else gets Dovecot's refusal, so Postfix bounces it as plain mail
// (RFC 6109 §2.2.3).
func (d *Delivery) refused(r *deliveryRcpt, out *RcptOutcome, res *MailboxResult, ref TimeRef, b *store.Batch) *RcptOutcome {
	enh := enhancedOr(res.Enhanced, res.Code)
	if d.busta {
		errore := daticert.ErroreAltro
		switch {
		case strings.HasPrefix(enh, "5.1.1"):
			errore = daticert.ErroreNoDest
		case strings.HasPrefix(enh, "5.1.2"):
			errore = daticert.ErroreNoDominio
		}
		return d.avviso(r, out, errore, enh, failureText(enh, ""), ref, b)
	}
	d.mark(b, r, false, "", ref)
	out.Outcome = DeliveredRefused
	out.Err = &StatusError{Code: res.Code, Enhanced: enh, Text: failureReply(enh), Label: DeliveredRefused}
	return out
}

// avviso commits the avviso di mancata consegna of a busta for r (RFC 6109 §3.3.3): errore
// and errore-esteso "<enhanced status> - <gestore> - <description>" (pec-spec.md §7.3).
func (d *Delivery) avviso(r *deliveryRcpt, out *RcptOutcome, errore daticert.Errore, code, desc string, ref TimeRef, b *store.Batch) *RcptOutcome {
	id, _ := d.e.IdentityFor(r.addr)
	esteso := DeliveryErrorText(code, id.Name, desc)
	m, err := d.e.builder(id).MancataConsegna(ref, d.tx, r.addr, errore, esteso)
	if err != nil {
		// Nothing was stored: release, so that the retry starts anew.
		d.mark(b, r, false, "", ref)
		out.Err, out.Outcome = &Temporary{Op: "mancata consegna", Err: err}, DeliveredTempfail
		return out
	}
	d.emitReceipt(b, m, ref, r.addr)
	d.mark(b, r, true, m.Kind.Info().Name, ref)
	out.Receipt, out.Outcome, out.Detail = m.Kind, DeliveredFailed, esteso
	out.Text = "PEC not delivered; avviso di mancata consegna sent to the sender"
	return out
}

// emitReceipt records a receipt or avviso of this delivery: to the reverse path of the busta
// (RFC 6109 §3.3: notifications go to the original sender, the envelope reverse-path,
// ignoring Reply-To), its log event, and the tracking of our own sender when the busta came
// from one of our users (same provider, pec-spec.md §2.3: the receipt never passes our
// reception point, so the tracking row moves here; rows of other providers' transactions
// are not in our store and the transition is ignored).
func (d *Delivery) emitReceipt(b *store.Batch, m *Message, ref TimeRef, rcpt string) {
	if rp := strings.TrimSpace(d.req.MailFrom); rp != "" {
		m.To = []string{rp}
	}
	id, _ := d.e.IdentityFor(rcpt)
	ev := txEvent(ref, d.tx, id.Name)
	ev.QueueID, ev.Size = d.req.QueueID, int64(len(d.req.Message))
	emit(b, m, ev, ref.Time())
	if in := m.Kind.Info().Track; in != "" && !in.IsNotice() {
		b.Apply(store.Transition{Identificativo: d.tx.ID, Recipient: rcpt, Input: in, At: ref.Time(), ProvesQueued: d.e.provesQueued(d.tx.ID)})
	}
}

// mark closes (done) or releases the record of a recipient this delivery claimed.
func (d *Delivery) mark(b *store.Batch, r *deliveryRcpt, done bool, outcome string, ref TimeRef) {
	if !r.claimed {
		return
	}
	b.Mark(store.DeliveryMark{DeliveryKey: r.key, Owner: d.e.cfg.Delivery.Owner, Done: done, Outcome: outcome, At: ref.Time()})
}

// enhancedOr is s, or the class-only status of code when Dovecot gave none.
func enhancedOr(s string, code int) string {
	if validEnhanced(s, code) {
		return s
	}
	return fmt.Sprintf("%d.0.0", code/100)
}

// failureText is the description of a delivery failure in errore-esteso and the avviso's
// text, by RFC 3463 status (pec-spec.md §7.3, INFERENCE until AgID NOTA 12 is read: 5.1.1
// user or mailbox unknown -> no-dest; 5.1.2 domain -> no-dominio; 5.2.x mailbox disabled or
// full -> altro).
func failureText(enh, fallback string) string {
	_, rest, _ := strings.Cut(enh, ".")
	switch rest {
	case "1.1":
		return "indirizzo non valido"
	case "1.2":
		return "dominio non valido"
	case "2.1":
		return "casella disattivata"
	case "2.2":
		return "casella piena"
	case "3.4":
		return "messaggio troppo grande per la casella"
	}
	if strings.HasPrefix(rest, "2.") {
		return "casella non in grado di accettare messaggi"
	}
	if fallback != "" {
		return fallback
	}
	return "consegna non riuscita"
}

// failureReply is the SMTP text of a refusal passed to Postfix (never Dovecot's own text,
// which may name internal hosts: STYLE 4).
func failureReply(enh string) string {
	switch failureText(enh, "") {
	case "indirizzo non valido":
		return "Mailbox unknown"
	case "casella piena":
		return "Mailbox full"
	case "casella disattivata":
		return "Mailbox disabled"
	}
	return "Mailbox unavailable"
}

// anomalyEvent is the log entry of a busta di anomalia the delivery point made (see "Mail that
// never passed the reception point"), for the mailbox rcpt that stored it: the original's
// sender (From, else the envelope sender), subject and Message-ID, and why it is no PEC message.
func (d *Delivery) anomalyEvent(ref TimeRef, rcpt string) store.Event {
	ev := uncertifiedEvent(ref, d.c.Header, d.req.MailFrom, d.req.QueueID, len(d.req.Message), d.why)
	ev.Kind, ev.About, ev.Generated = store.KindBustaAnomalia, []string{rcpt}, []string{d.wrapped.MessageID}
	ev.Recipients = []store.Recipient{{Addr: rcpt, Type: store.Certified}}
	return ev
}
