package pec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/inspect"
	"github.com/gestore-pec/gestore/pec/store"
)

// The access point (punto di accesso, RFC 6109 §3.1).

// Submission is one SMTP transaction at the access point, as the milter saw it at
// end-of-message.
type Submission struct {
	QueueID  string   // Postfix queue id, for logs only
	Login    string   // SASL login ({auth_authen}); "" when the client did not authenticate
	MailFrom string   // envelope sender, without angle brackets
	Rcpts    []string // envelope recipients, in RCPT order
	Message  []byte   // the message as received (header fields and body), CRLF line ends

	// Prepared, when set, gets the busta and its confirmation recipient as soon as they are
	// built, before the antivirus verdict and the commit (issue 19, P2': the caller can hand
	// a large busta to the MTA while clamd finishes). It is called at most once per
	// Submission, even when Submit replays a concurrent attempt inside (decided), from
	// Submit's goroutine, and must not block. What it gets is not an acceptance: the MTA
	// must not queue it unless Submit then returns a Submitted with Handed set. Any other
	// outcome (a refusal, a temporary failure, another busta) must make the MTA drop it.
	Prepared func(busta [][]byte, confirm string)

	// Scan, when set, is the antivirus scan of Message started while it arrived
	// (Engine.StreamScan). Submit uses its verdict when the stream carried exactly Message and
	// scans Message whole otherwise; it aborts a stream it does not use. The caller closes it
	// after Submit.
	Scan *ScanStream

	handedOut bool // Prepared was called: a retry replayed inside this Submit must not call it again
}

// Submitted is the outcome of an accepted submission: the busta that replaces the message in
// Postfix's queue, and the confirmation recipient to add to it (NOTIFY=NEVER), whose delivery
// releases the accettazione held in the store (confirm.go). With Discard set, the submission
// is a retry whose first busta Postfix already queued: accept it and queue nothing.
type Submitted struct {
	Identificativo string
	Time           time.Time // the time reference of the busta and the accettazione
	Busta          [][]byte  // the signed busta di trasporto, CRLF, in parts (Message.Parts)
	Confirm        string    // the confirmation recipient
	Discard        bool
	Retry          bool     // a retry of an earlier attempt (same identificativo)
	Certified      []string // To/Cc recipients in the index (certificato)
	External       []string // To/Cc recipients not in the index (esterno)
	Timings        Timings
	Handed         bool // Busta and Confirm are those given to Submission.Prepared
}

// Timings says where the time of one Submit went, for logs and capacity planning.
type Timings struct {
	Scan    time.Duration // waiting for the antivirus's verdict within Submit
	Inspect time.Duration // the content policy (pec/inspect), while clamd scans
	Waited  time.Duration // of Scan, what was left after the inspection and the build
	Ahead   time.Duration // how long the scan had run before Submit (streamed while the message arrived)
	Build   time.Duration // building and signing the busta and the receipt, while clamd scans
	Commit  time.Duration // the store transaction
}

// LogValue renders the timings in milliseconds.
func (t Timings) LogValue() slog.Value {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return slog.GroupValue(slog.Float64("scan_ms", ms(t.Scan)), slog.Float64("waited_ms", ms(t.Waited)), slog.Float64("ahead_ms", ms(t.Ahead)), slog.Float64("inspect_ms", ms(t.Inspect)),
		slog.Float64("build_ms", ms(t.Build)), slog.Float64("commit_ms", ms(t.Commit)))
}

