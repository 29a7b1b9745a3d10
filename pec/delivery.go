package pec

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// The delivery point (punto di consegna, RFC 6109 §3.3; pec-spec.md §2.2 steps 9–11, §7.3).
//
// One LMTP transaction from Postfix is one Delivery, in two phases, in the shape of maddy's
// Delivery and go-smtp's StatusCollector:
//
//  1. BeginDelivery classifies the message and claims, for each recipient, the store's
//     delivery record of (mailbox, Message-ID) (store.Deliveries): the intent is on disk
//     before the message is handed to the mailbox store. Recipients whose record says the
//     message is already there are answered at once; the others are listed by Forward.
//  2. The adapter hands the message to Dovecot for the Forward recipients and reports each
//     answer with SetResult.
//  3. Commit builds the avvenuta consegna (or the avviso di mancata consegna) of each
//     recipient of a valid busta, and writes receipts, log events and the closed records in
//     ONE store commit, before any reply reaches Postfix; it returns one outcome per
//     recipient. A store failure is a temporary failure: Postfix retries, and the retry finds
//     the record still open.
//
// # The crash window
//
// pec-lmtpd may die after Dovecot stored the message and before Commit. The record is then
// open under this process's owner name (stable across restarts). Postfix retries; the claim
// answers DeliveryOpen, and the engine asks the mailbox (Mailboxes.Holds: Dovecot's doveadm
// search by Message-ID) whether the message is there: if it is, nothing is stored again and
// the receipt is committed now; if not, the message is stored. So neither two copies nor
// zero receipts. A record open under another owner (another node) is left alone until its
// lease ends (Config.Delivery.Lease), then handled the same way.
//
// A system message (busta, anomaly, receipt, notice) whose Message-ID the mailbox already
// received is acknowledged and not stored again (DESIGN.md "Durability": a resend after a
// crash must not show twice).
//
// # Mail that never passed the reception point
//
// Everything arriving from outside crosses the reception point, which turns a message that is
// not PEC into a busta di anomalia (or refuses it) before it is queued for us. What still
// reaches a PEC mailbox unsigned was made on this host, past every smtpd: the bounces of
// Postfix's own bounce(8) (a busta to a domain that does not resolve, or refused at RCPT by
// an ordinary MTA: its DSN goes to our sender) and mail a local process hands to sendmail.
// pec-spec.md §2.4 and §2.5 want such a message in the mailbox only inside a busta di anomalia
// signed by us, so the delivery point wraps it (Delivery.Message) and logs the busta di
// anomalia; the busta keeps the message's Message-ID (or a hash of its bytes), so the record
// of each mailbox makes a retry after a crash store it once, as for any system message. It is
// not scanned for viruses here: a bounce carries (part of) a message our access point scanned,
// and a local process that can run sendmail can write the mailbox anyway.

// Mailboxes tells whether a mailbox already holds the message with this Message-ID (angle
// brackets included). Dovecot's doveadm search answers it (lmtpd); an error means no answer.
type Mailboxes interface {
	Holds(ctx context.Context, mailbox, messageID string) (bool, error)
}

// DeliveryConfig tunes the delivery point.
type DeliveryConfig struct {
	// Owner names this process in delivery records: stable across its restarts, unique among
	// the processes sharing the store. Default "pec-lmtpd/" + Config.Node.
	Owner string
	// Lease is how long another owner's open record is left alone before it is taken over;
	// longer than one delivery to Dovecot can last. Default 10m.
	Lease time.Duration
	// MaxDelay: a busta that Dovecot refuses temporarily (or cannot be reached for) longer
	// than this after its time reference gets the avviso di mancata consegna instead of
	// another temporary failure (RFC 6109 §2.2.2: 24 h is the limit of PEC traffic).
	// Default 24h; keep it below Postfix's maximal_queue_lifetime, or Postfix bounces first.
	MaxDelay time.Duration
	// Keep is how long delivery records are kept (PurgeDeliveries): retries within it are
	// recognised. Default 30 days, above Postfix's maximal_queue_lifetime.
	Keep time.Duration
}

