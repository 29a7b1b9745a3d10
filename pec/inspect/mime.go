package inspect

import (
	"bytes"
	"io"
	"mime"
	"strconv"
	"strings"
)

// entity walks one MIME entity (a message or a body part) at depth. path names the file
// it belongs to, num is its MIME part number ("" for a message's top entity).
func (w *walker) entity(raw []byte, path, num string, depth int) {
	if !w.enter(depth, path) || !w.count(path) {
		return
	}
	h, body := parseHeader(raw)
	typ := h.mediaType()
	names := h.names()
	name := partName(names, num)
	switch {
	case typ == "multipart/encrypted":
		w.unchecked(join(path, name), UncheckedEncrypted, "parte cifrata") // RFC 1847 §2.2, PGP/MIME
		return
	case strings.HasPrefix(typ, "multipart/"):
		if b := h.ctParams["boundary"]; b != "" && w.multipart(body, b, path, num, depth) {
			return
		}
	case typ == "message/rfc822" || typ == "message/global": // RFC 2046 §5.2.1, RFC 6532 §3.7
		inner := body
		if cte := h.encoding(); cte == "base64" || cte == "quoted-printable" {
			inner, _ = io.ReadAll(decoder(cte, body)) // not allowed by RFC 2046, seen anyway
		}
		w.entity(inner, join(path, name), num, depth+1)
		return
	case (typ == "application/pkcs7-mime" || typ == "application/x-pkcs7-mime") && h.smimeEntity(names):
		// RFC 8551 §3.5.2: opaque-signed or enveloped S/MIME; the content is a MIME entity.
		w.smime(join(path, name), h.body(body), depth)
		return
	}
	w.file(join(path, name), names, h.bodyBytes(body), h.body(body), int64(len(body)), depth)
}

// multipart walks the body parts of a multipart body (RFC 2046 §5.1.1). It reports false
// when the delimiter never appears, so the caller inspects the body as a single file.
func (w *walker) multipart(body []byte, boundary, path, num string, depth int) bool {
	delim := []byte("--" + boundary)
	i, start, found := 0, -1, false
	emit := func(end int) bool {
		if end > start && body[end-1] == '\n' { // the line break before a delimiter is part of it
			end--
			if end > start && body[end-1] == '\r' {
				end--
			}
		}
		found = true
		n := strconv.Itoa(i)
		if num != "" {
			n = num + "." + n
		}
		w.entity(body[start:end], path, n, depth+1)
		return !w.stopped
	}
	for pos := 0; pos < len(body); {
		j := bytes.Index(body[pos:], delim)
		if j < 0 {
			break
		}
		at := pos + j
		pos = at + 1
		if at > 0 && body[at-1] != '\n' {
			continue
		}
		after := at + len(delim)
		closing := bytes.HasPrefix(body[after:], []byte("--"))
		if closing {
			after += 2
		}
		eol := bytes.IndexByte(body[after:], '\n')
		if eol < 0 {
			eol = len(body) - after
		}
		if len(bytes.TrimRight(body[after:after+eol], " \t\r")) != 0 {
			continue // a longer boundary, or text that starts like one
		}
		if start >= 0 && !emit(at) {
			return true
		}
		if closing {
			return true
		}
		i++
		start = min(after+eol+1, len(body))
		pos = start
	}
	if start >= 0 {
		emit(len(body)) // no close delimiter: the last part runs to the end, as clients read it
	}
	return found
}

// header holds the fields the walk needs.
type header struct {
	ct, cte, cd string // raw values (unfolded)
	ctType      string
	ctParams    map[string]string
	cdParams    map[string]string
}

