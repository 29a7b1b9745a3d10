package inspect

import (
	"bytes"
	"io"
	"strings"
)

// CMS content types (RFC 5652 §14, RFC 5083, RFC 3274).
var (
	oidSignedData         = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}
	oidEnvelopedData      = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03}
	oidAuthEnveloped      = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17}
	oidCompressedData     = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x09}
	errCMSEncrypted       = &cmsError{UncheckedEncrypted, "file cifrato"}
	errCMSUnsupported     = &cmsError{UncheckedUnsupported, "formato di firma non supportato"}
	errCMSDamaged         = &cmsError{UncheckedDamaged, "file firmato danneggiato"}
	maxBERElements    int = 1 << 20
)

type cmsError struct{ why, detail string }

func (e *cmsError) Error() string { return e.detail }

// cms inspects the content of a signed file (CAdES .p7m, DER, BER or base64): the
// document inside, named as the outer file without its .p7m. A detached signature
// (.p7s) holds no content and has nothing to inspect.
func (w *walker) cms(cpath string, names []string, data []byte, depth int) {
	content, err := cmsContent(data)
	if err != nil {
		e := err.(*cmsError)
		w.unchecked(cpath, e.why, e.detail)
		return
	}
	if content == nil || !w.enter(depth+1, cpath) {
		return
	}
	inner := "contenuto firmato"
	var innerNames []string
	if len(names) > 0 {
		if n := baseName(names[0]); strings.HasSuffix(strings.ToLower(n), ".p7m") {
			inner = n[:len(n)-4]
			innerNames = []string{inner}
		}
	}
	ipath := join(cpath, inner)
	if !w.count(ipath) {
		return
	}
	w.file(ipath, innerNames, content, nil, 0, depth+1)
}

// smime inspects an application/pkcs7-mime entity (RFC 8551 §3.5.2): its content is a
// MIME entity, walked at the next level.
func (w *walker) smime(spath string, r io.Reader, depth int) {
	data, _ := io.ReadAll(r)
	content, err := cmsContent(data)
	if err != nil {
		e := err.(*cmsError)
		w.unchecked(spath, e.why, e.detail)
		return
	}
	switch {
	case content == nil:
	case looksLikeEntity(content):
		w.entity(content, spath, "", depth+1)
	default: // a document signed as S/MIME: inspect it as a file
		if w.enter(depth+1, spath) && w.count(spath) {
			w.file(join(spath, "contenuto firmato"), nil, content, nil, 0, depth+1)
		}
	}
}

// cmsContent returns the encapsulated content of a CMS ContentInfo (RFC 5652 §3, §5.2):
// nil for a detached signature, a *cmsError when it is encrypted, of a type not read, or
// does not parse.
// (Long on purpose: the path to the content of a signed-data, field by field.)
func cmsContent(data []byte) ([]byte, error) {
	if len(data) > 0 && data[0] != 0x30 {
		data = unarmor(data)
	}
	p := &berParser{budget: maxBERElements}
	_, ci, ok := p.element(data)
	if !ok {
		return nil, errCMSDamaged
	}
	_, oid, ok := p.element(ci.content)
	if !ok || oid.tag != 0x06 {
		return nil, errCMSDamaged
	}
	switch {
	case bytes.Equal(oid.content, oidEnvelopedData), bytes.Equal(oid.content, oidAuthEnveloped):
		return nil, errCMSEncrypted
	case bytes.Equal(oid.content, oidCompressedData):
		return nil, errCMSUnsupported
	case !bytes.Equal(oid.content, oidSignedData):
		return nil, errCMSUnsupported
	}
	_, explicit, ok := p.element(oid.rest)
	if !ok || explicit.tag != 0xa0 {
		return nil, errCMSDamaged
	}
	_, sd, ok := p.element(explicit.content) // SignedData
	if !ok || sd.tag != 0x30 {
		return nil, errCMSDamaged
	}
	s := sd.content
	for range 2 { // version, digestAlgorithms
		if s, _, ok = p.element(s); !ok {
			return nil, errCMSDamaged
		}
	}
	_, eci, ok := p.element(s) // EncapsulatedContentInfo
	if !ok || eci.tag != 0x30 {
		return nil, errCMSDamaged
	}
	rest, _, ok := p.element(eci.content) // eContentType
	if !ok {
		return nil, errCMSDamaged
	}
	if len(rest) == 0 || rest[0] == 0 { // absent (or end-of-contents): detached
		return nil, nil
	}
	_, ec, ok := p.element(rest)
	if !ok || ec.tag != 0xa0 {
		return nil, errCMSDamaged
	}
	_, oct, ok := p.element(ec.content)
	if !ok {
		return nil, errCMSDamaged
	}
	out, ok := p.octets(oct, nil, 0)
	if !ok {
		return nil, errCMSDamaged
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// unarmor decodes a base64 .p7m, with or without PEM lines.
func unarmor(b []byte) []byte {
	var keep [][]byte
	for line := range bytes.Lines(b) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("-----")) {
			keep = append(keep, line)
		}
	}
	out, _ := io.ReadAll(&b64Reader{src: bytes.Join(keep, nil)})
	return out
}

