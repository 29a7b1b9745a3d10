package pec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

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
}

func (e *Refused) Error() string {
	if e.Virus != "" {
		return "pec: not accepted: virus " + e.Virus
	}
	return "pec: not accepted: " + e.Reason
}

func (e *Refused) Unwrap() error { return e.Err }

// SMTPStatus is the reply for Postfix's client: 550 5.7.1 for a formal exception, 554 5.7.1
// for a virus (RFC 3463: 5.7.1 delivery not authorized, message refused).
func (e *Refused) SMTPStatus() (code int, enhanced, text string) {
	if e.Kind == KindNonAccettazioneVirus {
		return 554, "5.7.1", "PEC non accettata: virus rilevato (" + e.Virus + "); avviso di non accettazione inviato al mittente"
	}
	return 550, "5.7.1", "PEC non accettata: " + e.Reason + "; avviso di non accettazione inviato al mittente"
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

var (
	_ = errors.New
	_ = strings.ToLower
)