// Submit processes one submission at end-of-message (RFC 6109 §3.1, pec-spec.md §2.2
// steps 2–4, §7.1):
//
//   - formal checks with the authenticated login, MAIL FROM and From (§7.1 points 1–6);
//   - the antivirus on the whole message (point 7);
//   - the index lookup of every To/Cc recipient (certificato / esterno, §2.4);
//   - one time reference and one identificativo for the transaction (§6.1, §6.2);
//   - the busta and the accettazione built and signed by the identity of the sender's PEC
//     domain, and ONE store commit holding them as a held step (confirm.go): the accettazione
//     in the outbox, the log events and the tracking rows of the certified recipients are
//     written when Postfix confirms it queued the busta, never before.
//
// It returns the busta and its confirmation recipient on acceptance; a *Refused when the
// message was refused and the avviso committed; ErrNotAuthenticated without a login; any
// other error is temporary and nothing was committed (DESIGN.md "Durability"). A retry of a
// submission already decided gets the first decision (confirm.go).
func (e *Engine) Submit(ctx context.Context, sub *Submission) (*Submitted, error) {
	if strings.TrimSpace(sub.Login) == "" {
		return nil, ErrNotAuthenticated
	}
	if _, ok := e.IdentityFor(sub.Login); !ok {
		// Issue 12 item 1: only the provider's PEC mailboxes are certified. An ordinary
		// mailbox sharing this Postfix/Dovecot gets a plain refusal, no avviso: it is not a
		// PEC user to notify.
		return nil, ErrNotPECSender
	}
	key := submissionKey(sub.Login, sub.Message)
	if prev, err := e.lookup(ctx, key); err != nil {
		return nil, err
	} else if prev != nil {
		if res, err, done := e.replay(ctx, sub, prev); done {
			return res, err
		}
		key = "" // a record this code cannot replay: a new transaction, not found again by this key
	}
	return e.submit(ctx, sub, key, nil)
}

// submit decides a submission. again, when set, is the held step of an earlier attempt still
// waiting for its confirmation: the busta is rebuilt with its identificativo and time
// reference, and nothing new is committed. The busta goes to Submission.Prepared as soon as
// it is signed, before the verdict (handOut): handing it to Postfix attests nothing, Postfix
// queues it only when the acceptance follows.
func (e *Engine) submit(ctx context.Context, sub *Submission, key string, again *store.Held) (*Submitted, error) {
	env := Envelope{MailFrom: sub.MailFrom, Rcpts: sub.Rcpts}
	orig, formal := e.check(sub, env)

	begun := time.Now()
	scan, big, stop := e.scanWithin(ctx, sub, orig, env)
	defer stop()
	if formal == nil {
		formal = big
	}

	// One instant for every message and event of this transaction (DM art. 9, §6.2).
	ref := e.now()
	bd := e.builder(e.senderIdentity(sub))
	var id string
	var err error
	if again != nil {
		o, err := decodeOutcome(again.Outcome)
		if err != nil {
			return nil, &Temporary{Op: "retry", Err: err}
		}
		ref, id = NewTimeRef(o.Ref, e.cfg.Location), again.Identificativo
	} else if id, err = NewIdentificativo(ref.Time(), e.cfg.Node, bd.ID.MailDomain(), e.deps.Rand); err != nil {
		return nil, &Temporary{Op: "identificativo", Err: err}
	}
	tx := NewSubmissionTransaction(id, orig, env, e.recipientType)
	s := &step{e: e, bd: bd, sub: sub, orig: orig, ref: ref, tx: tx, key: key, again: again, begun: begun}
	if s.token, err = e.confirmToken(again); err != nil {
		return nil, err
	}
	if formal == nil {
		formal = s.inspect()
	}
	if formal == nil && scan != nil {
		s.prepare()
	}
	virus, err := s.verdict(scan)
	if err != nil {
		return nil, err
	}
	switch {
	case virus != "":
		return nil, s.refuse(ctx, KindNonAccettazioneVirus, nil, virus)
	case formal != nil:
		return nil, s.refuse(ctx, KindNonAccettazione, formal, "")
	}
	return s.accept(ctx)
}

// scanWithin starts the antivirus scan of a message within the size limit, and returns the
// size verdict of one over it, unscanned; stop ends the scan early.
//
// INFERENCE (pec-spec.md §7.1 ordering): the scan runs before any accettazione is emitted,
// and a virus wins over a formal exception, so that the infected message is quarantined
// whatever else is wrong with it. The size verdict comes first: a message over the size
// limit is refused unscanned (issue 12 item 9), so that clamd never gets more than the limit
// and a message too large for it is not answered 4xx for ever.
//
// The scan runs beside the rest of the decision (issue 19): the content inspection and the
// busta and accettazione are built and signed while clamd scans, and nothing is decided,
// answered or committed before its verdict (scan.go).
func (e *Engine) scanWithin(ctx context.Context, sub *Submission, orig *Original, env Envelope) (*scanJob, *FormalError, func()) {
	if big := CheckSize(orig, env, e.cfg.Limits); big != nil {
		if sub.Scan != nil {
			sub.Scan.Close()
		}
		return nil, big, func() {}
	}
	j, stop := e.scan(ctx, sub, orig)
	return j, nil, stop
}