func (c *DeliveryConfig) defaults(node string) error {
	if c.Owner == "" {
		c.Owner = "pec-lmtpd/" + atomNode(node)
	}
	if c.Lease == 0 {
		c.Lease = 10 * time.Minute
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 24 * time.Hour
	}
	if c.Keep == 0 {
		c.Keep = 30 * 24 * time.Hour
	}
	if c.Lease < 0 || c.MaxDelay < 0 || c.Keep < 0 {
		return errors.New("delivery: durations must be positive")
	}
	return nil
}

// DeliveryRequest is one LMTP transaction from Postfix.
type DeliveryRequest struct {
	QueueID  string   // for logs only ("" when unknown)
	MailFrom string   // reverse path, without angle brackets: where receipts go
	Rcpts    []string // envelope recipients, in RCPT order
	Message  []byte   // the message as received
}

// MailboxResult is the mailbox store's (Dovecot's) answer for one recipient.
type MailboxResult struct {
	Code     int    // 2xx stored, 4xx refused for now, 5xx refused for good; 0 with Err
	Enhanced string // RFC 3463 status, "" when Dovecot gave none
	Text     string
	// Err is set when no answer came for this recipient. Unknown says whether the whole
	// message had been sent before the answer was lost: then the mailbox may hold it.
	Err     error
	Unknown bool
}

// Stored is the answer of a mailbox that stored the message.
var Stored = MailboxResult{Code: 250, Enhanced: "2.0.0"}

// Delivery outcome labels: a bounded set, for metrics and logs.
const (
	DeliveredReceipt   = "consegna"         // stored; avvenuta consegna committed
	DeliveredFailed    = "mancata-consegna" // not stored; avviso di mancata consegna committed; 250 to Postfix
	DeliveredSilently  = "stored"           // stored with no receipt (anomaly, receipt, notice, ordinary mail, invalid busta)
	DeliveredDuplicate = "duplicate"        // already delivered earlier: acknowledged, nothing stored or emitted
	DeliveredRefused   = "refused"          // refused for good, no PEC notice (not a busta): the 5xx goes to Postfix
	DeliveredTempfail  = "tempfail"         // 4xx: Postfix retries
)

// RcptOutcome is the outcome for one recipient, in RCPT order.
type RcptOutcome struct {
	Rcpt    string
	Err     error  // nil: 250 with Text; else the reply comes from Reply(Err)
	Text    string // the 250 text
	Outcome string // one of the Delivered labels
	Receipt Kind   // the receipt or avviso committed (KindOrdinary: none)
	Detail  string // errore-esteso of an avviso, or why a busta got no receipt
	Found   bool   // crash recovery: the mailbox already held the message, it was not stored again
}

// ErrDeliveryBusy: another process is delivering this message to this mailbox right now.
var ErrDeliveryBusy = &StatusError{Code: 451, Enhanced: "4.2.0", Text: "Delivery of this message to this mailbox is in progress, try again later", Label: DeliveredTempfail}

// Delivery is one transaction at the delivery point, between BeginDelivery and Commit (or
// Abort). It is not safe for concurrent use.
type Delivery struct {
	e         *Engine
	req       *DeliveryRequest
	c         *Classified
	kind      Kind
	msgID     string       // Message-ID of a system message, the key of its records; "" = none
	wrapped   *Message     // the busta di anomalia around mail that never passed the reception point
	tx        *Transaction // the busta's or receipt's transaction, from daticert; nil otherwise
	busta     bool         // a busta eligible for receipts
	why       string       // why a busta is not eligible
	bustaTime time.Time    // the busta's time reference (daticert data); zero when unreadable
	rcpts     []*deliveryRcpt
	held      []store.DeliveryKey // records registered in e.delivering
	done      bool
}

type deliveryRcpt struct {
	addr     string
	key      store.DeliveryKey // zero: no record
	claimed  bool              // the record is ours until Commit
	forward  bool              // hand to the mailbox store
	result   *MailboxResult
	found    bool         // the mailbox already held it (crash recovery)
	noDomain bool         // a busta for a domain we do not serve: avviso, not forwarded
	out      *RcptOutcome // decided at BeginDelivery
}

