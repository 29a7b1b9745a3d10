package pec

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/smime"
)

// Signer gives the signing key and certificate chain of a PEC domain (same shape as
// hsm.Keyring; chain[0] is the signer certificate). Errors meaning "try later" wrap
// hsm.ErrUnavailable; builders return them wrapped, unchanged in kind.
type Signer interface {
	SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error)
}

// Identity is the gestore as it signs for one of its PEC domains: the name, the key (found by
// Domain in the Signer), the service address that is the From of every system message and the
// certificate's rfc822Name, and the mailReceipt of the index. A provider with one certificate
// for all its domains has the same values in every identity but Domain; one with a key per
// domain has a service address per domain too.
type Identity struct {
	Name           string // gestore-emittente, as in the certificate subject and the index
	Domain         string // the PEC domain: key of the Signer
	ServiceAddress string // From of every system message, posta-certificata@...; equals the certificate SAN
	ReceiptAddress string // mailReceipt of this provider in the index
}

// MailDomain is the provider mail domain of the identity, the domain of its service address:
// identificativi and receipt Message-IDs end with it (pec-spec.md §6.1).
func (p Identity) MailDomain() string {
	if i := strings.LastIndexByte(p.ServiceAddress, '@'); i >= 0 {
		return strings.ToLower(p.ServiceAddress[i+1:])
	}
	return strings.ToLower(p.Domain)
}

// Builder makes the signed system messages of one identity. Every builder method returns
// the complete signed message (RFC 5322, CRLF) with its Message-ID, kind and daticert.
type Builder struct {
	ID   Identity
	Keys Signer
	Opt  Options
}

// Message is a built system message, ready for the outbox or for Postfix's queue.
type Message struct {
	Kind      Kind
	MessageID string // with angle brackets
	// Parts is the message (RFC 5322, CRLF) as slices to be written in order: the header
	// and the framing in the first, then, in a busta or a busta di anomalia, the original
	// message where it already was, shared and not copied (issue 19, P6: a 100 MB message is
	// held once, not three times). Bytes joins them; WriteTo writes them.
	Parts    [][]byte
	Daticert *daticert.Postacert // nil for the busta di anomalia
	From     string              // envelope sender: the service address for receipts, the original sender for the buste
	To       []string            // envelope recipients of a receipt (nil for the buste: their envelope is the original's)
	Rcpt     string              // the recipient a per-recipient message is about, "" otherwise
}

// Bytes is the whole message in one slice: the only part itself, or a copy of the parts
// joined (for the outbox and the tests; Postfix gets the parts one after the other).
func (m *Message) Bytes() []byte {
	if len(m.Parts) == 1 {
		return m.Parts[0]
	}
	return bytes.Join(m.Parts, nil)
}

// Len is the size of the message in bytes.
func (m *Message) Len() int {
	n := 0
	for _, p := range m.Parts {
		n += len(p)
	}
	return n
}

// Reader reads the message, part after part.
func (m *Message) Reader() io.Reader {
	r := make([]io.Reader, len(m.Parts))
	for i, p := range m.Parts {
		r[i] = bytes.NewReader(p)
	}
	return io.MultiReader(r...)
}

// Recipient is one To/Cc recipient with its type in the index.
type Recipient struct {
	Addr string
	Type daticert.RecipientType
}

// Transaction is what every message about one identificativo repeats: the intestazione of
// daticert and the references. The access point fills it from the Original
// (NewTransaction); the other points rebuild it from a received daticert (TransactionFrom).
type Transaction struct {
	ID         string      // identificativo, without angle brackets
	Sender     string      // certified sender (MAIL FROM = From)
	Recipients []Recipient // every To/Cc recipient
	ReplyTo    string      // risposte; "" means Sender
	Subject    string      // decoded original subject
	RawSubject string      // original Subject value as written, "" to encode Subject
	MsgID      string      // client's Message-ID with angle brackets, "" if none
	Receipt    daticert.ReceiptType
	// Content flags of the access point's inspection (pec/inspect), for the busta only:
	// header fields the receiving provider reads (X-PEC-Macro, X-PEC-Non-Verificato) and
	// courtesy notes for the recipient in its readable text.
	FlagHeaders [][2]string
	Notes       []string
}

// NewTransaction collects the transaction data from a submitted original. rcpts are the
// To/Cc recipients with their types (the caller looks the domains up in the index).
func NewTransaction(id string, orig *Original, rcpts []Recipient) *Transaction {
	tx := &Transaction{ID: id, Sender: orig.Sender(), Recipients: rcpts, ReplyTo: orig.ReplyTo(),
		Subject: orig.Subject, MsgID: orig.MessageID, Receipt: orig.Receipt}
	if v, ok := orig.Header.Get("Subject"); ok {
		tx.RawSubject = v
	}
	return tx
}

