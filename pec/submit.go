package pec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// Submission is one SMTP transaction at the access point, as the milter saw it at
// end-of-message.
type Submission struct {
	QueueID  string   // Postfix queue id, for logs only
	Login    string   // SASL login ({auth_authen}); "" when the client did not authenticate
	MailFrom string   // envelope sender, without angle brackets
	Rcpts    []string // envelope recipients, in RCPT order
	Message  []byte   // the message as received (header fields and body), CRLF line ends
}

// Submitted is the outcome of an accepted submission: the busta that replaces the message in
// Postfix's queue. The accettazione is already in the outbox.
type Submitted struct {
	Identificativo string
	Time           time.Time // the time reference of the busta and the accettazione
	Busta          []byte    // the signed busta di trasporto, CRLF
	Certified      []string  // To/Cc recipients in the index (certificato)
	External       []string  // To/Cc recipients not in the index (esterno)
	Timings        Timings
}

// Timings says where the time of one Submit went, for logs and capacity planning.
type Timings struct {
	Scan   time.Duration // antivirus
	Build  time.Duration // building and signing the busta and the receipt
	Commit time.Duration // the store transaction
}

// Refused is the error Submit returns when it did not accept the message and has recorded
// the avviso di non accettazione (formal exception, RFC 6109 §3.1.2) or the avviso di non
// accettazione per virus (§3.1.3) in the outbox, with its log event. The message must not be
// relayed. It carries the SMTP reply: the client sees the reason in one line at once, and the
// avviso reaches the sender's mailbox through the outbox.
type Refused struct {
	Kind           Kind   // KindNonAccettazione or KindNonAccettazioneVirus
	Identificativo string // of the refused transaction
	Reason         string // one line, the errore-esteso of the avviso; safe to show
	Virus          string // the signature name for a virus
	Err            error  // the formal-check error, when there is one
	Timings        Timings
}

func (e *Refused) Error() string {
	if e.Virus != "" {
		return "pec: not accepted: virus " + e.Virus
	}
	return "pec: not accepted: " + e.Reason
}

func (e *Refused) Unwrap() error { return e.Err }

// LogValue renders the timings in milliseconds.
func (t Timings) LogValue() slog.Value {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return slog.GroupValue(slog.Float64("scan_ms", ms(t.Scan)), slog.Float64("build_ms", ms(t.Build)), slog.Float64("commit_ms", ms(t.Commit)))
}

// SMTPStatus is the reply for Postfix's client: 550 5.7.1 for a formal exception, 554 5.7.1
// for a virus (RFC 3463: 5.7.1 delivery not authorized, message refused).
func (e *Refused) SMTPStatus() (code int, enhanced, text string) {
	if e.Kind == KindNonAccettazioneVirus {
		return 554, "5.7.1", asciiReply("PEC non accettata: virus rilevato (" + e.Virus + "); avviso di non accettazione inviato al mittente")
	}
	return 550, "5.7.1", asciiReply("PEC non accettata: " + e.Reason + "; avviso di non accettazione inviato al mittente")
}

