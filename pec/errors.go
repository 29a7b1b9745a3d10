package pec

import (
	"errors"
	"fmt"
	"strings"
)

// The engine's errors and the one table that turns any of them into an SMTP reply (STYLE 4).
// The adapters (the milter, the LMTP server) convert a Reply into their protocol's answer and
// never look at the errors themselves: an error without an SMTP status, or with an invalid
// one, is a temporary failure, so Postfix keeps the message and retries (DESIGN.md
// "Durability": never accept and then drop).

// Refused is the error of a message the access point did not accept, after it recorded the
// avviso di non accettazione (formal exception, RFC 6109 §3.1.2) or the avviso di non
// accettazione per virus (§3.1.3) with its log event. The message must not be relayed. The
// client sees the reason in the SMTP reply at once, and the avviso reaches the sender's
// mailbox through the outbox.
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

// SMTPStatus is the reply for Postfix's client: 550 5.7.1 for a formal exception, 554 5.7.1
// for a virus (RFC 3463: 5.7.1 delivery not authorized, message refused).
func (e *Refused) SMTPStatus() (code int, enhanced, text string) {
	if e.Kind == KindNonAccettazioneVirus {
		return 554, "5.7.1", asciiReply("PEC non accettata: virus rilevato (" + e.Virus + "); avviso di non accettazione inviato al mittente")
	}
	return 550, "5.7.1", asciiReply("PEC non accettata: " + e.Reason + "; avviso di non accettazione inviato al mittente")
}

// StatusError is an error with a fixed SMTP reply and no PEC notice: authentication missing,
// a message above the hard size limit, a submission that cannot be processed at all.
type StatusError struct {
	Code     int
	Enhanced string
	Text     string
	Label    string // outcome label for metrics and logs; "rejected" when empty
}

func (e *StatusError) Error() string { return fmt.Sprintf("pec: %d %s %s", e.Code, e.Enhanced, e.Text) }

// SMTPStatus implements the reply interface.
func (e *StatusError) SMTPStatus() (int, string, string) { return e.Code, e.Enhanced, e.Text }

// ErrNotAuthenticated: the access point accepts only authenticated submissions (RFC 6109
// §5.2). No avviso is sent: an unauthenticated reverse-path is not a PEC user to notify.
var ErrNotAuthenticated = &StatusError{Code: 530, Enhanced: "5.7.0", Text: "Authentication required for PEC submission"}

// ErrNotPECSender: the authenticated user is not a mailbox of one of the provider's PEC
// domains (an ordinary mailbox on the same Postfix/Dovecot). No avviso: not a PEC user.
var ErrNotPECSender = &StatusError{Code: 550, Enhanced: "5.7.1", Text: "The authenticated user is not a PEC mailbox of this provider"}

// ErrTooLarge is the error of a message above limits.hard_max_size. RFC 6109 §3.1.2: above
// the hard limit no avviso is produced, the message is refused at SMTP level with 552.
var ErrTooLarge = &StatusError{Code: 552, Enhanced: "5.3.4", Text: "Message size exceeds fixed maximum message size", Label: OutcomeTooLarge}

// Temporary marks a failure that must be retried later (the signer, the store, the antivirus,
// the memory budget, a shutdown, ...). Adapters answer 4xx; unknown errors are treated the
// same way.
type Temporary struct {
	Op  string // "scan", "sign", "commit", ...
	Err error
}

func (e *Temporary) Error() string   { return "pec: " + e.Op + ": " + e.Err.Error() }
func (e *Temporary) Unwrap() error   { return e.Err }
func (e *Temporary) Temporary() bool { return true }

// Outcome labels: a bounded set, for metrics and logs.
const (
	OutcomeAccepted = "accepted"
	OutcomeRefused  = "refused"   // avviso di non accettazione
	OutcomeVirus    = "virus"     // avviso di non accettazione per virus
	OutcomeTooLarge = "too_large" // above the hard limit, no avviso
	OutcomeRejected = "rejected"  // other 5xx without a notice (authentication)
	OutcomeTempfail = "tempfail"
)

// SMTPReply is the answer to give Postfix (or its client) for an engine error.
type SMTPReply struct {
	Code     int    // 4xx or 5xx
	Enhanced string // RFC 3463 status, e.g. "4.3.0"
	Text     string // one line of printable ASCII; never configuration, key labels or paths
	Outcome  string // one of the Outcome labels
}

// Temporary reports whether the reply asks the client to retry.
func (r SMTPReply) Temporary() bool { return r.Code < 500 }

// String is the reply as the adapters send it: "enhanced text" after the code.
func (r SMTPReply) String() string { return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text) }

// tempReply is the one reply for every internal failure and every error without an SMTP
// status (STYLE rule 4).
var tempReply = SMTPReply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure processing the PEC message, please retry later", Outcome: OutcomeTempfail}

// Reply is the one mapping from an engine error to an SMTP reply. An error carrying a valid
// SMTP status gets that reply; anything else, temporary or unknown, gets 451 4.3.0.
func Reply(err error) SMTPReply {
	var se interface {
		SMTPStatus() (int, string, string)
	}
	if err == nil || !errors.As(err, &se) {
		return tempReply
	}
	code, enh, text := se.SMTPStatus()
	if code < 400 || code > 599 || !validEnhanced(enh, code) {
		return tempReply
	}
	r := SMTPReply{Code: code, Enhanced: enh, Text: asciiReply(text), Outcome: OutcomeTempfail}
	var ref *Refused
	var st *StatusError
	var rej *Rejected
	switch {
	case code < 500:
	case errors.As(err, &ref) && ref.Kind == KindNonAccettazioneVirus, errors.As(err, &rej) && rej.Virus != "":
		r.Outcome = OutcomeVirus
	case errors.As(err, &ref):
		r.Outcome = OutcomeRefused
	case errors.As(err, &st) && st.Label != "":
		r.Outcome = st.Label
	default:
		r.Outcome = OutcomeRejected
	}
	return r
}

// validEnhanced checks an RFC 3463 status whose class agrees with the reply code.
func validEnhanced(s string, code int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0] != byte('0'+code/100) {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
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
