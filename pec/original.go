package pec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// ErrMalformed is wrapped by the errors of ParseOriginal: the message is not RFC 5322.
var ErrMalformed = errors.New("pec: malformed message")

// Field is one header field kept exactly as received: Raw holds the name, the colon, the
// (possibly folded) value and the final CRLF.
type Field struct {
	Name string // as written; compare with strings.EqualFold
	Raw  []byte
}

// unfolder removes the line breaks of folded header fields. A Replacer builds its tables on
// first use and is safe for concurrent use: one for the process (built per call, it was 1 %
// of pec-milter's CPU, issue 19).
var unfolder = strings.NewReplacer("\r\n ", " ", "\r\n\t", "\t")

// Value is the unfolded value with the leading white space removed.
func (f Field) Value() string {
	v := f.Raw[len(f.Name)+1:]
	v = bytes.TrimRight(v, "\r\n")
	return strings.TrimLeft(unfolder.Replace(string(v)), " \t")
}

// Header is an ordered list of raw fields.
type Header []Field

// Get returns the unfolded value of the first field named name (case-insensitive,
// RFC 5322 §1.2.2; real traffic has X-Tiporicevuta) and whether it exists.
func (h Header) Get(name string) (string, bool) {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return f.Value(), true
		}
	}
	return "", false
}

// Count is the number of fields named name.
func (h Header) Count(name string) int {
	n := 0
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			n++
		}
	}
	return n
}

// Original is a parsed view of a message: raw header fields, the body bytes, and the
// decoded values the PEC rules look at. Raw is the whole message with CRLF line ends.
type Original struct {
	Raw    []byte
	Header Header
	Body   []byte // after the empty line; shares Raw's array

	From      []*mail.Address // parsed From (nil when absent or unparsable)
	FromErr   error
	To, Cc    []*mail.Address
	AddrErr   error  // first To/Cc parse error
	Bcc       string // unfolded Bcc value ("" when absent or empty)
	Subject   string // decoded (RFC 2047) subject
	MessageID string // with angle brackets, "" when absent
	Receipt   daticert.ReceiptType
}

// isCRLF reports whether every LF of msg follows a CR and every CR precedes an LF: each LF
// has its CR and there are as many CRs as LFs (vectorised scans, issue 19).
func isCRLF(msg []byte) bool {
	lf := 0
	for i := 0; ; i++ {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || msg[i-1] != '\r' {
			return false
		}
		lf++
	}
	return bytes.Count(msg, []byte{'\r'}) == lf
}

// maxHeaderLine is the RFC 5322 §2.1.1 line limit; longer lines mark a malformed message.
const maxHeaderLine = 998