// parseHeader splits raw into its header fields and body. The header ends at the first
// empty line (RFC 5322 §2.1); lines that are neither fields nor continuations are skipped,
// as mail clients skip them, so a junk line cannot hide a Content-Type from the walk.
func parseHeader(raw []byte) (header, []byte) {
	var ct, cte, cd span // the fields' values in raw, continuation lines included
	var cur *span
	var ctContainer bool
	body := []byte(nil)
	for i := 0; i < len(raw); {
		eol := bytes.IndexByte(raw[i:], '\n')
		next := len(raw)
		if eol >= 0 {
			next = i + eol + 1
		}
		line := bytes.TrimRight(raw[i:next], "\r\n")
		lineStart := i
		i = next
		if len(line) == 0 {
			body = raw[next:]
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				cur.hi = next
			}
			continue
		}
		cur = nil
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t") // obs-optional WSP before the colon (RFC 5322 §4.5)
		val := span{lineStart + colon + 1, next}
		switch {
		case bytes.EqualFold(name, []byte("Content-Type")):
			// A second Content-Type is kept when it names a container the first does
			// not: a client that reads the second must not see parts the walk missed.
			if c := isContainer(line[colon+1:]); ct.hi == 0 || !ctContainer && c {
				ct, cur, ctContainer = val, &ct, c
			}
		case bytes.EqualFold(name, []byte("Content-Transfer-Encoding")) && cte.hi == 0:
			cte, cur = val, &cte
		case bytes.EqualFold(name, []byte("Content-Disposition")) && cd.hi == 0:
			cd, cur = val, &cd
		}
	}
	h := header{ct: ct.unfold(raw), cte: cte.unfold(raw), cd: cd.unfold(raw)}
	h.ctType, h.ctParams = parseParams(h.ct)
	_, h.cdParams = parseParams(h.cd)
	return h, body
}

// span is a field value's place in the raw header.
type span struct{ lo, hi int }

// unfold returns the value without its line breaks (RFC 5322 §2.2.3).
func (s span) unfold(raw []byte) string {
	v := raw[s.lo:s.hi]
	if bytes.IndexByte(v, '\n') == len(v)-1 || len(v) == 0 {
		return string(bytes.TrimRight(v, "\r\n"))
	}
	out := make([]byte, 0, len(v))
	for _, c := range v {
		if c != '\r' && c != '\n' {
			out = append(out, c)
		}
	}
	return string(out)
}

func isContainer(v []byte) bool {
	v = bytes.TrimLeft(v, " \t")
	return len(v) >= 8 && (bytes.EqualFold(v[:8], []byte("message/")) || len(v) >= 10 && bytes.EqualFold(v[:10], []byte("multipart/")))
}

// parseParams parses a Content-Type or Content-Disposition value (RFC 2045 §5.1, with RFC
// 2231 continuations), falling back to a lenient split when mime.ParseMediaType refuses
// it: a client may well read what the standard parser rejects.
func parseParams(v string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "", nil
	}
	t, ps, err := mime.ParseMediaType(v)
	if err == nil {
		return t, ps
	}
	parts := strings.Split(v, ";")
	t = strings.ToLower(strings.TrimSpace(parts[0]))
	ps = map[string]string{}
	for _, p := range parts[1:] {
		k, val, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.Trim(strings.TrimSpace(val), `"`)
		if _, dup := ps[k]; !dup {
			ps[k] = val
		}
	}
	return t, ps
}

// mediaType is the entity's type; text/plain by default (RFC 2045 §5.2).
func (h header) mediaType() string {
	if h.ctType == "" {
		return "text/plain"
	}
	return h.ctType
}

func (h header) encoding() string { return strings.ToLower(strings.TrimSpace(h.cte)) }

// wordDecoder decodes RFC 2047 encoded words in names; an unknown charset is passed
// through as is, so "=?x-unknown?Q?setup.exe?=" still shows its ".exe".
var wordDecoder = &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}

// names are the entity's file names: Content-Disposition filename and Content-Type name
// (clients differ on which they show, so both are checked).
func (h header) names() []string {
	var ns []string
	for _, n := range []string{h.cdParams["filename"], h.ctParams["name"]} {
		if n == "" {
			continue
		}
		if d, err := wordDecoder.DecodeHeader(n); err == nil {
			n = d
		}
		if !contains(ns, n) {
			ns = append(ns, n)
		}
	}
	return ns
}

// partName is how reports call an entity: its file name, else its part number.
func partName(names []string, num string) string {
	if len(names) > 0 {
		return baseName(names[0])
	}
	if num == "" {
		return "corpo del messaggio"
	}
	return "parte " + num
}

// smimeEntity tells an S/MIME message (content is a MIME entity) from a signed file
// (CAdES .p7m, content is the document). A name other than smime.p7m makes it a file,
// whatever smime-type says: some clients label attached .p7m files signed-data, and
// parsing a document as MIME would hide it.
func (h header) smimeEntity(names []string) bool {
	for _, n := range names {
		if !strings.EqualFold(baseName(n), "smime.p7m") {
			return false
		}
	}
	switch strings.ToLower(h.ctParams["smime-type"]) {
	case "signed-data", "enveloped-data", "authenveloped-data", "compressed-data":
		return true
	}
	return len(names) > 0
}

