package pec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// Anything else at the reception point (RFC 6109 §2.2.2, §3.2.2; pec-spec.md §2.5, §7.2, §7.4):
// ordinary mail, a DSN or MDN of an ordinary MTA, an unsigned message with PEC header fields, a
// message signed by someone not in the index, a PEC message failing a check. By
// policy.ordinary_mail it is wrapped whole in a busta di anomalia signed by us and delivered
// (anomaly, the default), or refused at SMTP level (reject). The antivirus runs first when it
// would be delivered: infected, it is refused (the rules allow dropping it "as on the
// Internet"; a refusal loses nothing silently). No receipt is ever sent to its sender
// (RFC 6109 §2.2.3), and the reason of every anomaly or refusal is in the log (ErrorDetail).
//
// The anomaly's log event is committed before the answer: it records what we did with the
// message, attests nothing to anyone, and a retry by the sender's MTA is a new reception.

// Ordinary mail policies (Config.OrdinaryMail).
const (
	PolicyAnomaly = "anomaly"
	PolicyReject  = "reject"
)

// Rejected is the error of a message the reception point refused at SMTP level: not a valid PEC
// message under policy.ordinary_mail reject, infected mail that is not a valid busta, or an
// anomaly too large to be queued. The refusal and its reason are in the log; nobody gets a
// notice.
type Rejected struct {
	Class  string
	Reason string // a bounded code (Received.Reason)
	Detail string
	Virus  string
	TooBig bool
}

func (e *Rejected) Error() string {
	switch {
	case e.Virus != "":
		return "pec: reception refused: virus " + e.Virus
	case e.TooBig:
		return "pec: reception refused: too large for a busta di anomalia"
	}
	return "pec: reception refused: " + e.Reason + ": " + e.Detail
}

// SMTPStatus: 554 5.7.1 for a virus, 552 5.3.4 above the size Postfix queues, 550 5.7.1 for a
// message this PEC domain does not accept (RFC 3463: delivery not authorized).
func (e *Rejected) SMTPStatus() (int, string, string) {
	switch {
	case e.Virus != "":
		return 554, "5.7.1", "Message refused: virus found (" + e.Virus + ")"
	case e.TooBig:
		return 552, "5.3.4", "Message too large to be delivered to a PEC mailbox"
	}
	return 550, "5.7.1", "Not a valid PEC message (" + e.Reason + "): this PEC domain accepts certified mail only"
}

func (r *reception) other(ctx context.Context) (*Received, error) {
	e, v := r.e, r.v
	ref := e.now()
	ev := r.anomalyEvent(ref)
	if e.cfg.OrdinaryMail == PolicyReject {
		ev.Kind = store.KindAnomalia
		return nil, r.refuse(ctx, ev, &Rejected{Class: v.class, Reason: v.reason, Detail: v.detail})
	}
	start := time.Now()
	virus, err := e.deps.Scanner.Scan(ctx, bytes.NewReader(r.raw))
	r.tm.Scan, r.tm.Scans = time.Since(start), 1
	if err != nil {
		return nil, &Temporary{Op: "scan", Err: err}
	}
	if virus != "" {
		ev.Kind, ev.Virus = store.KindAnomalia, virus
		return nil, r.refuse(ctx, ev, &Rejected{Class: v.class, Reason: v.reason, Detail: v.detail, Virus: virus})
	}
	orig, perr := ParseOriginal(r.raw)
	if perr != nil {
		orig = lenientOriginal(r.raw)
	}
	start = time.Now()
	m, err := r.builder().Anomalia(ref, orig, Envelope{MailFrom: r.in.MailFrom, Rcpts: r.in.Rcpts}, anomalyText(v.reason))
	var big *TooBigError
	switch {
	case errors.As(err, &big):
		ev.Kind = store.KindAnomalia
		ev.ErrorDetail += fmt.Sprintf("; busta di anomalia di %d byte oltre il limite di %d", big.Estimate, big.Limit)
		return nil, r.refuse(ctx, ev, &Rejected{Class: v.class, Reason: v.reason, Detail: v.detail, TooBig: true})
	case err != nil:
		return nil, &Temporary{Op: "anomalia", Err: err}
	}
	r.tm.Build = time.Since(start)
	b := &store.Batch{}
	emit(b, m, ev, ref.Time())
	start = time.Now()
	if err := e.deps.Store.Commit(ctx, b); err != nil {
		return nil, &Temporary{Op: "commit", Err: err}
	}
	r.tm.Commit = time.Since(start)
	return &Received{Outcome: OutcomeAnomaly, Reason: v.reason, Detail: v.detail, Replace: m.Parts, Timings: r.tm}, nil
}