// sniffBase64CMS recognises a base64 CMS by decoding its first characters.
func sniffBase64CMS(head []byte) Type {
	t := bytes.TrimLeft(head, " \t\r\n")
	if bytes.HasPrefix(t, []byte("-----BEGIN PKCS7-----")) || bytes.HasPrefix(t, []byte("-----BEGIN CMS-----")) {
		return TypeCMS
	}
	var b [24]byte
	n, _ := io.ReadFull(&b64Reader{src: t[:min(len(t), 40)]}, b[:])
	if n > 0 && b[0] == 0x30 && sniffCMS(b[:n]) {
		return TypeCMS
	}
	return ""
}

// berElem is one BER element (X.690 §8.1).
type berElem struct {
	tag     byte // the first identifier octet (class, constructed bit, number < 31)
	content []byte
	rest    []byte
}

// berParser reads BER with definite and indefinite lengths, bounded in depth and in the
// number of elements it looks at overall.
type berParser struct{ budget int }

// element parses the element at the start of b; it returns what follows it.
func (p *berParser) element(b []byte) ([]byte, berElem, bool) {
	return p.elementDepth(b, 0)
}

func (p *berParser) elementDepth(b []byte, depth int) ([]byte, berElem, bool) {
	if p.budget--; p.budget < 0 || depth > 64 || len(b) < 2 {
		return nil, berElem{}, false
	}
	tag := b[0]
	if tag&0x1f == 0x1f { // high tag numbers appear in no structure read here
		return nil, berElem{}, false
	}
	l, i := int(b[1]), 2
	switch {
	case l == 0x80: // indefinite: the contents run to an end-of-contents octet pair
		if tag&0x20 == 0 {
			return nil, berElem{}, false
		}
		s := b[i:]
		for {
			if len(s) >= 2 && s[0] == 0 && s[1] == 0 {
				content := b[i : len(b)-len(s)]
				return s[2:], berElem{tag, content, s[2:]}, true
			}
			var ok bool
			if s, _, ok = p.elementDepth(s, depth+1); !ok {
				return nil, berElem{}, false
			}
		}
	case l > 0x80:
		n := l & 0x7f
		if n > 4 || len(b) < 2+n {
			return nil, berElem{}, false
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		i += n
	}
	if l < 0 || l > len(b)-i {
		return nil, berElem{}, false
	}
	return b[i+l:], berElem{tag, b[i : i+l], b[i+l:]}, true
}

// octets returns an OCTET STRING's value, joining the segments of a constructed one.
func (p *berParser) octets(e berElem, out []byte, depth int) ([]byte, bool) {
	switch e.tag {
	case 0x04:
		if out == nil {
			return e.content, true // primitive: no copy
		}
		return append(out, e.content...), true
	case 0x24:
		if depth > 16 {
			return nil, false
		}
		if out == nil {
			out = []byte{}
		}
		for s := e.content; len(s) > 0; {
			var c berElem
			var ok bool
			if s, c, ok = p.element(s); !ok {
				return nil, false
			}
			if out, ok = p.octets(c, out, depth+1); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}