// scan is the antivirus scan of the message: the one streamed while it arrived when it
// carried exactly this message (scanstream.go), a new one otherwise. stop ends it early (the
// message is refused for its size, or Submit returns without waiting for it).
func (e *Engine) scan(ctx context.Context, sub *Submission, orig *Original) (*scanJob, func()) {
	if sub.Scan != nil && len(orig.Raw) == len(sub.Message) {
		if j := sub.Scan.scanOf(orig.Raw); j != nil {
			after := context.AfterFunc(ctx, sub.Scan.Close)
			return j, func() { after(); sub.Scan.Close() }
		}
	}
	if sub.Scan != nil {
		sub.Scan.Close()
	}
	sctx, cancel := context.WithCancel(ctx)
	return e.startScan(sctx, orig.Raw), cancel
}

// confirmToken is the confirmation token of a submission's held step: the retried attempt's,
// or a new one.
func (e *Engine) confirmToken(again *store.Held) (string, error) {
	if again != nil {
		return again.Token, nil
	}
	t, err := newToken(e.deps.Rand)
	if err != nil {
		return "", &Temporary{Op: "token", Err: err}
	}
	return t, nil
}

// inspect applies the content policy (issue 16; pec/inspect): a forbidden attachment, an
// archive bomb, or (by policy) macros or files that cannot be checked refuse the message with
// the avviso naming the file; otherwise macros and unchecked files flag the busta: header
// fields for the receiving provider and a courtesy note for the recipient, and the log
// records the flags.
func (s *step) inspect() *FormalError {
	if s.e.deps.Inspector == nil {
		return nil
	}
	start := time.Now()
	rep := s.e.deps.Inspector.Inspect(s.orig.Raw)
	s.tm.Inspect += time.Since(start)
	if rep.Verdict&inspect.Refuse != 0 {
		return &FormalError{Reason: ReasonContent, Detail: rep.Reason()}
	}
	for _, h := range rep.Headers() {
		s.tx.FlagHeaders = append(s.tx.FlagHeaders, [2]string{h.Name, h.Value})
	}
	s.tx.Notes = rep.Notes()
	var flags []string
	for _, f := range rep.Findings {
		flags = append(flags, string(f.Code)+": "+f.Path)
	}
	s.flags = strings.Join(flags, "; ")
	return nil
}

// lookup finds the earlier attempt of a submission within the retry window.
func (e *Engine) lookup(ctx context.Context, key string) (*store.Held, error) {
	h, err := e.deps.Store.LookupHeld(ctx, key, e.deps.Clock.Now().Add(-e.cfg.RetryWindow))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, &Temporary{Op: "lookup", Err: err}
	}
	return h, nil
}

// decided answers a submission whose key another attempt stored first (a concurrent retry),
// as that attempt was answered.
func (e *Engine) decided(ctx context.Context, sub *Submission, key string) (*Submitted, error) {
	h, err := e.deps.Store.LookupHeld(ctx, key, time.Time{})
	if err != nil {
		return nil, &Temporary{Op: "lookup", Err: err}
	}
	res, err, done := e.replay(ctx, sub, h)
	if !done {
		return nil, &Temporary{Op: "retry", Err: fmt.Errorf("attempt %s expired while retried", h.Identificativo)}
	}
	return res, err
}