// ToCRLF returns msg with every bare LF and bare CR turned into CRLF. SMTP carries lines
// (RFC 5321 §2.3.8), so a bare LF or CR cannot be delivered byte for byte anyway; signed
// entities must be canonical CRLF (RFC 5751 §3.1.1). msg is returned unchanged (same slice)
// when it is already canonical.
func ToCRLF(msg []byte) []byte {
	if isCRLF(msg) {
		return msg
	}
	out := make([]byte, 0, len(msg)+len(msg)/40)
	for i, c := range msg {
		switch {
		case c == '\n' && (i == 0 || msg[i-1] != '\r'):
			out = append(out, '\r', '\n')
		case c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n'):
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// SplitHeader splits a CRLF message into its raw header fields and body. A message without
// the empty line is all header (RFC 5322 §3.5 allows no body).
func SplitHeader(msg []byte) (Header, []byte, error) {
	var h Header
	i := 0
	for i < len(msg) {
		if bytes.HasPrefix(msg[i:], []byte("\r\n")) {
			return h, msg[i+2:], nil
		}
		// A field runs to the CRLF not followed by WSP.
		start := i
		for {
			j := bytes.Index(msg[i:], []byte("\r\n"))
			if j < 0 {
				if len(msg)-i > maxHeaderLine {
					return nil, nil, fmt.Errorf("%w: header line longer than 998 octets", ErrMalformed)
				}
				i = len(msg)
				break
			}
			if j > maxHeaderLine {
				return nil, nil, fmt.Errorf("%w: header line longer than 998 octets", ErrMalformed)
			}
			i += j + 2
			if i >= len(msg) || (msg[i] != ' ' && msg[i] != '\t') {
				break
			}
		}
		raw := msg[start:i]
		colon := bytes.IndexByte(raw, ':')
		if colon <= 0 {
			if start == 0 && bytes.HasPrefix(raw, []byte("From ")) {
				continue // mbox From_ line, tolerated in stored files
			}
			return nil, nil, fmt.Errorf("%w: header line without a field name: %.40q", ErrMalformed, raw)
		}
		name := string(raw[:colon])
		for _, c := range []byte(name) {
			if c <= 32 || c >= 127 {
				return nil, nil, fmt.Errorf("%w: invalid header field name %.40q", ErrMalformed, name)
			}
		}
		h = append(h, Field{Name: name, Raw: raw})
	}
	return h, nil, nil
}

// SplitParts is SplitHeader for a message in parts (Message.Parts): the header fields and a
// reader of the body that reads the parts where they are. The header normally ends in the
// first part (the builder puts it there); when it does not, the parts are joined first.
func SplitParts(parts [][]byte) (Header, io.Reader, error) {
	if len(parts) == 0 {
		return nil, nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	first := parts[0]
	if len(parts) > 1 && !bytes.HasPrefix(first, []byte("\r\n")) && !bytes.Contains(first, []byte("\r\n\r\n")) {
		first, parts = bytes.Join(parts, nil), parts[:1]
	}
	h, body, err := SplitHeader(first)
	if err != nil {
		return nil, nil, err
	}
	r := []io.Reader{bytes.NewReader(body)}
	for _, p := range parts[1:] {
		r = append(r, bytes.NewReader(p))
	}
	return h, io.MultiReader(r...), nil
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charsetReader}

// DecodeHeader decodes RFC 2047 encoded words; on error it returns s unchanged.
func DecodeHeader(s string) string {
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

func parseAddrs(v string) ([]*mail.Address, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	p := mail.AddressParser{WordDecoder: wordDecoder}
	return p.ParseList(v)
}

// ParseOriginal parses a message as received (LF or CRLF line ends). It fails only when the
// header cannot be split into fields; address and subject problems are recorded in the
// result for CheckSubmission to report.
func ParseOriginal(msg []byte) (*Original, error) {
	raw := ToCRLF(msg)
	h, body, err := SplitHeader(raw)
	if err != nil {
		return nil, err
	}
	o := &Original{Raw: raw, Header: h, Body: body, Receipt: daticert.Completa}
	if n := h.Count("From"); n == 1 {
		v, _ := h.Get("From")
		o.From, o.FromErr = parseAddrs(v)
	} else if n > 1 {
		o.FromErr = errors.New("more than one From field")
	}
	for _, f := range h {
		switch {
		case strings.EqualFold(f.Name, "To"), strings.EqualFold(f.Name, "Cc"):
			a, err := parseAddrs(f.Value())
			if err != nil && o.AddrErr == nil {
				o.AddrErr = fmt.Errorf("%s: %w", f.Name, err)
			}
			if strings.EqualFold(f.Name, "To") {
				o.To = append(o.To, a...)
			} else {
				o.Cc = append(o.Cc, a...)
			}
		case strings.EqualFold(f.Name, "Bcc"):
			if v := strings.TrimSpace(f.Value()); v != "" {
				o.Bcc = v
			}
		}
	}
	if v, ok := h.Get("Subject"); ok {
		o.Subject = DecodeHeader(v)
	}
	if v, ok := h.Get("Message-ID"); ok {
		o.MessageID = strings.TrimSpace(v)
	}
	if v, ok := h.Get("X-TipoRicevuta"); ok {
		// pec-spec.md §3.1: completa is the default; unknown values fall back to it.
		if r := daticert.ReceiptType(strings.ToLower(strings.TrimSpace(v))); r.Valid() {
			o.Receipt = r
		}
	}
	return o, nil
}

// Recipients are the distinct To and Cc addresses (To first), compared in CanonAddr form: a
// mailbox in To and in Cc, or written twice with its domain in another case, counts once,
// in the checks, in daticert's destinatari and in tracking.
func (o *Original) Recipients() []string {
	seen := map[string]bool{}
	var out []string
	for _, list := range [][]*mail.Address{o.To, o.Cc} {
		for _, a := range list {
			if c := CanonAddr(a.Address); !seen[c] {
				seen[c] = true
				out = append(out, a.Address)
			}
		}
	}
	return out
}

// Sender is the single From address, or "".
func (o *Original) Sender() string {
	if o.FromErr != nil || len(o.From) != 1 {
		return ""
	}
	return o.From[0].Address
}

// ReplyTo is the first Reply-To address, or "".
func (o *Original) ReplyTo() string {
	v, ok := o.Header.Get("Reply-To")
	if !ok {
		return ""
	}
	a, err := parseAddrs(v)
	if err != nil || len(a) == 0 {
		return ""
	}
	return a[0].Address
}
