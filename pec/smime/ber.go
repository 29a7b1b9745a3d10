package smime

import (
	"encoding/asn1"
	"errors"
	"fmt"
)

// element is one BER/DER TLV. Real CMS is DER except where streaming encoders (OpenSSL's
// opaque signed-data, for one) use indefinite lengths and constructed OCTET STRINGs
// (X.690 §8.1.3.6, §8.7.3), so the reader accepts both and keeps the exact bytes.
type element struct {
	class       int
	tag         int
	constructed bool
	indefinite  bool
	full        []byte // the whole encoding, header to end (end-of-contents octets included)
	content     []byte // the contents octets (without end-of-contents)
	dec         *decoder
}

// decoder bounds the work of one parse. Finding the end of an indefinite-length element
// means parsing its children, and children() parses them again, so nested indefinite
// lengths cost size × depth²; the budget stops hostile input from making that expensive.
type decoder struct{ budget int }

// maxElements is the number of TLV headers one CMS parse may read: far above what a real
// signature (a few hundred elements, or about 8000 4-KB BER chunks for 30 MB) needs.
const maxElements = 1 << 18

const maxDepth = 32

var errTruncated = errors.New("truncated ASN.1 element")

// parseElement reads one TLV from b and returns it with the remaining bytes.
// (Long on purpose: the BER tag, length and indefinite-length cases of X.690 §8.1 in one bounded parser.)
func parseElement(b []byte, depth int, dec *decoder) (e element, rest []byte, err error) {
	if depth > maxDepth {
		return e, nil, errors.New("ASN.1 nesting too deep")
	}
	if dec.budget--; dec.budget < 0 {
		return e, nil, errors.New("ASN.1 structure too complex")
	}
	e.dec = dec
	if len(b) < 2 {
		return e, nil, errTruncated
	}
	e.class = int(b[0] >> 6)
	e.constructed = b[0]&0x20 != 0
	e.tag = int(b[0] & 0x1f)
	i := 1
	if e.tag == 0x1f { // high tag number form (X.690 §8.1.2.4)
		e.tag = 0
		for {
			if i >= len(b) || i > 4 {
				return e, nil, errors.New("bad ASN.1 tag")
			}
			c := b[i]
			i++
			e.tag = e.tag<<7 | int(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
	}
	if i >= len(b) {
		return e, nil, errTruncated
	}
	l := int(b[i])
	i++
	switch {
	case l == 0x80: // indefinite length, constructed only (X.690 §8.1.3.6)
		if !e.constructed {
			return e, nil, errors.New("indefinite length on a primitive ASN.1 element")
		}
		e.indefinite = true
		j := i
		for {
			if len(b)-j >= 2 && b[j] == 0 && b[j+1] == 0 {
				e.content = b[i:j]
				e.full = b[:j+2]
				return e, b[j+2:], nil
			}
			_, r, err := parseElement(b[j:], depth+1, dec)
			if err != nil {
				return e, nil, err
			}
			j = len(b) - len(r)
		}
	case l > 0x80:
		n := l & 0x7f
		if n > 4 || i+n > len(b) {
			return e, nil, errors.New("bad ASN.1 length")
		}
		l = 0
		for k := 0; k < n; k++ {
			l = l<<8 | int(b[i+k])
		}
		i += n
	}
	if l < 0 || l > len(b)-i {
		return e, nil, errTruncated
	}
	e.content = b[i : i+l]
	e.full = b[:i+l]
	return e, b[i+l:], nil
}

// children parses the contents of a constructed element.
func (e element) children(depth int) ([]element, error) {
	if !e.constructed {
		return nil, errors.New("primitive ASN.1 element where a constructed one was expected")
	}
	var out []element
	for b := e.content; len(b) > 0; {
		c, r, err := parseElement(b, depth+1, e.dec)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		b = r
	}
	return out, nil
}

func (e element) is(class, tag int, constructed bool) bool {
	return e.class == class && e.tag == tag && e.constructed == constructed
}

func expect(e element, class, tag int, constructed bool, what string) error {
	if !e.is(class, tag, constructed) {
		return fmt.Errorf("%s: unexpected ASN.1 tag (class %d, tag %d)", what, e.class, e.tag)
	}
	return nil
}

// octets returns the value of an OCTET STRING, joining the segments of a constructed
// (BER) one (X.690 §8.7.3).
func (e element) octets(depth int) ([]byte, error) {
	if e.class != 0 || e.tag != asn1.TagOctetString {
		return nil, errors.New("OCTET STRING expected")
	}
	if !e.constructed {
		return e.content, nil
	}
	kids, err := e.children(depth)
	if err != nil {
		return nil, err
	}
	if len(kids) == 1 {
		return kids[0].octets(depth + 1)
	}
	parts := make([][]byte, 0, len(kids))
	n := 0
	for _, k := range kids {
		v, err := k.octets(depth + 1)
		if err != nil {
			return nil, err
		}
		parts = append(parts, v)
		n += len(v)
	}
	out := make([]byte, 0, n) // one allocation for the joined content
	for _, p := range parts {
		out = append(out, p...)
	}
	return out, nil
}

// oid decodes an OBJECT IDENTIFIER element.
func (e element) oid() (asn1.ObjectIdentifier, error) {
	if !e.is(0, asn1.TagOID, false) || e.indefinite {
		return nil, errors.New("OBJECT IDENTIFIER expected")
	}
	var o asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(e.full, &o); err != nil {
		return nil, err
	}
	return o, nil
}

// smallInt decodes a small non-negative INTEGER (a version number).
func (e element) smallInt() (int, error) {
	if !e.is(0, asn1.TagInteger, false) || len(e.content) != 1 || e.content[0] > 0x7f {
		return 0, errors.New("small INTEGER expected")
	}
	return int(e.content[0]), nil
}