// replay answers a retry as its first attempt was answered (confirm.go): the same refusal
// with no second avviso; the same busta and confirmation while the first is unconfirmed; a
// discard once the first busta is queued.
//
// An expired attempt is unconfirmed too: its expiry only says that no confirmation came
// within confirm.expiry, not that Postfix does not hold the busta. A node whose Postfix was
// down longer than that (killed, or the machine lost) still holds it and delivers it, and
// its confirmation when it comes back (Store.Confirm releases it late). Were the retry a new
// transaction, that late copy would make two bustas and two accettazioni of one submission
// (RFC 6109 §4: one receipt per event). So the retry gets the same busta and confirmation:
// whichever copy Postfix queues first releases the accettazione, once; the log keeps its
// non-accodato event, followed by the late release. done is false only for a state this
// code does not know.
func (e *Engine) replay(ctx context.Context, sub *Submission, h *store.Held) (res *Submitted, err error, done bool) {
	o, err := decodeOutcome(h.Outcome)
	if err != nil {
		return nil, &Temporary{Op: "retry", Err: err}, true
	}
	switch h.State {
	case store.HeldFinal:
		if o.Refused == nil {
			return nil, &Temporary{Op: "retry", Err: fmt.Errorf("final record of %s without a refusal", h.Identificativo)}, true
		}
		k, _ := KindByName(o.Refused.Kind)
		return nil, &Refused{Kind: k, Identificativo: h.Identificativo, Reason: o.Refused.Reason, Virus: o.Refused.Virus}, true
	case store.HeldReleased:
		return &Submitted{Identificativo: h.Identificativo, Time: o.Ref, Discard: true, Retry: true}, nil, true
	case store.HeldWaiting, store.HeldExpired:
		res, err := e.submit(ctx, sub, h.Key, h)
		return res, err, true
	}
	return nil, nil, false
}

// senderIdentity is the identity that signs for a submission: that of the login's PEC
// domain (the login is the only sender the provider has verified).
func (e *Engine) senderIdentity(sub *Submission) Identity {
	id, _ := e.IdentityFor(strings.TrimSpace(sub.Login))
	return id
}

// check parses the message and runs the formal checks. A header that cannot be split is a
// formal exception too (RFC 6109 §3.1.1: the message must conform to RFC 5322).
func (e *Engine) check(sub *Submission, env Envelope) (*Original, *FormalError) {
	orig, err := ParseOriginal(sub.Message)
	if err != nil {
		detail := "intestazione non interpretabile"
		if strings.Contains(err.Error(), "998") {
			detail = "riga di intestazione più lunga di 998 caratteri"
		}
		return lenientOriginal(sub.Message), &FormalError{Reason: ReasonMalformed, Detail: detail}
	}
	for _, r := range sub.Rcpts {
		if e.IsConfirmation(r) {
			// Confirmation recipients are ours to add (confirm.go); from a client they can only
			// be guesses at a token.
			return orig, &FormalError{Reason: ReasonBadAddress, Detail: r}
		}
	}
	return orig, CheckSubmission(orig, env, sub.Login, e.cfg.Limits)
}

// lenientOriginal is the view of a message whose header cannot be parsed, for the avviso
// only: the fields that can be read (Subject, From, To, ...) are kept so that the sender
// recognises the avviso; the others are dropped. Raw stays the message as received (it is
// what the virus scan and the quarantine see).
func lenientOriginal(msg []byte) *Original {
	raw := ToCRLF(msg)
	head, body, found := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !found {
		head, body = raw, nil
	}
	var kept bytes.Buffer
	for _, line := range bytes.SplitAfter(append(head, '\r', '\n'), []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		cont := line[0] == ' ' || line[0] == '\t'
		if len(line) > maxHeaderLine+2 || (!cont && bytes.IndexByte(line, ':') <= 0) {
			continue // the offending line
		}
		kept.Write(line)
	}
	kept.WriteString("\r\n")
	if o, err := ParseOriginal(append(kept.Bytes(), body...)); err == nil {
		o.Raw, o.Body = raw, nil
		return o
	}
	return &Original{Raw: raw, Receipt: daticert.Completa}
}

// recipientType looks the recipient's domain up in the index (pec-spec.md §2.4, §9.3), in
// the canonical (lower-case, A-label) form the index keeps.
func (e *Engine) recipientType(addr string) daticert.RecipientType {
	if d := domainOf(addr); d != "" && e.deps.Index.Certified(d) {
		return daticert.Certificato
	}
	return daticert.Esterno
}