// TransactionFrom rebuilds the transaction from a received daticert (busta or receipt).
func TransactionFrom(d *daticert.Postacert) *Transaction {
	tx := &Transaction{ID: d.Dati.Identificativo, Sender: d.Intestazione.Mittente, ReplyTo: d.Intestazione.Risposte,
		MsgID: d.Dati.Msgid, Receipt: d.Dati.Ricevuta}
	if d.Intestazione.Oggetto != nil {
		tx.Subject = *d.Intestazione.Oggetto
	}
	if tx.Receipt == "" {
		tx.Receipt = daticert.Completa
	}
	for _, r := range d.Intestazione.Destinatari {
		tx.Recipients = append(tx.Recipients, Recipient{Addr: r.Addr, Type: r.Tipo})
	}
	return tx
}

func (tx *Transaction) risposte() string {
	if tx.ReplyTo != "" {
		return tx.ReplyTo
	}
	return tx.Sender
}

// subjectHeader is the Subject value: prefix plus the original subject unchanged
// (pec-spec.md §3.1).
func (tx *Transaction) subjectHeader(prefix string) string {
	if tx.RawSubject != "" {
		return prefix + tx.RawSubject
	}
	return prefix + encodeWord(tx.Subject)
}

// Options tune the builders. The zero value signs with SHA-256, random boundaries, plain
// text only.
type Options struct {
	// Hash is the CMS digest. SHA-256 by default; crypto.SHA1 matches what real providers
	// still sent in 2024 (pec-spec.md §8.2) if a peer needs it.
	Hash crypto.Hash
	// Boundary is the base of every MIME boundary ("" = random); the parts use
	// Boundary+".m", ".a" and the signature Boundary+".s". For golden files.
	Boundary string
	// HTML adds a text/html alternative (multipart/alternative) with the same information.
	HTML bool
	// Rand is used for boundaries and the CMS; nil = crypto/rand.
	Rand io.Reader
	// MaxSize, when positive, is the largest busta (di trasporto or di anomalia) the builders
	// may produce: one that would be larger fails with a *TooBigError before it is signed
	// (Postfix's message_size_limit minus a margin: cleanup would refuse the replacement after
	// the fact). Receipts are not limited: an avviso must always be sendable.
	MaxSize int64
}

// TooBigError is the error of a message that would exceed Options.MaxSize.
type TooBigError struct {
	Kind     Kind
	Estimate int64 // bytes the message would have
	Limit    int64
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("pec: %s would be %d bytes, above the limit of %d", e.Kind, e.Estimate, e.Limit)
}

// signatureEstimate bounds what signing adds to the entity: the smime.p7s part (the chain's
// certificates, the signed attributes and the signature, base64 with line breaks) and the
// multipart/signed framing.
func signatureEstimate(chain []*x509.Certificate) int64 {
	n := int64(4096)
	for _, c := range chain {
		n += int64(len(c.Raw))
	}
	return n*4/3 + n/38 + 1024
}

func (o *Options) boundary() (string, error) {
	if o.Boundary != "" {
		return o.Boundary, nil
	}
	r := o.Rand
	if r == nil {
		r = rand.Reader
	}
	var b [12]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	return "=_pec_" + hex.EncodeToString(b[:]), nil
}

// content is the signed entity of a system message.
type content struct {
	kind      Kind
	text      textData
	daticert  *daticert.Postacert
	postacert [][]byte // message/rfc822 part as segments (CRLF), nil when not carried
	cte       string   // its transfer encoding, set by entity
}

// ErrBoundary means the chosen boundary occurs inside the attached message.
var ErrBoundary = errors.New("pec: MIME boundary occurs in the attached message")

// entity builds the multipart/mixed entity: readable text (or multipart/alternative),
// daticert.xml, postacert.eml, in Aruba's order (pec-spec.md §4.1), as segments that share
// the original message's bytes.
func (c *content) entity(base string, o *Options) ([][]byte, error) {
	title, paras := readable(c.text)
	text := textEntity("plain", plainText(title, paras))
	if o.HTML {
		text = multipart("alternative", base+".a", "", [][]byte{text}, [][]byte{textEntity("html", htmlText(title, paras))})
	}
	parts := [][][]byte{{text}}
	if c.daticert != nil {
		var b bytes.Buffer
		b.WriteString("Content-Type: application/xml; name=\"daticert.xml\"\r\n")
		b.WriteString("Content-Disposition: inline; filename=\"daticert.xml\"\r\n")
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		base64Lines(&b, daticert.Marshal(c.daticert))
		parts = append(parts, [][]byte{b.Bytes()})
	}
	cte := ""
	if c.postacert != nil {
		// RFC 2046 §5.1.1: the delimiter must not occur in the part, also across the joints
		// of its segments; the part is read as if preceded by the CRLF the delimiter begins with.
		if smime.SegmentsContain(append([][]byte{[]byte("\r\n")}, c.postacert...), []byte("\r\n--"+base+".m")) {
			return nil, ErrBoundary
		}
		enc := "7bit"
		for _, seg := range c.postacert {
			if e := transferEncoding(seg); e == "binary" || (e == "8bit" && enc == "7bit") {
				enc = e
			}
		}
		c.cte = enc
		if enc != "7bit" {
			cte = enc
		}
		hdr := []byte("Content-Type: message/rfc822; name=\"postacert.eml\"\r\n" +
			"Content-Disposition: inline; filename=\"postacert.eml\"\r\n" +
			"Content-Transfer-Encoding: " + enc + "\r\n\r\n")
		parts = append(parts, append([][]byte{hdr}, c.postacert...))
	}
	// RFC 6109 §4.3 / issue 12 item 13: the signed entity carries its own MIME-Version, as
	// Aruba's do, so that it is a complete MIME entity once extracted (openssl smime -verify
	// -out, clients saving the signed part).
	var w segments
	w.str("MIME-Version: 1.0\r\n")
	w.multipart("mixed", base+".m", cte, parts...)
	return w.done(), nil
}