// asciiReply makes an SMTP reply text of printable US-ASCII on one line (RFC 5321 §4.2:
// replies are ASCII without SMTPUTF8): Italian accented vowels are written the way Italian
// does without accents ("è" as "e'"), anything else non-ASCII becomes "?". The avviso keeps
// the exact text.
func asciiReply(s string) string {
	var b strings.Builder
	for _, r := range oneLine(s) {
		switch {
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		case strings.ContainsRune("àáÀÁ", r):
			b.WriteString("a'")
		case strings.ContainsRune("èéÈÉ", r):
			b.WriteString("e'")
		case strings.ContainsRune("ìíÌÍ", r):
			b.WriteString("i'")
		case strings.ContainsRune("òóÒÓ", r):
			b.WriteString("o'")
		case strings.ContainsRune("ùúÙÚ", r):
			b.WriteString("u'")
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// StatusError is an error with a fixed SMTP reply and no PEC notice: authentication
// missing, a submission that cannot be processed at all.
type StatusError struct {
	Code     int
	Enhanced string
	Text     string
}

func (e *StatusError) Error() string { return fmt.Sprintf("pec: %d %s %s", e.Code, e.Enhanced, e.Text) }

// SMTPStatus implements the adapters' reply interface.
func (e *StatusError) SMTPStatus() (int, string, string) { return e.Code, e.Enhanced, e.Text }

// ErrNotAuthenticated: the access point accepts only authenticated submissions (RFC 6109
// §5.2). No avviso is sent: an unauthenticated reverse-path is not a PEC user to notify.
var ErrNotAuthenticated = &StatusError{Code: 530, Enhanced: "5.7.0", Text: "Authentication required for PEC submission"}

// Temporary marks an engine failure that must be retried later (the signer, the store, the
// antivirus, ...). Adapters answer 4xx; unknown errors are treated the same way.
type Temporary struct {
	Op  string // "scan", "sign", "commit", ...
	Err error
}

func (e *Temporary) Error() string   { return "pec: " + e.Op + ": " + e.Err.Error() }
func (e *Temporary) Unwrap() error   { return e.Err }
func (e *Temporary) Temporary() bool { return true }

// Index tells whether a domain is managed by a listed PEC provider (igpec.Index has this
// shape). Lookups use the local copy of the index and do no I/O.
type Index interface {
	Certified(domain string) bool
}

// Scanner is the antivirus (clamd.Client has this shape): virus is the signature name, or ""
// when the message is clean; an error means no verdict.
type Scanner interface {
	Scan(ctx context.Context, r io.Reader) (virus string, err error)
}

// Store is the atomic commit of one processing step (store.Store has it).
type Store interface {
	Commit(ctx context.Context, b *store.Batch) error
}

// AccessConfig configures the access point.
type AccessConfig struct {
	Provider Provider       // the emitting gestore; Domain keys the Signer and the identificativi
	Location *time.Location // legal time of texts and daticert; default Europe/Rome
	Node     string         // node name in the identificativi; default the host name
	Limits   Limits         // max recipients, size × recipients (RFC 6109 §3.1.1)
	Options  Options        // builder options (digest, HTML alternative)
}

// AccessDeps are the access point's collaborators.
type AccessDeps struct {
	Signer  Signer
	Index   Index
	Scanner Scanner
	Store   Store
	Clock   Clock     // default SystemClock
	Rand    io.Reader // identificativi; default crypto/rand
}

// AccessPoint is the engine of the access point (punto di accesso, RFC 6109 §3.1).
type AccessPoint struct {
	cfg  AccessConfig
	deps AccessDeps
}

// NewAccessPoint validates cfg and deps.
func NewAccessPoint(cfg AccessConfig, deps AccessDeps) (*AccessPoint, error) {
	p := cfg.Provider
	switch {
	case p.Name == "":
		return nil, errors.New("provider.name: required")
	case p.Domain == "":
		return nil, errors.New("provider.domains: required")
	case p.ServiceAddress == "":
		return nil, errors.New("provider.service_address: required")
	case deps.Signer == nil || deps.Index == nil || deps.Scanner == nil || deps.Store == nil:
		return nil, errors.New("pec: access point needs a signer, an index, a scanner and a store")
	case cfg.Limits.MaxRecipients < 0 || cfg.Limits.MaxSizeTimesRecipients < 0:
		return nil, errors.New("limits: must not be negative")
	}
	if cfg.Location == nil {
		cfg.Location = Rome()
	}
	if cfg.Node == "" {
		h, _ := os.Hostname()
		cfg.Node, _, _ = strings.Cut(h, ".")
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock
	}
	return &AccessPoint{cfg: cfg, deps: deps}, nil
}

// Submit processes one submission at end-of-message (RFC 6109 §3.1, pec-spec.md §2.2
// steps 2–4, §7.1):
//
//   - formal checks with the authenticated login, MAIL FROM and From (§7.1 points 1–6);
//   - the antivirus on the whole message (point 7);
//   - the index lookup of every To/Cc recipient (certificato / esterno, §2.4);
//   - one time reference and one identificativo for the transaction (§6.1, §6.2);
//   - the busta and the accettazione built and signed, and ONE store commit holding the
//     accettazione in the outbox, the log events and the tracking rows of the certified
//     recipients, before the caller answers Postfix.
//
// It returns the busta on acceptance; a *Refused when the message was refused and the
// avviso committed; ErrNotAuthenticated without a login; any other error is temporary and
// nothing was committed (DESIGN.md "Durability").
func (a *AccessPoint) Submit(ctx context.Context, sub *Submission) (*Submitted, error) {
	if strings.TrimSpace(sub.Login) == "" {
		return nil, ErrNotAuthenticated
	}
	env := Envelope{MailFrom: sub.MailFrom, Rcpts: sub.Rcpts}
	orig, formal := a.check(sub, env)

	// INFERENCE (pec-spec.md §7.1 ordering): the scan runs before any accettazione is
	// emitted, and a virus wins over a formal exception, so that the infected message is
	// quarantined whatever else is wrong with it.
	start := time.Now()
	virus, err := a.deps.Scanner.Scan(ctx, bytes.NewReader(orig.Raw))
	tm := Timings{Scan: time.Since(start)}
	if err != nil {
		return nil, &Temporary{Op: "scan", Err: err}
	}

	// One instant for every message and event of this transaction (DM art. 9, §6.2).
	ref := NewTimeRef(a.deps.Clock.Now(), a.cfg.Location)
	id, err := NewIdentificativo(ref.Time(), a.cfg.Node, a.cfg.Provider.Domain, a.deps.Rand)
	if err != nil {
		return nil, &Temporary{Op: "identificativo", Err: err}
	}
	tx := NewSubmissionTransaction(id, orig, env, a.recipientType)
	switch {
	case virus != "":
		return nil, a.refuse(ctx, sub, orig, ref, tx, KindNonAccettazioneVirus, nil, virus, tm)
	case formal != nil:
		return nil, a.refuse(ctx, sub, orig, ref, tx, KindNonAccettazione, formal, "", tm)
	}
	return a.accept(ctx, sub, orig, ref, tx, tm)
}

// check parses the message and runs the formal checks. A header that cannot be split is a
// formal exception too (RFC 6109 §3.1.1: the message must conform to RFC 5322).
func (a *AccessPoint) check(sub *Submission, env Envelope) (*Original, *FormalError) {
	orig, err := ParseOriginal(sub.Message)
	if err != nil {
		detail := "intestazione non interpretabile"
		if strings.Contains(err.Error(), "998") {
			detail = "riga di intestazione più lunga di 998 caratteri"
		}
		return lenientOriginal(sub.Message), &FormalError{Reason: ReasonMalformed, Detail: detail}
	}
	return orig, CheckSubmission(orig, env, sub.Login, a.cfg.Limits)
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

func (a *AccessPoint) recipientType(addr string) daticert.RecipientType {
	if _, dom, ok := strings.Cut(addr, "@"); ok && a.deps.Index.Certified(strings.ToLower(dom)) {
		return daticert.Certificato
	}
	return daticert.Esterno
}

func (a *AccessPoint) accept(ctx context.Context, sub *Submission, orig *Original, ref TimeRef, tx *Transaction, tm Timings) (*Submitted, error) {
	p := a.cfg.Provider
	start := time.Now()
	busta, err := BuildBusta(p, ref, tx, orig, a.deps.Signer, a.cfg.Options)
	if err != nil {
		return nil, &Temporary{Op: "busta", Err: err}
	}
	acc, err := BuildAccettazione(p, ref, tx, a.deps.Signer, a.cfg.Options)
	if err != nil {
		return nil, &Temporary{Op: "accettazione", Err: err}
	}
	accID := ReceiptMessageID(KindAccettazione, tx.ID, "", p.Domain)
	tm.Build = time.Since(start)
	res := &Submitted{Identificativo: tx.ID, Time: ref.Time(), Busta: busta}
	var recips []store.Recipient
	for _, r := range tx.Recipients {
		recips = append(recips, store.Recipient{Addr: r.Addr, Type: store.RecipientType(r.Type)})
		if r.Type == daticert.Certificato {
			res.Certified = append(res.Certified, r.Addr)
		} else {
			res.External = append(res.External, r.Addr)
		}
	}
	ev := a.event(sub, orig, ref, tx, recips)

	b := &store.Batch{}
	e := ev
	e.Kind, e.Error, e.Generated = store.KindAccettazione, string(daticert.ErroreNessuno), []string{accID}
	b.Log(e)
	e = ev
	e.Kind, e.Error, e.Generated = store.KindBustaTrasporto, string(daticert.ErroreNessuno), []string{"<" + tx.ID + ">"}
	b.Log(e)
	// Tracking for the 12 h / 24 h notices: certified envelope recipients only; no receipt
	// can come back for an esterno one (INFERENCE, pec-spec.md §2.4). Data is the busta's
	// daticert, from which TransactionFrom rebuilds the transaction for the notices.
	dc := daticertFor(KindBusta, p, ref, tx)
	dc.Dati.Ricevuta = tx.Receipt
	data := daticert.Marshal(dc)
	seen := map[string]bool{}
	for _, r := range sub.Rcpts {
		key := strings.ToLower(r)
		if seen[key] || a.recipientType(r) != daticert.Certificato {
			continue
		}
		seen[key] = true
		b.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: r, SentAt: ref.Time(),
			Sender: tx.Sender, Subject: tx.Subject, MessageID: tx.MsgID, Data: data})
	}
	b.Send(store.OutboxItem{MessageID: accID, Kind: KindAccettazione.Info().Name, Identificativo: tx.ID,
		From: p.ServiceAddress, Rcpts: []string{tx.Sender}, Raw: acc, Created: ref.Time()})
	start = time.Now()
	if err := a.deps.Store.Commit(ctx, b); err != nil {
		return nil, &Temporary{Op: "commit", Err: err}
	}
	tm.Commit = time.Since(start)
	res.Timings = tm
	return res, nil
}

// refuse records the avviso di non accettazione (formal) or per virus, with its log event
// and, for a virus, the message in quarantine for 30 months (RFC 6109 §2.2.4).
//
// The avviso goes to the authenticated login, which equals MAIL FROM whenever the login
// check passes: RFC 6109 §3.1.2 sends it "to the sender", and when MAIL FROM or From is not
// the login, the login is the only sender the provider has verified (no notice to a forged
// address). The transaction's sender becomes the login for the same reason.
func (a *AccessPoint) refuse(ctx context.Context, sub *Submission, orig *Original, ref TimeRef, tx *Transaction, k Kind, formal *FormalError, virus string, tm Timings) error {
	p := a.cfg.Provider
	tx.Sender = strings.TrimSpace(sub.Login)
	var raw []byte
	var err error
	refused := &Refused{Kind: k, Identificativo: tx.ID, Virus: virus}
	start := time.Now()
	if k == KindNonAccettazioneVirus {
		raw, err = BuildNonAccettazioneVirus(p, ref, tx, virus, a.deps.Signer, a.cfg.Options)
		refused.Reason = virusText(virus)
	} else {
		raw, err = BuildNonAccettazione(p, ref, tx, formal, a.deps.Signer, a.cfg.Options)
		refused.Reason, refused.Err = formal.Text(), formal
	}
	if err != nil {
		return &Temporary{Op: k.Info().Name, Err: err}
	}
	tm.Build = time.Since(start)
	msgID := ReceiptMessageID(k, tx.ID, "", p.Domain)
	var recips []store.Recipient
	for _, r := range tx.Recipients {
		recips = append(recips, store.Recipient{Addr: r.Addr, Type: store.RecipientType(r.Type)})
	}
	e := a.event(sub, orig, ref, tx, recips)
	e.Generated, e.ErrorDetail = []string{msgID}, refused.Reason
	b := &store.Batch{}
	if k == KindNonAccettazioneVirus {
		e.Kind, e.Error, e.Virus = store.KindNonAccettazioneVirus, string(daticert.ErroreVirus), virus
		b.Keep(store.QuarantineItem{Identificativo: tx.ID, Time: ref.Time(), Virus: virus, Sender: tx.Sender,
			Recipients: sub.Rcpts, QueueID: sub.QueueID, Raw: orig.Raw})
	} else {
		e.Kind, e.Error = store.KindNonAccettazione, string(daticert.ErroreAltro)
	}
	b.Log(e)
	b.Send(store.OutboxItem{MessageID: msgID, Kind: k.Info().Name, Identificativo: tx.ID,
		From: p.ServiceAddress, Rcpts: []string{tx.Sender}, Raw: raw, Created: ref.Time()})
	start = time.Now()
	if err := a.deps.Store.Commit(ctx, b); err != nil {
		return &Temporary{Op: "commit", Err: err}
	}
	tm.Commit = time.Since(start)
	refused.Timings = tm
	return refused
}

// event is the log entry common to the events of the transaction (pec-spec.md §6.4).
func (a *AccessPoint) event(sub *Submission, orig *Original, ref TimeRef, tx *Transaction, recips []store.Recipient) store.Event {
	return store.Event{Time: ref.Time(), Identificativo: tx.ID, Sender: tx.Sender, Recipients: recips,
		Subject: tx.Subject, MessageID: orig.MessageID, Gestore: a.cfg.Provider.Name,
		ReceiptType: string(tx.Receipt), QueueID: sub.QueueID, Size: int64(len(orig.Raw))}
}