// refuse commits the log event of a refusal and returns rej.
func (r *reception) refuse(ctx context.Context, ev store.Event, rej *Rejected) error {
	if err := r.e.deps.Store.Commit(ctx, &store.Batch{Events: []store.Event{ev}}); err != nil {
		return &Temporary{Op: "commit", Err: err}
	}
	return rej
}

// anomalyEvent is the log entry of a message that is not a valid PEC message: its sender
// (From, else the envelope sender), our recipients, subject, Message-ID and the reason.
// Nothing it carries is certified, so it has no identificativo.
func (r *reception) anomalyEvent(ref TimeRef) store.Event {
	ev := uncertifiedEvent(ref, r.v.c.Header, r.in.MailFrom, r.in.QueueID, len(r.raw), r.v.reason+": "+r.v.detail)
	for _, l := range r.local {
		ev.Recipients = append(ev.Recipients, store.Recipient{Addr: l, Type: store.Certified})
	}
	if r.v.trust != nil && r.v.trust.Provider != nil {
		ev.Gestore = r.v.trust.Provider.Name
	}
	return ev
}

// uncertifiedEvent is the part of the log entry of a message that is no PEC message that its
// own header gives (the reception point's and the delivery point's busta di anomalia): sender
// (From, else mailFrom), subject, Message-ID, with the queue id, size and why (errore altro).
func uncertifiedEvent(ref TimeRef, h Header, mailFrom, queueID string, size int, why string) store.Event {
	ev := store.Event{Time: ref.Time(), Sender: mailFrom, QueueID: queueID, Size: int64(size), ErrorDetail: why, Error: "altro"}
	if from, ok := h.Get("From"); ok {
		if a, err := addrOf(from); err == nil {
			ev.Sender = a.Address
		}
	}
	if s, ok := h.Get("Subject"); ok {
		ev.Subject = DecodeHeader(s)
	}
	if mid, ok := h.Get("Message-ID"); ok {
		ev.MessageID = strings.TrimSpace(mid)
	}
	return ev
}

// anomalyText is the error the busta di anomalia shows its reader (pec-spec.md §3.3: "Tali dati
// non sono stati certificati per il seguente errore: la firma digitale del messaggio non risulta
// attendibile"). The technical finding stays in the log.
func anomalyText(reason string) string {
	switch reason {
	case "ordinary":
		return "il messaggio non è un messaggio di posta elettronica certificata (posta ordinaria)"
	case "dsn":
		return "il messaggio è un avviso di consegna di un sistema di posta ordinaria, non di posta elettronica certificata"
	case "mdn":
		return "il messaggio è una conferma di lettura di un sistema di posta ordinaria, non di posta elettronica certificata"
	case "pec-headers-unsigned", "not-signed":
		return "il messaggio si presenta come posta elettronica certificata ma non è firmato dal gestore"
	case "signature":
		return "la firma digitale del messaggio non è valida: il messaggio è stato alterato"
	case "signer-unlisted", "signer-cert-mismatch":
		return "la firma digitale del messaggio non risulta attendibile: il firmatario non è un gestore dell'indice dei gestori di posta elettronica certificata"
	case "revoked":
		return "la firma digitale del messaggio non risulta attendibile: il certificato del gestore è revocato"
	case "chain", "cert-validity", "signing-time":
		return "la firma digitale del messaggio non risulta attendibile: il certificato del gestore non è valido"
	case "from-domain-unmanaged", "mittente-domain-unmanaged", "recipient-domain-unmanaged":
		return "il gestore che ha firmato il messaggio non gestisce il dominio di cui parla"
	case "anomalia":
		return "il messaggio è una busta di anomalia di un altro gestore"
	}
	return "il messaggio di posta elettronica certificata non è formalmente corretto"
}
