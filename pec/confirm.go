package pec

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// # Nothing attested before Postfix holds the message
//
// The accettazione says the busta left; the presa in carico says we took the busta in
// charge (DPR 68/2005 art. 6, RFC 6109 §3.1.4, §3.2.1). Both may exist only once Postfix has
// queued that busta, and a milter cannot know that: its reply may be lost, cleanup may refuse
// the replacement (message_size_limit), smtpd or Postfix may die before the queue file is
// committed, the deadline may pass. So the engine commits such a step as a held record
// (store.Held): the receipt, its log events and the tracking rows wait in the store, and the
// milter adds one more envelope recipient to the message it hands back, <token>@<confirm
// domain>, with NOTIFY=NEVER. Postfix's transport_maps routes that domain to our
// confirmation listener (LMTP). Only a message in Postfix's queue can be delivered there, and
// the token is 128 random bits kept only in the store and in that queue file, so its delivery
// is the proof: the listener calls Engine.Confirm, which releases the held step exactly once.
// A held step never confirmed expires (Config.ConfirmExpiry) with a log event saying what
// happened instead, and nothing is ever attested for it. A verified receipt about the
// transaction is the same proof, and it often comes first: it releases the accettazione's
// step too (provesQueued), and the confirmation that follows finds it released.
//
// The same record makes a submission idempotent: a client that retries after a lost reply
// (same login, same bytes apart from Postfix's trace fields, within Config.RetryWindow) finds
// the first outcome: the same refusal with no second avviso; the same identificativo and
// confirmation recipient while the first busta is unconfirmed; a silent discard (250, nothing
// queued) once the first busta is in the queue.
//
// Cost: one extra local LMTP delivery of the busta per transaction (postfix-conf/README.md
// has the numbers and the wiring).

// DefaultConfirmDomain is the domain of confirmation recipients. ".invalid" (RFC 2606) can
// never resolve, so a confirmation that escaped the transport map could never leave the host.
const DefaultConfirmDomain = "confirm.pec.invalid"

// ErrUnknownConfirmation answers a confirmation recipient whose token the store does not
// know (forged, mistyped, or purged long after its step).
var ErrUnknownConfirmation = &StatusError{Code: 550, Enhanced: "5.1.1", Text: "Unknown confirmation"}

// newToken is a fresh confirmation token: 26 base32 characters, 128 random bits.
func newToken(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	return strings.ToLower(b32.EncodeToString(b[:])), nil
}

// ConfirmAddress is the confirmation recipient of a held step.
func (e *Engine) ConfirmAddress(token string) string { return token + "@" + e.cfg.ConfirmDomain }

// IsConfirmation reports whether an envelope recipient is a confirmation recipient. The access
// point refuses them from clients (they could only be guesses).
func (e *Engine) IsConfirmation(rcpt string) bool {
	_, dom, ok := strings.Cut(rcpt, "@")
	return ok && strings.EqualFold(dom, e.cfg.ConfirmDomain)
}

// Confirmed is the outcome of a confirmation.
type Confirmed struct {
	Identificativo string
	Now            bool // this confirmation released the step (false: an earlier one did)
	Late           bool // released after the step had expired
}

// Confirm releases the held step of a confirmation recipient delivered by Postfix: its
// receipt goes to the outbox and its events to the log, once, however often Postfix
// delivers the confirmation. An unknown token is ErrUnknownConfirmation; a store failure is
// temporary (Postfix retries the confirmation).
func (e *Engine) Confirm(ctx context.Context, rcpt string) (*Confirmed, error) {
	token, dom, ok := strings.Cut(rcpt, "@")
	if !ok || !strings.EqualFold(dom, e.cfg.ConfirmDomain) || token == "" {
		return nil, ErrUnknownConfirmation
	}
	now := e.deps.Clock.Now()
	token = strings.ToLower(token)
	h, err := e.deps.Store.Confirm(ctx, token, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrUnknownConfirmation
	case err != nil:
		return nil, &Temporary{Op: "confirm", Err: err}
	}
	e.mu.Lock()
	delete(e.issued, token)
	e.mu.Unlock()
	return &Confirmed{Identificativo: h.Identificativo, Now: h.ReleasedAt.Equal(now), Late: h.Late}, nil
}

