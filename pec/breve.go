package pec

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"mime"
	"strings"
)

// Breve returns the postacert.eml of a breve receipt (RFC 6109 §3.3.2.2, pec-spec.md §4.3):
// the message with its MIME structure kept and every part that has a name (Content-Type
// name= or Content-Disposition filename=) replaced by a text/plain part named
// "<name>.hash" whose content is the SHA-1 of the replaced part, 40 lowercase hex digits.
// A message/rfc822 part is replaced as a whole (an unnamed one becomes
// "messaggio.eml.hash").
//
// What is hashed (pec-spec.md §4.3 ambiguity, our choice): the part's body octets exactly as
// they appear in the message, between the empty line after the part's header and the CRLF
// that precedes the next boundary delimiter, that is, the encoded (for example base64) form,
// as the RFC's "SHOULD be calculated on base64 encoded parts" says. A recipient can check
// it by hashing the same bytes of the postacert.eml in the busta.
//
// multipart/signed: only its first part is processed; the signature part is kept, and no
// longer verifies (the RFC expects this). application/(x-)pkcs7-mime: nothing can be seen
// inside, so nothing is replaced. msg must be CRLF.
func Breve(msg []byte) []byte {
	h, body, err := SplitHeader(msg)
	if err != nil || body == nil {
		return msg
	}
	nb, changed := breveBody(h, body)
	if !changed {
		return msg
	}
	out := make([]byte, 0, len(msg)-len(body)+len(nb))
	out = append(out, msg[:len(msg)-len(body)]...)
	return append(out, nb...)
}

// breveBody processes the body of an entity whose header is h.
func breveBody(h Header, body []byte) ([]byte, bool) {
	ct, _ := h.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return body, false
	}
	parts, ok := splitMultipart(body, params["boundary"])
	if !ok {
		return body, false
	}
	changed := false
	for i := range parts.parts {
		if mt == "multipart/signed" && i > 0 {
			break
		}
		np, c := breveEntity(parts.parts[i])
		if c {
			parts.parts[i], changed = np, true
		}
	}
	if !changed {
		return body, false
	}
	return parts.join(), true
}

// breveEntity processes one body part: replaced when named, recursed into when multipart.
func breveEntity(part []byte) ([]byte, bool) {
	h, body, err := SplitHeader(part)
	if err != nil {
		return part, false
	}
	if body == nil {
		body = []byte{}
	}
	name := partName(h)
	if ct, _ := h.Get("Content-Type"); name == "" && isMessageRFC822(ct) {
		// RFC 6109 §3.3.2.2: a message/rfc822 part is replaced as a whole, named or not.
		name = "messaggio.eml"
	}
	if name != "" {
		sum := sha1.Sum(body)
		var b bytes.Buffer
		b.WriteString("Content-Type: " + mime.FormatMediaType("text/plain", map[string]string{"charset": "us-ascii", "name": name + ".hash"}) + "\r\n")
		b.WriteString("Content-Disposition: " + mime.FormatMediaType("attachment", map[string]string{"filename": name + ".hash"}) + "\r\n")
		b.WriteString("Content-Transfer-Encoding: 7bit\r\n\r\n")
		b.WriteString(hex.EncodeToString(sum[:]))
		return b.Bytes(), true
	}
	nb, c := breveBody(h, body)
	if !c {
		return part, false
	}
	out := make([]byte, 0, len(part)-len(body)+len(nb))
	out = append(out, part[:len(part)-len(body)]...)
	return append(out, nb...), true
}

// partName is the file name of a part (filename= wins over name=), "" when unnamed.
func partName(h Header) string {
	if v, ok := h.Get("Content-Disposition"); ok {
		if _, p, err := mime.ParseMediaType(v); err == nil && p["filename"] != "" {
			return p["filename"]
		}
	}
	if v, ok := h.Get("Content-Type"); ok {
		if _, p, err := mime.ParseMediaType(v); err == nil && p["name"] != "" {
			return p["name"]
		}
	}
	return ""
}

// mparts is a multipart body cut at its delimiters, keeping every other byte.
type mparts struct {
	preamble []byte   // up to and including the first "--boundary" line's CRLF
	parts    [][]byte // part contents (header, CRLF, body), without the delimiter CRLFs
	delims   [][]byte // the delimiter after each part: "\r\n--boundary...\r\n" or the close
	epilogue []byte
}

func (m *mparts) join() []byte {
	var b bytes.Buffer
	b.Write(m.preamble)
	for i, p := range m.parts {
		b.Write(p)
		b.Write(m.delims[i])
	}
	b.Write(m.epilogue)
	return b.Bytes()
}

// splitMultipart cuts body at the delimiter lines of boundary (RFC 2046 §5.1.1): a
// delimiter is CRLF "--" boundary, optional white space, CRLF; the close delimiter has "--"
// after the boundary.
func splitMultipart(body []byte, boundary string) (*mparts, bool) {
	dash := []byte("--" + boundary)
	var m mparts
	// first delimiter: may be at the start of the body
	start := -1
	if bytes.HasPrefix(body, dash) {
		start = 0
	} else if i := bytes.Index(body, append([]byte("\r\n"), dash...)); i >= 0 {
		start = i + 2
	}
	if start < 0 {
		return nil, false
	}
	eol := bytes.Index(body[start:], []byte("\r\n"))
	if eol < 0 {
		return nil, false
	}
	m.preamble = body[:start+eol+2]
	rest := body[start+eol+2:]
	off := len(body) - len(rest)
	for {
		i := indexDelim(body[off:], dash)
		if i < 0 {
			return nil, false
		}
		m.parts = append(m.parts, body[off:off+i])
		d := off + i + 2 + len(dash)
		closing := bytes.HasPrefix(body[d:], []byte("--"))
		e := bytes.Index(body[d:], []byte("\r\n"))
		end := len(body)
		if e >= 0 {
			end = d + e + 2
		}
		m.delims = append(m.delims, body[off+i:end])
		off = end
		if closing || e < 0 {
			m.epilogue = body[off:]
			return &m, true
		}
	}
}

// indexDelim finds CRLF followed by dash at a line start, followed by "--", white space or
// CRLF (so a longer boundary sharing the prefix does not match).
func indexDelim(b, dash []byte) int {
	pat := append([]byte("\r\n"), dash...)
	off := 0
	for {
		i := bytes.Index(b[off:], pat)
		if i < 0 {
			return -1
		}
		j := off + i + len(pat)
		if j == len(b) || b[j] == '\r' || b[j] == ' ' || b[j] == '\t' || (b[j] == '-' && j+1 < len(b) && b[j+1] == '-') {
			return off + i
		}
		off = off + i + 1
	}
}

func isMessageRFC822(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "message/rfc822")
}
