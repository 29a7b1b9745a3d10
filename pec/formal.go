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
	ReasonMalformed               ReasonCode = iota + 1 // not RFC 5322 (header syntax, line over 998 octets)
	ReasonNoFrom                                        // From absent or unparsable
	ReasonMultipleFrom                                  // From with more than one address, or several From fields
	ReasonFromMismatch                                  // From address differs from MAIL FROM
	ReasonLoginMismatch                                 // MAIL FROM is not the authenticated user
	ReasonNoTo                                          // To absent or empty
	ReasonBadAddress                                    // a To/Cc address does not parse
	ReasonBcc                                           // Bcc not empty
	ReasonRcptNotInHeader                               // a RCPT TO is in neither To nor Cc
	ReasonTooManyRcpts                                  // more recipients than the provider allows
	ReasonTooLarge                                      // size × recipients over the limit (30 MB by law)
	ReasonBustaTooLarge                                 // the busta would exceed what Postfix queues (message_size_limit)
	ReasonSenderField                                   // Sender or Resent-From/-Sender names someone other than the login
	ReasonHeaderRcptNotInEnvelope                       // a To/Cc address is not an envelope recipient
	ReasonContent                                       // the content policy refuses an attachment (pec/inspect)
)

var reasonNames = map[ReasonCode]string{
	ReasonMalformed: "malformed", ReasonNoFrom: "no-from", ReasonMultipleFrom: "multiple-from",
	ReasonFromMismatch: "from-mismatch", ReasonLoginMismatch: "login-mismatch", ReasonNoTo: "no-to",
	ReasonBadAddress: "bad-address", ReasonBcc: "bcc", ReasonRcptNotInHeader: "rcpt-not-in-header",
	ReasonTooManyRcpts: "too-many-recipients", ReasonTooLarge: "too-large", ReasonBustaTooLarge: "busta-too-large",
	ReasonSenderField: "sender-field", ReasonHeaderRcptNotInEnvelope: "header-rcpt-not-in-envelope",
	ReasonContent: "content",
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
	case ReasonContent:
		s = e.Detail // pec/inspect's reason: "allegato non consentito: doc.zip > setup.txt (eseguibile Windows)"
	case ReasonSenderField:
		s = "il campo " + e.Detail + " indica un mittente diverso dall'utente autenticato"
	case ReasonHeaderRcptNotInEnvelope:
		s = "il destinatario " + e.Detail + " compare nei campi To o Cc ma non tra i destinatari della sessione SMTP"
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
	if err := checkSyntax(orig); err != nil {
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
	if err := checkSenderFields(orig, login); err != nil {
		return err
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
	if err := checkRecipients(orig, env); err != nil {
		return err
	}
	// The limits count the distinct To/Cc recipients, which checkRecipients made equal to the
	// distinct envelope recipients: every one of them gets a copy of the busta (RFC 6109
	// §3.1.1), and daticert and the texts list each.
	n := len(orig.Recipients())
	if lim.MaxRecipients > 0 && n > lim.MaxRecipients {
		return &FormalError{Reason: ReasonTooManyRcpts, Detail: fmt.Sprintf("%d, il massimo è %d", n, lim.MaxRecipients)}
	}
	return CheckSize(orig, env, lim)
}

// CheckSize is the size verdict of pec-spec.md §7.1 point 6 on its own: the message's size
// times its recipients against Limits.MaxSizeTimesRecipients (RFC 6109 §3.1.1, 30 MB). It is
// the last of CheckSubmission's checks; Submit also runs it before the antivirus, which never
// receives a message over the limit (issue 12 item 9). The recipients counted are the
// distinct To/Cc ones, as for MaxRecipients; the distinct envelope recipients when they are
// more (a message failing another check is then not scanned either).
func CheckSize(orig *Original, env Envelope, lim Limits) *FormalError {
	n := max(len(orig.Recipients()), len(env.distinct()))
	if total := int64(len(orig.Raw)) * int64(n); lim.MaxSizeTimesRecipients > 0 && total > lim.MaxSizeTimesRecipients {
		return &FormalError{Reason: ReasonTooLarge, Detail: fmt.Sprintf("%d byte per %d destinatari, il massimo è %d byte", len(orig.Raw), n, lim.MaxSizeTimesRecipients)}
	}
	return nil
}

// distinct is the set of envelope recipients in CanonAddr form.
func (env Envelope) distinct() map[string]bool {
	set := make(map[string]bool, len(env.Rcpts))
	for _, r := range env.Rcpts {
		set[CanonAddr(r)] = true
	}
	return set
}

// checkRecipients: every envelope recipient is a To/Cc recipient (RFC 6109 §3.1.1) and every
// To/Cc recipient an envelope one: a header-only address would be listed as "certificato,
// inoltrato" in the signed accettazione though nothing was sent to it. Addresses compare in
// CanonAddr form.
func checkRecipients(orig *Original, env Envelope) *FormalError {
	envelope := map[string]bool{}
	for _, r := range env.Rcpts {
		envelope[CanonAddr(r)] = true
		if !inList(r, orig.To) && !inList(r, orig.Cc) {
			return &FormalError{Reason: ReasonRcptNotInHeader, Detail: r}
		}
	}
	for _, r := range orig.Recipients() {
		if !envelope[CanonAddr(r)] {
			return &FormalError{Reason: ReasonHeaderRcptNotInEnvelope, Detail: r}
		}
	}
	return nil
}

// checkSenderFields: Sender, Resent-From and Resent-Sender may only name the login. Another
// address there would travel inside the busta as if the provider had certified it.
func checkSenderFields(orig *Original, login string) *FormalError {
	for _, name := range []string{"Sender", "Resent-From", "Resent-Sender"} {
		for _, f := range orig.Header {
			if !strings.EqualFold(f.Name, name) {
				continue
			}
			as, err := parseAddrs(f.Value())
			if err != nil || len(as) != 1 || !strings.EqualFold(CanonAddr(as[0].Address), CanonAddr(login)) {
				return &FormalError{Reason: ReasonSenderField, Detail: name}
			}
		}
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
	c := CanonAddr(addr)
	for _, a := range list {
		if CanonAddr(a.Address) == c {
			return true
		}
	}
	return false
}

// checkSyntax enforces what RFC 5322 asks of every message, where breaking it would make the
// busta or a receipt non-conforming or undeliverable:
//   - no line over 998 octets (§2.1.1): some MTA would break it, and inside postacert.eml
//     that breaks the busta's signature;
//   - no NUL anywhere (§2.3, §3.5: US-ASCII text without NUL; SMTP cannot carry it either);
//   - header fields in US-ASCII (§2.2): UTF-8 headers need SMTPUTF8 end to end, which PEC
//     peers do not offer; the busta would bounce at the recipient's MTA with nobody told;
//   - From, To, Cc, Subject, Date and Message-ID at most once, and a Date (§3.6);
//   - a Message-ID, when present, with the msg-id syntax (§3.6.4): it is copied into every
//     receipt's X-Riferimento-Message-ID and daticert msgid.
func checkSyntax(orig *Original) *FormalError {
	raw := orig.Raw
	if bytes.IndexByte(raw, 0) >= 0 {
		return &FormalError{Reason: ReasonMalformed, Detail: "il messaggio contiene caratteri NUL"}
	}
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
	head := orig.Raw[:len(orig.Raw)-len(orig.Body)]
	for _, c := range head {
		if c >= 0x80 {
			return &FormalError{Reason: ReasonMalformed, Detail: "caratteri non ASCII nelle intestazioni (SMTPUTF8 non supportato dalla posta certificata)"}
		}
	}
	for _, name := range []string{"To", "Cc", "Subject", "Date", "Message-ID"} {
		if orig.Header.Count(name) > 1 {
			return &FormalError{Reason: ReasonMalformed, Detail: "il campo " + name + " compare più di una volta"}
		}
	}
	if _, ok := orig.Header.Get("Date"); !ok {
		return &FormalError{Reason: ReasonMalformed, Detail: "manca il campo Date"}
	}
	if v, ok := orig.Header.Get("Message-ID"); ok && !validMsgID(strings.TrimSpace(v)) {
		return &FormalError{Reason: ReasonMalformed, Detail: "Message-ID non conforme: " + trunc(oneLine(v), 80)}
	}
	return nil
}

// validMsgID checks RFC 5322 §3.6.4 msg-id: "<" dot-atom-text "@" (dot-atom-text /
// no-fold-literal) ">".
func validMsgID(v string) bool {
	if len(v) < 5 || v[0] != '<' || v[len(v)-1] != '>' {
		return false
	}
	left, right, ok := strings.Cut(v[1:len(v)-1], "@")
	if !ok || !dotAtom(left) {
		return false
	}
	if strings.HasPrefix(right, "[") && strings.HasSuffix(right, "]") && len(right) > 2 {
		for _, c := range right[1 : len(right)-1] {
			if c < 33 || c > 126 || c == '[' || c == ']' || c == '\\' {
				return false
			}
		}
		return true
	}
	return dotAtom(right)
}

func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0) {
			return false
		}
	}
	return true
}

// NewSubmissionTransaction builds the transaction of a submission even when the checks
// failed: the sender falls back to MAIL FROM and the recipients to RCPT TO, so a
// non-accettazione can always be written. typeOf tells certificato from esterno (the
// providers index lookup).
func NewSubmissionTransaction(id string, orig *Original, env Envelope, typeOf func(addr string) daticert.RecipientType) *Transaction {
	var rcpts []Recipient
	for _, a := range orig.Recipients() {
		rcpts = append(rcpts, Recipient{Addr: a, Type: typeOf(a)})
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
