package pec

import (
	"bytes"
	"encoding/base64"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// field builds a header field, folding value at white space to keep lines under 78
// characters where possible (RFC 5322 §2.2.3). CR and LF in value (from a hostile
// daticert, say) become spaces, so no field can be injected.
func field(name, value string) Field {
	value = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, value)
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(":")
	line := len(name) + 1
	words := strings.Split(value, " ")
	for i, w := range words {
		if i > 0 && line+1+len(w) > 78 && line > len(name)+1 {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(" ")
		b.WriteString(w)
		line += 1 + len(w)
	}
	b.WriteString("\r\n")
	return Field{Name: name, Raw: []byte(b.String())}
}

// encodeWord returns s as is when it is printable ASCII, else as RFC 2047 Q words.
func encodeWord(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return s
}

// quoteDisplay makes s an RFC 5322 quoted-string (or encoded words when not ASCII).
func quoteDisplay(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return mime.QEncoding.Encode("utf-8", s)
		}
	}
	return `"` + displayQuoter.Replace(s) + `"`
}

var displayQuoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// latin1 converts s to ISO-8859-1 when every rune fits.
func latin1(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

// textEntity is a quoted-printable text part. The RFC asks for ISO-8859-1 (RFC 6109 §4.3.1);
// we use it whenever the text fits, and UTF-8 otherwise (a subject in Greek or Chinese
// cannot be written in Latin-1).
func textEntity(subtype, text string) []byte {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	charset := "iso-8859-1"
	body, ok := latin1(text)
	if !ok {
		charset, body = "utf-8", []byte(text)
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: text/" + subtype + "; charset=\"" + charset + "\"\r\n")
	b.WriteString("Content-Disposition: inline\r\n")
	b.WriteString("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
	w := quotedprintable.NewWriter(&b)
	_, _ = w.Write(body) // the writer turns LF into CRLF
	_ = w.Close()
	return b.Bytes()
}

// base64Lines encodes b as base64 in 76-column CRLF lines (RFC 2045 §6.8).
func base64Lines(dst *bytes.Buffer, b []byte) {
	enc := base64.StdEncoding.EncodeToString(b)
	for len(enc) > 76 {
		dst.WriteString(enc[:76])
		dst.WriteString("\r\n")
		enc = enc[76:]
	}
	dst.WriteString(enc)
	dst.WriteString("\r\n")
}

// multipart writes a multipart entity of the given subtype; each part is a complete entity
// (header fields, empty line, body) given as segments written one after the other. cte is ""
// or the Content-Transfer-Encoding of the container (8bit when a part is 8bit, RFC 2045 §6.4).
func multipart(subtype, boundary, cte string, parts ...[][]byte) []byte {
	var w segments
	w.multipart(subtype, boundary, cte, parts...)
	return bytes.Join(w.done(), nil)
}

// segments writes an entity as a list of byte slices to be written in order: small pieces
// (header fields, delimiters) are gathered in one buffer, large ones (the original message in
// a busta) are referenced, not copied (issue 19, P6: a 100 MB message is held once).
type segments struct {
	out [][]byte
	cur []byte
}

// bigSegment is the size from which a slice is referenced rather than copied.
const bigSegment = 32 << 10

func (w *segments) write(b []byte) {
	if len(b) < bigSegment {
		w.cur = append(w.cur, b...)
		return
	}
	if len(w.cur) > 0 {
		w.out, w.cur = append(w.out, w.cur), nil
	}
	w.out = append(w.out, b)
}

func (w *segments) str(s string) { w.cur = append(w.cur, s...) }

// done returns the segments; w is not used after.
func (w *segments) done() [][]byte {
	if len(w.cur) > 0 || len(w.out) == 0 {
		w.out = append(w.out, w.cur)
	}
	return w.out
}

// multipart writes a multipart entity (see multipart above).
func (w *segments) multipart(subtype, boundary, cte string, parts ...[][]byte) {
	w.str("Content-Type: multipart/" + subtype + ";\r\n boundary=\"" + boundary + "\"\r\n")
	if cte != "" {
		w.str("Content-Transfer-Encoding: " + cte + "\r\n")
	}
	w.str("\r\nThis is a multi-part message in MIME format.\r\n")
	for _, p := range parts {
		w.str("\r\n--" + boundary + "\r\n")
		for _, seg := range p {
			w.write(seg)
		}
	}
	w.str("\r\n--" + boundary + "--\r\n")
}

// transferEncoding picks the Content-Transfer-Encoding of a message/rfc822 part: only 7bit,
// 8bit or binary are allowed there (RFC 2046 §5.2.1), so the original is never re-encoded.
// 8bit requires that no MTA downgrades it: Postfix needs disable_mime_output_conversion = yes,
// otherwise a relay to a peer without 8BITMIME re-encodes the part and breaks the signature.
func transferEncoding(msg []byte) string {
	switch {
	case bytes.IndexByte(msg, 0) >= 0:
		return "binary"
	case has8bit(msg):
		return "8bit"
	}
	return "7bit"
}
