package pec

import (
	"bytes"
	"fmt"
	"net/mail"
	"strings"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// ReasonCode is why a submission fails the formal checks of the access point
// (RFC 6109 §3.1.1, pec-spec.md §7.1).
type ReasonCode int

// Reasons, in the order CheckSubmission tests them.
const (
	ReasonMalformed       ReasonCode = iota + 1 // not RFC 5322 (header syntax, line over 998 octets)
	ReasonNoFrom                                // From absent or unparsable
	ReasonMultipleFrom                          // From with more than one address, or several From fields
	ReasonFromMismatch                          // From address differs from MAIL FROM
	ReasonLoginMismatch                         // MAIL FROM is not the authenticated user
	ReasonNoTo                                  // To absent or empty
	ReasonBadAddress                            // a To/Cc address does not parse
	ReasonBcc                                   // Bcc not empty
	ReasonRcptNotInHeader                       // a RCPT TO is in neither To nor Cc
	ReasonTooManyRcpts                          // more recipients than the provider allows
	ReasonTooLarge                              // size × recipients over the limit (30 MB by law)
	ReasonBustaTooLarge                         // the busta would exceed what Postfix queues (message_size_limit)
)

var reasonNames = map[ReasonCode]string{
	ReasonMalformed: "malformed", ReasonNoFrom: "no-from", ReasonMultipleFrom: "multiple-from",
	ReasonFromMismatch: "from-mismatch", ReasonLoginMismatch: "login-mismatch", ReasonNoTo: "no-to",
	ReasonBadAddress: "bad-address", ReasonBcc: "bcc", ReasonRcptNotInHeader: "rcpt-not-in-header",
	ReasonTooManyRcpts: "too-many-recipients", ReasonTooLarge: "too-large", ReasonBustaTooLarge: "busta-too-large",
}

// String is a stable name, usable as a bounded metric label.
func (r ReasonCode) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return "unknown"
}

// FormalError is a failed formal check. Text() is the one-line Italian explanation that goes
// into the non-accettazione text and its daticert errore-esteso.
type FormalError struct {
	Reason ReasonCode
	Detail string // the offending value, already suitable for the user (never config)
}

func (e *FormalError) Error() string {
	return "pec: formal check " + e.Reason.String() + ": " + e.Detail
}

// Text is the Italian one-line reason.
func (e *FormalError) Text() string {
	var s string
	switch e.Reason {
	case ReasonMalformed:
		s = "il messaggio non rispetta il formato standard (RFC 5322): " + e.Detail
	case ReasonNoFrom:
		s = "manca un indirizzo valido del mittente nel campo From"
	case ReasonMultipleFrom:
		s = "il campo From deve contenere un solo indirizzo"
	case ReasonFromMismatch:
		s = "l'indirizzo del campo From è diverso dal mittente della sessione SMTP: " + e.Detail
	case ReasonLoginMismatch:
		s = "il mittente " + e.Detail + " non corrisponde all'utente autenticato"
	case ReasonNoTo:
		s = "manca il campo To con almeno un destinatario"
	case ReasonBadAddress:
		s = "indirizzo non valido tra i destinatari: " + e.Detail
	case ReasonBcc:
		s = "i destinatari in copia nascosta (Bcc) non sono ammessi"
	case ReasonRcptNotInHeader:
		s = "il destinatario " + e.Detail + " non compare nei campi To o Cc"
	case ReasonTooManyRcpts:
		s = "troppi destinatari: " + e.Detail
	case ReasonTooLarge:
		s = "la dimensione del messaggio moltiplicata per il numero dei destinatari supera il limite: " + e.Detail
	case ReasonBustaTooLarge:
		s = "la busta di trasporto supererebbe la dimensione massima accettata dal sistema: " + e.Detail
	default:
		s = "errore formale: " + e.Detail
	}
	return oneLine(s)
}

// Limits are the provider limits of a submission.
type Limits struct {
	MaxRecipients          int   // 0 = no limit
	MaxSizeTimesRecipients int64 // 0 = no limit; 30 MB by law (RFC 6109 §3.1.1)
}