// Issued records that Postfix was handed a message carrying the confirmation recipient of
// token (the adapter calls it once its reply is on the wire), so that a graceful stop can wait
// for the confirmations of the transactions it answered (Unconfirmed).
func (e *Engine) Issued(rcpt string) {
	token, _, _ := strings.Cut(rcpt, "@")
	e.mu.Lock()
	e.issued[strings.ToLower(token)] = e.deps.Clock.Now()
	e.mu.Unlock()
}

// Unconfirmed is how many confirmations this process handed to Postfix and has not yet
// received itself (older ones, past ConfirmExpiry, are forgotten). A graceful stop keeps the
// confirmation listener open until it is zero, so that a stop does not delay the receipts of
// the last transactions until the next start.
func (e *Engine) Unconfirmed() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	cut := e.deps.Clock.Now().Add(-e.cfg.ConfirmExpiry)
	for t, at := range e.issued {
		if at.Before(cut) {
			delete(e.issued, t)
		}
	}
	return len(e.issued)
}

// ExpireHeld expires the held steps whose confirmation did not come in time: each commits its
// OnExpiry batch (the log event saying the message was never queued). Run by a leased job.
func (e *Engine) ExpireHeld(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := e.deps.Store.ExpireHeld(ctx, e.deps.Clock.Now(), 100)
		total += n
		if err != nil || n < 100 {
			return total, err
		}
	}
}

// PurgeHeld forgets the outcomes older than the retry window.
func (e *Engine) PurgeHeld(ctx context.Context) (int64, error) {
	return e.deps.Store.PurgeHeld(ctx, e.deps.Clock.Now().Add(-e.cfg.RetryWindow))
}

// outcome is what a held record remembers to answer a retry as the first attempt was
// answered (store.Held.Outcome).
type outcome struct {
	Ref     time.Time `json:"ref"` // the time reference of the step
	Refused *struct {
		Kind   string `json:"kind"`
		Reason string `json:"reason"`
		Virus  string `json:"virus,omitempty"`
	} `json:"refused,omitempty"`
}

func (o outcome) encode() []byte {
	b, _ := json.Marshal(o)
	return b
}

func decodeOutcome(b []byte) (outcome, error) {
	var o outcome
	if err := json.Unmarshal(b, &o); err != nil {
		return o, fmt.Errorf("pec: held outcome: %w", err)
	}
	return o, nil
}

// submissionKey identifies a submission across the client's retries: the login and the
// message bytes without the trace fields Postfix adds to each attempt (Received,
// Return-Path), which include the queue id and the time. The client's Message-ID is part of
// the bytes, so two different messages never share a key.
func submissionKey(login string, msg []byte) string {
	h := sha256.New()
	h.Write([]byte("access\x00" + strings.ToLower(strings.TrimSpace(login)) + "\x00"))
	rest := msg
	skipping := false
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		line := rest
		if i >= 0 {
			line, rest = rest[:i+2], rest[i+2:]
		} else {
			rest = nil
		}
		if len(line) == 2 && line[0] == '\r' { // end of the header
			h.Write(line)
			h.Write(rest)
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, _ := strings.Cut(string(line[:min(len(line), 40)]), ":")
			skipping = strings.EqualFold(name, "Received") || strings.EqualFold(name, "Return-Path")
		}
		if !skipping {
			h.Write(line)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

var crlf = []byte("\r\n")

// provesQueued reports whether a verified receipt about transaction id proves that Postfix
// queued its busta (store.Transition.ProvesQueued): the transaction is one of ours (its
// identificativo is in one of our domains). The access point's held step inserts the
// tracking rows, and a receipt often overtakes the confirmation that releases it (Postfix
// delivers the busta and the confirmation recipient in parallel). A presa in carico or a
// consegna signed by a provider (or by our own delivery point) can exist only once Postfix
// queued the busta and sent it on, so the store releases that step with the receipt: the
// accettazione, its event and the rows, then the row moves. Refused until the confirmation
// came, the receipt would cost the peer a retry (measured: 408 such retries for 250
// transactions under load); ignored, it would be lost to the tracking and a false preavviso
// would follow. Another provider's transaction is taken as before.
func (e *Engine) provesQueued(id string) bool {
	_, ours := e.IdentityFor(id)
	return ours
}
