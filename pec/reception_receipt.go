package pec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// A valid ricevuta or avviso at the reception point (pec-spec.md §7.2 "Outcomes": delivered
// unchanged, no new receipt). The tracking of the recipients it is about moves by the kind
// table's Track input (kind.go: presa in carico; avvenuta and mancata consegna; rilevazione
// virus as a mancata consegna), committed with a log event before the answer: the receipt was
// signed by the recipient's provider, so what it says is true whatever Postfix does next, and a
// repeated receipt is a Duplicate the store ignores. Receipts about transactions we do not
// track are delivered all the same (the store ignores their transitions).
//
// A presa in carico and a rilevazione virus go to the sending provider's mailReceipt, our
// service mailbox (RFC 6109 §2.2.5): addressed to a user instead, they are redirected there.
// A rilevazione virus for one of our transactions also yields the avviso di mancata consegna
// per virus to our sender (RFC 6109 §3.2.4, pec-spec.md §3.2 #8; the sender-side outcome of
// issue 15).

func (r *reception) receipt(ctx context.Context) (*Received, error) {
	e, c := r.e, r.v.c
	d, info := c.Daticert, c.Kind.Info()
	ref := e.now()
	tx := TransactionFrom(d)
	res := &Received{Outcome: OutcomeAccepted, Kind: c.Kind, Identificativo: tx.ID}
	if c.Kind == KindPresaInCarico || c.Kind == KindRilevazioneVirus {
		res.Redirect, res.Drop = r.serviceMailbox()
	}
	// The 12 h and 24 h notices are the sender's provider's own (pec-spec.md §6.3): their
	// transition was committed with them by the sweep (sweep.go), so one looped through our MX
	// to our user moves nothing; applied again it would be a Conflict, a temporary failure for
	// ever. Another provider's notice is no receipt about our recipients either.
	track := info.Track
	if track.IsNotice() {
		track = ""
	}
	b := &store.Batch{}
	if track != "" {
		proves := e.provesQueued(tx.ID)
		for _, a := range about(c) {
			b.Apply(store.Transition{Identificativo: tx.ID, Recipient: CanonAddr(a), Input: track, At: ref.Time(), ProvesQueued: proves})
		}
	}
	if track != "" || !r.signedByUs() {
		// Our own receipts that move nothing (the accettazione looped through the MX) are
		// already in the log as emitted.
		ev := r.event(ref, tx)
		ev.Kind, ev.About = store.KindRicezioneRicevuta, about(c)
		ev.Error, ev.ErrorDetail = string(d.Errore), d.Dati.ErroreEsteso
		if mid, ok := c.Header.Get("Message-ID"); ok {
			ev.Generated = []string{strings.TrimSpace(mid)}
		}
		b.Log(ev)
	}
	extra := &store.Batch{}
	if c.Kind == KindRilevazioneVirus {
		if err := r.virusOutcome(ctx, ref, extra); err != nil {
			return nil, err
		}
	}
	if b.Empty() && extra.Empty() {
		return res, nil
	}
	start := time.Now()
	err := e.deps.Store.Commit(ctx, store.Merge(b, extra))
	if errors.Is(err, store.ErrExists) && !extra.Empty() {
		err = e.deps.Store.Commit(ctx, b) // the avviso per virus was issued by an earlier copy
	}
	if err != nil {
		return nil, &Temporary{Op: "commit", Err: err}
	}
	r.tm.Commit = time.Since(start)
	res.Timings = r.tm
	return res, nil
}

// serviceMailbox returns our receipt address and the local recipients it replaces: every local
// recipient that is not one of our receipt addresses. The address is "" when it is already a
// recipient (nothing to add).
func (r *reception) serviceMailbox() (string, []string) {
	var drop []string
	present := map[string]bool{}
	target := ""
	for _, rcpt := range r.local {
		id, _ := r.e.IdentityFor(rcpt)
		if strings.EqualFold(rcpt, id.ReceiptAddress) {
			present[foldAddr(rcpt)] = true
			continue
		}
		drop = append(drop, rcpt)
		if target == "" {
			target = id.ReceiptAddress
		}
	}
	if len(drop) == 0 || present[foldAddr(target)] {
		return "", drop
	}
	return target, drop
}

// signedByUs reports whether the message's signer is our own provider (a same-provider receipt
// looped through the MX): its index record manages one of our domains.
func (r *reception) signedByUs() bool {
	p := r.v.trust.Provider
	for _, id := range r.e.cfg.Identities {
		if p != nil && p.Manages(id.Domain) {
			return true
		}
	}
	return false
}

// virusOutcome adds to b the avviso di mancata consegna per virus to our sender, when the
// rilevazione virus is about a recipient of one of our transactions not already closed by a
// mancata consegna. A HeldFinal record keyed by the identificativo and the recipient makes it
// once even when two copies of the rilevazione race (Commit then fails with ErrExists).
func (r *reception) virusOutcome(ctx context.Context, ref TimeRef, b *store.Batch) error {
	e, d := r.e, r.v.c.Daticert
	rcpt := strings.TrimSpace(d.Dati.Consegna)
	rows, err := e.deps.Store.Tracking(ctx, d.Dati.Identificativo)
	if err != nil {
		return &Temporary{Op: "tracking", Err: err}
	}
	var row *store.Tracking
	for i := range rows {
		if foldAddr(rows[i].Recipient) == foldAddr(rcpt) {
			row = &rows[i]
		}
	}
	if row == nil || !row.FailedAt.IsZero() {
		return nil // not ours, or already closed: no avviso (pec-spec.md §6.3 INFERENCE)
	}
	// The transaction as we sent it (the busta's daticert kept with the tracking row); the
	// rilevazione's own intestazione when that cannot be read.
	tx := TransactionFrom(d)
	if bd, err := daticert.Parse(row.Data); err == nil {
		tx = TransactionFrom(bd)
	}
	id, _ := e.IdentityFor(tx.Sender)
	// Our own rilevazione says "virus informatico rilevato: NAME" (virusText); another
	// provider's errore-esteso is taken as the name.
	virus := strings.TrimPrefix(d.Dati.ErroreEsteso, "virus informatico rilevato: ")
	m, err := e.builder(id).MancataConsegnaVirus(ref, tx, rcpt, virus)
	if err != nil {
		return &Temporary{Op: "mancata-consegna-virus", Err: err}
	}
	ev := txEvent(ref, tx, id.Name)
	ev.Virus = virus
	emit(b, m, ev, ref.Time())
	sum := sha256.Sum256([]byte("virus-outcome\x00" + tx.ID + "\x00" + foldAddr(rcpt)))
	b.Hold(store.Held{Key: hex.EncodeToString(sum[:]), Identificativo: tx.ID, State: store.HeldFinal,
		Created: e.deps.Clock.Now(), Outcome: outcome{Ref: ref.Time()}.encode()})
	return nil
}