// looksLikeEntity: the first line is a header field (RFC 5322 §2.2 field-name) or empty.
func looksLikeEntity(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ':':
			return i > 0
		case c == '\r' || c == '\n':
			return i == 0
		case c < '!' || c > '~':
			return false
		}
	}
	return false
}

// bodyBytes is the decoded body when no decoding is needed, else nil.
func (h header) bodyBytes(body []byte) []byte {
	switch h.encoding() {
	case "base64", "quoted-printable":
		return nil
	}
	if body == nil {
		return []byte{}
	}
	return body
}

// body streams the decoded body.
func (h header) body(body []byte) io.Reader { return decoder(h.encoding(), body) }

func decoder(cte string, body []byte) io.Reader {
	switch cte {
	case "base64":
		return &b64Reader{src: body}
	case "quoted-printable":
		return &qpReader{src: body}
	}
	return bytes.NewReader(body)
}

// b64Reader decodes base64 leniently, as mail clients do: characters outside the
// alphabet (line breaks, spaces, '=' and junk) are skipped (RFC 2045 §6.8).
type b64Reader struct {
	src    []byte
	acc    uint32 // sextets of the group being decoded
	n      int    // how many
	pend   [3]byte
	pi, pn int // pend[pi:pn] decoded, not yet handed out
}

var b64Val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	t['-'], t['_'] = 62, 63 // base64url, seen in the wild
	return t
}()

func (d *b64Reader) Read(p []byte) (int, error) {
	k := 0
	for k < len(p) {
		if d.pi < d.pn {
			n := copy(p[k:], d.pend[d.pi:d.pn])
			d.pi += n
			k += n
			continue
		}
		if len(d.src) == 0 {
			if d.n < 2 {
				break
			}
			// A final partial group: 2 sextets give 1 byte, 3 give 2.
			acc := d.acc << (6 * uint(4-d.n))
			d.pend = [3]byte{byte(acc >> 16), byte(acc >> 8)}
			d.pi, d.pn, d.n = 0, d.n-1, 0
			continue
		}
		src, acc, n := d.src, d.acc, d.n
		i := 0
		for ; i < len(src) && k+3 <= len(p); i++ {
			v := b64Val[src[i]]
			if v == 0xff {
				continue
			}
			acc = acc<<6 | uint32(v)
			if n++; n == 4 {
				p[k], p[k+1], p[k+2] = byte(acc>>16), byte(acc>>8), byte(acc)
				k += 3
				acc, n = 0, 0
			}
		}
		for ; i < len(src) && n < 4 && k+3 > len(p); i++ { // little room: one group into pend
			if v := b64Val[src[i]]; v != 0xff {
				acc = acc<<6 | uint32(v)
				n++
			}
		}
		if n == 4 {
			d.pend = [3]byte{byte(acc >> 16), byte(acc >> 8), byte(acc)}
			d.pi, d.pn, acc, n = 0, 3, 0, 0
		}
		d.src, d.acc, d.n = src[i:], acc, n
	}
	if k == 0 {
		return 0, io.EOF
	}
	return k, nil
}

// qpReader decodes quoted-printable leniently (RFC 2045 §6.7 note 1): an '=' that starts
// no valid escape is kept as is, soft line breaks may carry trailing blanks.
type qpReader struct{ src []byte }

func (d *qpReader) Read(p []byte) (int, error) {
	if len(d.src) == 0 {
		return 0, io.EOF
	}
	s, k := d.src, 0
	for len(s) > 0 && k < len(p) {
		j := bytes.IndexByte(s[:min(len(s), len(p)-k)], '=')
		if j < 0 {
			j = min(len(s), len(p)-k)
		}
		k += copy(p[k:], s[:j])
		s = s[j:]
		if len(s) == 0 || k == len(p) {
			break
		}
		// s[0] == '='
		if len(s) >= 3 && unhex(s[1]) < 16 && unhex(s[2]) < 16 {
			p[k] = unhex(s[1])<<4 | unhex(s[2])
			k++
			s = s[3:]
			continue
		}
		t := bytes.TrimLeft(s[1:], " \t")
		if len(t) > 0 && t[0] == '\n' {
			s = t[1:]
			continue
		}
		if len(t) > 1 && t[0] == '\r' && t[1] == '\n' {
			s = t[2:]
			continue
		}
		if len(t) == 0 {
			s = t
			continue
		}
		p[k] = '='
		k++
		s = s[1:]
	}
	d.src = s
	return k, nil
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}