// SameMailbox compares addresses the way the formal checks do: the domain case-insensitively
// (RFC 5321 §2.4), the local part exactly. A client writes From and MAIL FROM from the same
// account setting, so exact equality of the local part is what it produces; treating
// "Alice" and "alice" as one mailbox is a decision of the receiving system that the access
// point cannot make for other providers.
func SameMailbox(a, b string) bool {
	la, da, oka := strings.Cut(strings.TrimSpace(a), "@")
	lb, db, okb := strings.Cut(strings.TrimSpace(b), "@")
	if !oka || !okb {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	return la == lb && strings.EqualFold(da, db)
}

// CheckSubmission runs the formal checks of pec-spec.md §7.1 on a submitted message, in
// order, and returns the first failure (nil when the message is acceptable). login is the
// SASL identity; it must equal MAIL FROM, compared case-insensitively as logins are (an
// empty login fails: the access point only takes authenticated submissions).
func CheckSubmission(orig *Original, env Envelope, login string, lim Limits) *FormalError {
	if err := checkLines(orig.Raw); err != nil {
		return err
	}
	switch {
	case orig.Header.Count("From") > 1 || len(orig.From) > 1:
		return &FormalError{Reason: ReasonMultipleFrom}
	case orig.FromErr != nil || len(orig.From) == 0:
		return &FormalError{Reason: ReasonNoFrom}
	}
	from := orig.From[0].Address
	if !SameMailbox(from, env.MailFrom) {
		return &FormalError{Reason: ReasonFromMismatch, Detail: fmt.Sprintf("%s invece di %s", from, env.MailFrom)}
	}
	if login == "" || !strings.EqualFold(strings.TrimSpace(login), strings.TrimSpace(env.MailFrom)) {
		return &FormalError{Reason: ReasonLoginMismatch, Detail: env.MailFrom}
	}
	if orig.AddrErr != nil {
		return &FormalError{Reason: ReasonBadAddress, Detail: oneLine(addrErrDetail(orig))}
	}
	if len(orig.To) == 0 {
		return &FormalError{Reason: ReasonNoTo}
	}
	if orig.Bcc != "" {
		return &FormalError{Reason: ReasonBcc}
	}
	for _, r := range env.Rcpts {
		if !inList(r, orig.To) && !inList(r, orig.Cc) {
			return &FormalError{Reason: ReasonRcptNotInHeader, Detail: r}
		}
	}
	n := len(env.Rcpts)
	if lim.MaxRecipients > 0 && n > lim.MaxRecipients {
		return &FormalError{Reason: ReasonTooManyRcpts, Detail: fmt.Sprintf("%d, il massimo è %d", n, lim.MaxRecipients)}
	}
	if total := int64(len(orig.Raw)) * int64(n); lim.MaxSizeTimesRecipients > 0 && total > lim.MaxSizeTimesRecipients {
		return &FormalError{Reason: ReasonTooLarge, Detail: fmt.Sprintf("%d byte per %d destinatari, il massimo è %d byte", len(orig.Raw), n, lim.MaxSizeTimesRecipients)}
	}
	return nil
}

func addrErrDetail(o *Original) string {
	for _, name := range []string{"To", "Cc"} {
		for _, f := range o.Header {
			if strings.EqualFold(f.Name, name) {
				if _, err := parseAddrs(f.Value()); err != nil {
					v := f.Value()
					if len(v) > 120 {
						v = v[:120] + "…"
					}
					return name + ": " + v
				}
			}
		}
	}
	return ""
}

func inList(addr string, list []*mail.Address) bool {
	for _, a := range list {
		if SameMailbox(addr, a.Address) {
			return true
		}
	}
	return false
}

// checkLines enforces RFC 5322 §2.1.1: no line over 998 octets. Longer lines would be
// broken by some MTA and, inside postacert.eml, break the busta's signature.
func checkLines(raw []byte) *FormalError {
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		line := raw
		if i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(bytes.TrimSuffix(line, []byte("\r"))) > maxHeaderLine {
			return &FormalError{Reason: ReasonMalformed, Detail: "riga più lunga di 998 caratteri"}
		}
	}
	return nil
}

// NewSubmissionTransaction builds the transaction of a submission even when the checks
// failed: the sender falls back to MAIL FROM and the recipients to RCPT TO, so a
// non-accettazione can always be written. typeOf tells certificato from esterno (the
// providers index lookup).
func NewSubmissionTransaction(id string, orig *Original, env Envelope, typeOf func(addr string) daticert.RecipientType) *Transaction {
	var rcpts []Recipient
	for _, list := range [][]*mail.Address{orig.To, orig.Cc} {
		for _, a := range list {
			rcpts = append(rcpts, Recipient{Addr: a.Address, Type: typeOf(a.Address)})
		}
	}
	if len(rcpts) == 0 {
		for _, r := range env.Rcpts {
			rcpts = append(rcpts, Recipient{Addr: r, Type: typeOf(r)})
		}
	}
	tx := NewTransaction(id, orig, rcpts)
	if tx.Sender == "" {
		tx.Sender = env.MailFrom
	}
	return tx
}