// BeginDelivery classifies the message and claims the delivery record of each recipient
// (see above). An error is a temporary failure of the whole transaction (the store could not
// be reached): nothing was claimed.
func (e *Engine) BeginDelivery(ctx context.Context, req *DeliveryRequest) (*Delivery, error) {
	if len(req.Rcpts) == 0 {
		return nil, errors.New("pec: delivery without recipients")
	}
	d := &Delivery{e: e, req: req}
	d.classify()
	if d.kind == KindOrdinary {
		if err := d.wrap(); err != nil {
			return nil, err
		}
	}
	for _, r := range req.Rcpts {
		dr := &deliveryRcpt{addr: r, forward: true}
		if d.msgID != "" {
			dr.key = store.DeliveryKey{Mailbox: store.NormMailbox(r), MessageID: d.msgID}
		}
		d.rcpts = append(d.rcpts, dr)
	}
	if err := d.claim(ctx); err != nil {
		d.release()
		return nil, err
	}
	for _, r := range d.rcpts {
		if _, ours := e.IdentityFor(r.addr); d.busta && !ours && r.out == nil && !r.found {
			r.forward, r.noDomain = false, true
		}
	}
	return d, nil
}

// classify finds the kind, the key of the records and, for a busta, whether it can have
// receipts. The delivery point emits receipts only for a valid busta di trasporto (RFC 6109
// §3.3, pec-spec.md §2.1): signed (integrity verified here; the signer was checked against
// the providers index by the reception point, RFC 6109 §7.2), conforming, with its daticert
// and postacert.eml.
func (d *Delivery) classify() {
	d.c = Classify(d.req.Message, ClassifyOptions{})
	d.kind = d.c.Kind
	if d.kind != KindOrdinary {
		if v, ok := d.c.Header.Get("Message-ID"); ok {
			d.msgID = strings.TrimSpace(v)
		}
	}
	if d.c.Daticert != nil {
		d.tx = TransactionFrom(d.c.Daticert)
		d.bustaTime, _ = dataTime(d.c.Daticert.Dati.Data.Giorno, d.c.Daticert.Dati.Data.Ora, d.c.Daticert.Dati.Data.Zona)
	}
	if d.kind != KindBusta {
		return
	}
	switch {
	case d.c.Verified == nil:
		d.why = fmt.Sprintf("busta senza firma valida (%v)", d.c.SigErr)
	case d.c.Daticert == nil || d.c.Postacert == nil:
		d.why = "busta senza daticert.xml o postacert.eml"
	case !d.c.Conforms():
		f := firstError(d.c.Deviations)
		d.why = "busta non conforme: " + f.Code + " (" + f.Where + ")"
	case d.tx.ID == "" || d.tx.Sender == "":
		d.why = "busta senza identificativo o mittente"
	default:
		d.busta = true
	}
}

// wrap builds the busta di anomalia around a message that is no PEC message (see "Mail that
// never passed the reception point"), signed for the provider of the first recipient. A
// failure (the signer down) is a temporary failure of the transaction; a message too large to
// wrap is refused (552) and Postfix returns it as plain mail.
func (d *Delivery) wrap() error {
	code, detail := ordinaryReason(d.c)
	orig, err := ParseOriginal(d.req.Message)
	if err != nil {
		orig = lenientOriginal(d.req.Message)
	}
	id, _ := d.e.IdentityFor(d.req.Rcpts[0])
	ref := d.e.now()
	m, err := d.e.builder(id).Anomalia(ref, orig, Envelope{MailFrom: d.req.MailFrom, Rcpts: d.req.Rcpts}, anomalyText(code))
	var big *TooBigError
	switch {
	case errors.As(err, &big):
		return &StatusError{Code: 552, Enhanced: "5.3.4", Text: "Message too large to be delivered to a PEC mailbox", Label: DeliveredRefused}
	case err != nil:
		return &Temporary{Op: "anomalia", Err: err}
	}
	d.wrapped, d.kind, d.msgID, d.why = m, KindAnomalia, m.MessageID, code+": "+detail
	return nil
}

// Message is what the mailbox store is handed: the message as received, or the busta di
// anomalia around it (see "Mail that never passed the reception point").
func (d *Delivery) Message() []byte {
	if d.wrapped != nil {
		return d.wrapped.Bytes()
	}
	return d.req.Message
}

// dataTime reads a daticert data (dd/mm/yyyy, hh:mm:ss, +hhmm).
func dataTime(giorno, ora, zona string) (time.Time, bool) {
	t, err := time.Parse("02/01/2006 15:04:05 -0700", giorno+" "+ora+" "+zona)
	return t, err == nil
}