// step is one access-point transaction being decided.
type step struct {
	e      *Engine
	bd     *Builder
	sub    *Submission
	orig   *Original
	ref    TimeRef
	tx     *Transaction
	tm     Timings
	token  string      // the confirmation token: the held step's, new or of the attempt retried
	handed bool        // the busta went to Submission.Prepared
	pre    *prepared   // the busta and accettazione built while clamd scanned (scan.go)
	key    string      // idempotency key ("" = none)
	flags  string      // what the content inspection flagged, for the log ("" = nothing)
	again  *store.Held // the waiting held step of an earlier attempt, when this is a retry
	begun  time.Time   // when Submit began deciding
}

// event is the log entry common to the events of the transaction (pec-spec.md §6.4).
func (s *step) event() store.Event {
	ev := txEvent(s.ref, s.tx, s.bd.ID.Name)
	ev.MessageID, ev.QueueID, ev.Size = s.orig.MessageID, s.sub.QueueID, int64(len(s.orig.Raw))
	return ev
}

func (s *step) accept(ctx context.Context) (*Submitted, error) {
	if s.pre == nil {
		s.prepare()
	}
	busta, err := s.pre.busta, s.pre.bustaErr
	var big *TooBigError
	if errors.As(err, &big) {
		// RFC 6109 §3.1.2: a message the provider cannot carry gets the avviso. Postfix's
		// cleanup would refuse this busta after the fact, with nothing told to the sender.
		return nil, s.refuse(ctx, KindNonAccettazione, &FormalError{Reason: ReasonBustaTooLarge,
			Detail: fmt.Sprintf("%d byte (massimo %d)", big.Estimate, big.Limit)}, "")
	}
	if err != nil {
		return nil, err
	}
	res := &Submitted{Identificativo: s.tx.ID, Time: s.ref.Time(), Busta: busta.Parts}
	for _, r := range s.tx.Recipients {
		if r.Type == daticert.Certificato {
			res.Certified = append(res.Certified, r.Addr)
		} else {
			res.External = append(res.External, r.Addr)
		}
	}
	res.Handed = s.handed
	if s.again != nil {
		// A retry of a busta not yet confirmed: the same busta, the same confirmation; the
		// accettazione is already held.
		s.tm.Build = s.pre.took
		res.Confirm, res.Retry, res.Timings = s.e.ConfirmAddress(s.token), true, s.tm
		return res, nil
	}
	acc, err := s.pre.acc, s.pre.accErr
	if err != nil {
		return nil, &Temporary{Op: "accettazione", Err: err}
	}
	s.tm.Build = s.pre.took
	h := s.held(busta, acc)
	start := time.Now()
	if err := s.e.deps.Store.Commit(ctx, &store.Batch{Holds: []store.Held{h}}); err != nil {
		if errors.Is(err, store.ErrExists) && s.key != "" {
			return s.e.decided(ctx, s.sub, s.key) // a concurrent attempt decided first
		}
		return nil, &Temporary{Op: "commit", Err: err}
	}
	s.tm.Commit = time.Since(start)
	res.Confirm, res.Timings = s.e.ConfirmAddress(h.Token), s.tm
	return res, nil
}

// handOut gives the busta just built to Submission.Prepared, if the caller asked for it.
func (s *step) handOut() {
	if s.sub.Prepared == nil || s.sub.handedOut || s.pre.bustaErr != nil || s.pre.busta == nil {
		return
	}
	s.sub.handedOut, s.handed = true, true
	s.sub.Prepared(s.pre.busta.Parts, s.e.ConfirmAddress(s.token))
}

// busta builds the busta, around the original re-encoded to 7 bits when it has 8-bit parts
// (content unchanged: no relay's 8BITMIME downgrade can then break the signature; RFC 6109
// §4.3, SevenBit).
func (s *step) busta() (*Message, error) {
	inner := s.orig
	if raw7, changed := SevenBit(s.orig.Raw); changed {
		o7, err := ParseOriginal(raw7)
		if err != nil {
			return nil, &Temporary{Op: "7bit", Err: err}
		}
		inner = o7
	}
	m, err := s.bd.Busta(s.ref, s.tx, inner)
	var big *TooBigError
	if err != nil && !errors.As(err, &big) {
		return nil, &Temporary{Op: "busta", Err: err}
	}
	return m, err
}