// assemble signs the entity and returns the message's parts: hdr, MIME-Version,
// Content-Type and the multipart/signed framing in the first, the entity's segments, the
// signature part last.
func (bd *Builder) assemble(ref TimeRef, hdr []Field, c *content) ([][]byte, error) {
	p, s, o := bd.ID, bd.Keys, bd.Opt
	base, err := o.boundary()
	if err != nil {
		return nil, fmt.Errorf("pec: boundary: %w", err)
	}
	ent, err := c.entity(base, &o)
	if err != nil {
		return nil, err
	}
	key, chain, err := s.SignerFor(p.Domain)
	if err != nil {
		return nil, fmt.Errorf("pec: signer for %s: %w", p.Domain, err)
	}
	if o.MaxSize > 0 && (c.kind == KindBusta || c.kind == KindAnomalia) {
		est := signatureEstimate(chain) + 256
		for _, seg := range ent {
			est += int64(len(seg))
		}
		for _, f := range hdr {
			est += int64(len(f.Raw))
		}
		if est > o.MaxSize {
			return nil, &TooBigError{Kind: c.kind, Estimate: est, Limit: o.MaxSize}
		}
	}
	// The entity stays where it is: the message is the header and head, the entity's
	// segments, then tail; a (possibly 100 MB) original is not copied.
	ct, head, tail, err := smime.SignSegments(ent, key, chain, smime.SignOptions{Hash: o.Hash, Boundary: base + ".s", SigningTime: ref.Time(), Rand: o.Rand})
	if err != nil {
		return nil, fmt.Errorf("pec: sign %s: %w", c.kind, err)
	}
	return c.parts(hdr, ct, head, ent, tail), nil
}

// parts lays the signed message out: hdr, MIME-Version, Content-Type and the multipart/signed
// head in the first part, the entity's segments, the signature part (tail) last.
func (c *content) parts(hdr []Field, ct string, head []byte, ent [][]byte, tail []byte) [][]byte {
	var b bytes.Buffer
	n := len(head) + 1024
	for _, f := range hdr {
		n += len(f.Raw)
	}
	b.Grow(n)
	for _, f := range hdr {
		b.Write(f.Raw)
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	b.Write(field("Content-Type", ct).Raw)
	if c.postacert != nil && c.cte != "7bit" {
		// RFC 2045 §6.4: a multipart's encoding must cover its parts.
		b.WriteString("Content-Transfer-Encoding: " + c.cte + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(head)
	// The small segments of the entity (the text, daticert.xml, the delimiters) join the
	// first part and the last: a receipt is one slice, a busta three or four.
	first, last := b.Bytes(), tail
	for len(ent) > 0 && len(ent[0]) < bigSegment {
		first, ent = append(first, ent[0]...), ent[1:]
	}
	for len(ent) > 0 && len(ent[len(ent)-1]) < bigSegment {
		last, ent = append(append([]byte(nil), ent[len(ent)-1]...), last...), ent[:len(ent)-1]
	}
	if len(ent) == 0 {
		return [][]byte{append(first, last...)}
	}
	return append(append([][]byte{first}, ent...), last)
}

// daticertFor fills the daticert common to every message of a transaction.
func daticertFor(k Kind, p Identity, ref TimeRef, tx *Transaction) *daticert.Postacert {
	d := &daticert.Postacert{Tipo: k.Info().Tipo, Errore: k.Info().Errore}
	d.Intestazione.Mittente = tx.Sender
	for _, r := range tx.Recipients {
		d.Intestazione.Destinatari = append(d.Intestazione.Destinatari, daticert.Destinatario{Tipo: r.Type, Addr: r.Addr})
	}
	d.Intestazione.Risposte = tx.risposte()
	d.Intestazione.Oggetto = daticert.Subject(tx.Subject)
	d.Dati = daticert.Dati{GestoreEmittente: p.Name, Data: ref.Data(), Identificativo: tx.ID, Msgid: tx.MsgID}
	return d
}

// oneLine removes line breaks from text that goes into a single header or daticert line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