// claim registers the keyed recipients as in flight in this process and claims their
// records in one store call. A key another delivery of this process holds is busy: its
// record says "open, ours" but the message may be on its way to Dovecot right now.
func (d *Delivery) claim(ctx context.Context) error {
	var keys []store.DeliveryKey
	var who []*deliveryRcpt
	d.e.mu.Lock()
	for _, r := range d.rcpts {
		switch {
		case r.key == store.DeliveryKey{}:
		case d.e.delivering[r.key] && !d.holds(r.key):
			r.out = d.tempfail(r, ErrDeliveryBusy)
		default:
			if !d.holds(r.key) {
				d.e.delivering[r.key] = true
				d.held = append(d.held, r.key)
			}
			keys, who = append(keys, r.key), append(who, r)
		}
	}
	d.e.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	cfg := d.e.cfg.Delivery
	claims, err := d.e.deps.Store.ClaimDeliveries(ctx, cfg.Owner, cfg.Lease, keys)
	if err != nil {
		return &Temporary{Op: "claim", Err: err}
	}
	for i, c := range claims {
		d.claimed(ctx, who[i], c)
	}
	return nil
}

func (d *Delivery) holds(k store.DeliveryKey) bool {
	for _, h := range d.held {
		if h == k {
			return true
		}
	}
	return false
}

// claimed decides a recipient from its record.
func (d *Delivery) claimed(ctx context.Context, r *deliveryRcpt, c store.DeliveryClaim) {
	switch c.State {
	case store.DeliveryDone:
		r.out = &RcptOutcome{Rcpt: r.addr, Text: "Already delivered to this mailbox", Outcome: DeliveredDuplicate}
	case store.DeliveryBusy:
		r.out = d.tempfail(r, ErrDeliveryBusy)
	case store.DeliveryNew:
		r.claimed = true
	case store.DeliveryOpen:
		// An earlier attempt died between handing the message to Dovecot and its commit: ask
		// the mailbox before storing a second copy.
		r.claimed = true
		if d.e.deps.Mailboxes == nil {
			r.out = d.tempfail(r, &Temporary{Op: "recover", Err: errors.New("no mailbox lookup configured")})
			return
		}
		found, err := d.e.deps.Mailboxes.Holds(ctx, r.addr, r.key.MessageID)
		switch {
		case err != nil:
			r.out = d.tempfail(r, &Temporary{Op: "mailbox lookup", Err: err})
		case found:
			r.forward, r.found, r.result = false, true, &Stored
		}
	}
}

func (d *Delivery) tempfail(r *deliveryRcpt, err error) *RcptOutcome {
	return &RcptOutcome{Rcpt: r.addr, Err: err, Outcome: DeliveredTempfail}
}

// Kind is the message's kind as classified.
func (d *Delivery) Kind() Kind { return d.kind }

// Identificativo is the transaction's identificativo (from daticert), "" when the message
// has none.
func (d *Delivery) Identificativo() string {
	if d.tx == nil {
		return ""
	}
	return d.tx.ID
}

// MessageID is the Message-ID that keys the message's delivery records ("" for ordinary
// mail, which has none).
func (d *Delivery) MessageID() string { return d.msgID }

// Forward lists the recipients to hand to the mailbox store, in RCPT order (each once).
func (d *Delivery) Forward() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range d.rcpts {
		if r.out == nil && r.forward && !seen[r.addr] {
			seen[r.addr] = true
			out = append(out, r.addr)
		}
	}
	return out
}

// SetResult records the mailbox store's answer for a recipient listed by Forward.
func (d *Delivery) SetResult(rcpt string, res MailboxResult) {
	for _, r := range d.rcpts {
		if r.addr == rcpt && r.out == nil && r.forward {
			r.result = &res
		}
	}
}

// PurgeDeliveries forgets the delivery records older than Delivery.Keep (a leased job runs
// it): a retry after that is delivered anew.
func (e *Engine) PurgeDeliveries(ctx context.Context) (int64, error) {
	return e.deps.Store.PurgeDeliveries(ctx, e.deps.Clock.Now().Add(-e.cfg.Delivery.Keep))
}