// held is the held step of an accepted submission (confirm.go): on confirmation the
// accettazione, the busta-trasporto event (and the content flags) and the tracking rows; on
// expiry the non-accodato event.
func (s *step) held(busta, acc *Message) store.Held {
	h := store.Held{Token: s.token, Key: s.key, Identificativo: s.tx.ID, State: store.HeldWaiting,
		Created: s.e.deps.Clock.Now(), Outcome: outcome{Ref: s.ref.Time()}.encode()}
	h.Expires = h.Created.Add(s.e.cfg.ConfirmExpiry)
	ev := s.event()
	emit(&h.OnConfirm, acc, ev, s.ref.Time())
	emit(&h.OnConfirm, busta, ev, s.ref.Time())
	if s.flags != "" {
		fl := ev
		fl.Kind, fl.ErrorDetail = store.KindContenuto, s.flags
		h.OnConfirm.Log(fl)
	}
	track(&h.OnConfirm, busta, s.ref, s.tx, s.sub.Rcpts, func(r string) bool { return s.e.recipientType(r) == daticert.Certificato }, s.e.cfg.Deadlines)
	ev.Kind, ev.Generated = store.KindNonAccodato, nil
	ev.ErrorDetail = fmt.Sprintf("busta %s mai accodata da Postfix entro %s: nessuna ricevuta di accettazione emessa", busta.MessageID, s.e.cfg.ConfirmExpiry)
	h.OnExpiry.Log(ev)
	return h
}

// refuse records the avviso di non accettazione (formal) or per virus, with its log event
// and, for a virus, the message in quarantine for 30 months (RFC 6109 §2.2.4).
//
// The avviso goes to the authenticated login, which equals MAIL FROM whenever the login
// check passes: RFC 6109 §3.1.2 sends it "to the sender", and when MAIL FROM or From is not
// the login, the login is the only sender the provider has verified (no notice to a forged
// address). The transaction's sender becomes the login for the same reason.
func (s *step) refuse(ctx context.Context, k Kind, formal *FormalError, virus string) error {
	s.tx.Sender = strings.TrimSpace(s.sub.Login)
	refused := &Refused{Kind: k, Identificativo: s.tx.ID, Virus: virus}
	start := time.Now()
	var m *Message
	var err error
	if k == KindNonAccettazioneVirus {
		m, err = s.bd.NonAccettazioneVirus(s.ref, s.tx, virus)
		refused.Reason = virusText(virus)
	} else {
		m, err = s.bd.NonAccettazione(s.ref, s.tx, formal)
		refused.Reason, refused.Err = formal.Text(), formal
	}
	if err != nil {
		return &Temporary{Op: k.Info().Name, Err: err}
	}
	s.tm.Build = time.Since(start)
	b := &store.Batch{}
	ev := s.event()
	ev.Virus = virus
	emit(b, m, ev, s.ref.Time())
	if k == KindNonAccettazioneVirus {
		b.Keep(store.QuarantineItem{Identificativo: s.tx.ID, Time: s.ref.Time(), Virus: virus, Sender: s.tx.Sender,
			Recipients: s.sub.Rcpts, QueueID: s.sub.QueueID, Raw: s.orig.Raw})
	}
	if s.key != "" {
		// A refusal attests only that we refused, which is true as soon as it is decided; the
		// final record lets a retry get the same answer without a second avviso.
		o := outcome{Ref: s.ref.Time()}
		o.Refused = &struct {
			Kind   string `json:"kind"`
			Reason string `json:"reason"`
			Virus  string `json:"virus,omitempty"`
		}{k.Info().Name, refused.Reason, virus}
		b.Hold(store.Held{Key: s.key, Identificativo: s.tx.ID, State: store.HeldFinal,
			Created: s.e.deps.Clock.Now(), Outcome: o.encode()})
	}
	start = time.Now()
	if err := s.e.deps.Store.Commit(ctx, b); err != nil {
		if errors.Is(err, store.ErrExists) && s.key != "" {
			_, err := s.e.decided(ctx, s.sub, s.key) // a concurrent attempt decided first
			return err
		}
		return &Temporary{Op: "commit", Err: err}
	}
	s.tm.Commit = time.Since(start)
	refused.Timings = s.tm
	return refused
}
