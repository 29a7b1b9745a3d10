package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// SignOptions tune Sign. The zero value signs with SHA-256, a random boundary, the current
// time and crypto/rand.
//
// Digest choice (pec-spec §8.2): real providers still signed with SHA-1 (micalg="sha1") in
// 2021-2024 and whether AgID now requires SHA-256 is UNVERIFIED. SHA-256 is the default
// because RFC 5751 §2.1 makes it the MUST for S/MIME 3.2 receivers; set Hash to crypto.SHA1
// (hsm config "digest: sha1") for a peer that only accepts SHA-1.
type SignOptions struct {
	Hash        crypto.Hash // crypto.SHA256 (default when 0) or crypto.SHA1 for peers that need it; SHA-384/512 also work
	Boundary    string      // "" = random; injectable for golden files
	SigningTime time.Time   // zero = time.Now(); the PEC time reference is passed here
	Rand        io.Reader   // nil = crypto/rand
}

// Protocol is the protocol parameter Sign emits. RFC 5751 §3.4.3.2 prefers
// "application/pkcs7-signature", but every real PEC provider sends the x- form
// (pec-spec §4.1, §8.2), so we do too; Verify accepts both.
const Protocol = "application/x-pkcs7-signature"

const preamble = "This is an S/MIME signed message\r\n"

// Sign signs entity, a complete MIME entity (its header fields, CRLF CRLF, body; CRLF line
// ends; 7-bit clean: callers keep parts base64/quoted-printable), with signer and chain
// (chain[0] = signer certificate, then intermediates, all included in the CMS). It returns the
// value for the top-level Content-Type header, e.g.
//
//	multipart/signed; protocol="application/x-pkcs7-signature"; micalg=sha-256; boundary="..."
//
// and the multipart/signed body (CRLF), whose first part is entity byte for byte and whose
// second is application/x-pkcs7-signature; name="smime.p7s" base64 (76-column lines),
// Content-Disposition: attachment; filename="smime.p7s". The caller writes its own RFC 5322
// header fields, then "Content-Type: "+ct, then the body, verbatim: signed bytes are sacred.
//
// Entity must be in canonical form (RFC 5751 §3.1.1: every line ends in CRLF, no bare CR or
// LF); Sign refuses anything else because an MTA would rewrite it and break the signature.
// 8-bit octets are allowed (a message/rfc822 part cannot be re-encoded), but lines must stay
// under 998 octets for the signature to survive SMTP (RFC 5322 §2.1.1); the caller keeps them so.
func Sign(entity []byte, signer crypto.Signer, chain []*x509.Certificate, opts SignOptions) (ct string, body []byte, err error) {
	ct, head, tail, err := SignParts(entity, signer, chain, opts)
	if err != nil {
		return "", nil, err
	}
	body = make([]byte, 0, len(head)+len(entity)+len(tail))
	body = append(body, head...)
	body = append(body, entity...)
	return ct, append(body, tail...), nil
}

// SignParts is Sign without the copy of the entity: the multipart/signed body is head,
// then entity unchanged, then tail. Callers streaming a large message (a 30 MB busta) write
// the three slices in turn instead of building one more copy.
func SignParts(entity []byte, signer crypto.Signer, chain []*x509.Certificate, opts SignOptions) (ct string, head, tail []byte, err error) {
	return SignSegments([][]byte{entity}, signer, chain, opts)
}

// SignSegments is SignParts for an entity given as segments, the entity being their
// concatenation (the segments may split a line anywhere): the caller that built the entity
// around a large message it already holds (the busta around the original) signs and writes
// it without joining it into one more copy (issue 19, P6).
// (Long on purpose: the multipart/signed framing of RFC 1847 written around the untouched entity.)
func SignSegments(entity [][]byte, signer crypto.Signer, chain []*x509.Certificate, opts SignOptions) (ct string, head, tail []byte, err error) {
	if signer == nil || len(chain) == 0 || chain[0] == nil {
		return "", nil, nil, errors.New("smime: Sign needs a signer and its certificate")
	}
	h := opts.Hash
	if h == 0 {
		h = crypto.SHA256
	}
	_, micalg, ok := hashOID(h)
	if !ok || !h.Available() {
		return "", nil, nil, fmt.Errorf("smime: unsupported digest %v", h)
	}
	if err := checkCanonical(entity); err != nil {
		return "", nil, nil, err
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	boundary := opts.Boundary
	if boundary == "" {
		var b [16]byte
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return "", nil, nil, fmt.Errorf("smime: boundary: %w", err)
		}
		boundary = "----" + hexUpper(b[:])
	} else if err := checkBoundary(boundary); err != nil {
		return "", nil, nil, err
	}
	// RFC 2046 §5.1.1: the boundary must not occur in the encapsulated part. Reject rather
	// than emit an ambiguous body (only an injected boundary can realistically collide).
	// The entity is read as if preceded by CRLF, so that "--boundary" at its very start counts.
	if SegmentsContain(append([][]byte{[]byte("\r\n")}, entity...), []byte("\r\n--"+boundary)) {
		return "", nil, nil, fmt.Errorf("smime: boundary %q occurs in the entity", boundary)
	}
	signingTime := opts.SigningTime
	if signingTime.IsZero() {
		signingTime = time.Now()
	}

	// RFC 5751 §3.4.3.1: a detached SignedData over the entity.
	p7s, err := buildSignedData(entity, signer, chain, cmsParams{hash: h, contentType: oidData, smimeCaps: true,
		signingTime: signingTime, rnd: rnd})
	if err != nil {
		return "", nil, nil, err
	}

	// RFC 1847 §2.1 / RFC 5751 §3.4.3: two parts, the entity verbatim, then the signature.
	sigHeader := "Content-Type: " + Protocol + "; name=\"smime.p7s\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
	head = make([]byte, 0, len(preamble)+len(boundary)+6)
	head = append(head, preamble...)
	head = append(head, "\r\n--"...)
	head = append(head, boundary...)
	head = append(head, "\r\n"...)
	b64len := base64.StdEncoding.EncodedLen(len(p7s))
	tail = make([]byte, 0, 2*len(boundary)+len(sigHeader)+b64len+(b64len/76+1)*2+12)
	// RFC 1847 §2.1 / RFC 2046 §5.1.1: this CRLF belongs to the delimiter, not to the entity.
	tail = append(tail, "\r\n--"...)
	tail = append(tail, boundary...)
	tail = append(tail, "\r\n"...)
	tail = append(tail, sigHeader...)
	tail = appendBase64Lines(tail, p7s)
	tail = append(tail, "\r\n--"...)
	tail = append(tail, boundary...)
	tail = append(tail, "--\r\n"...)

	ct = `multipart/signed; protocol="` + Protocol + `"; micalg=` + micalg + `; boundary="` + boundary + `"`
	return ct, head, tail, nil
}

// checkSignature verifies sig made by pub over digest (RSA PKCS #1 v1.5 or ECDSA; RSA-PSS
// and EdDSA are not used by PEC peers and are refused as unsupported).
func checkSignature(pub crypto.PublicKey, h crypto.Hash, digest, sig []byte) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		// RSA PKCS #1 v1.5 directly, so SHA-1 works (real PEC peers still sign with it,
		// pec-spec §8.2); crypto/x509 would refuse SHA-1.
		return rsa.VerifyPKCS1v15(k, h, digest, sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ecdsa: verification error")
		}
		return nil
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}

// checkCanonical enforces RFC 5751 §3.1.1 canonical line ends on the concatenation of the
// segments: every LF is preceded by CR and every CR is followed by LF. If each LF has its own
// CR before it and the counts are equal, no bare CR is left; both scans are vectorised
// (bytes.IndexByte, bytes.Count). A CR that ends one segment pairs with an LF that starts
// the next.
func checkCanonical(segs [][]byte) error {
	lf, cr, off := 0, 0, 0
	var last byte // the byte before the current segment
	for _, b := range segs {
		for i := 0; ; i++ {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				break
			}
			i += j
			prev := last
			if i > 0 {
				prev = b[i-1]
			}
			if prev != '\r' {
				return fmt.Errorf("smime: entity is not in canonical CRLF form (bare LF at offset %d)", off+i)
			}
			lf++
		}
		cr += bytes.Count(b, []byte{'\r'})
		if len(b) > 0 {
			last = b[len(b)-1]
		}
		off += len(b)
	}
	if cr != lf {
		return fmt.Errorf("smime: entity is not in canonical CRLF form (%d bare CR)", cr-lf)
	}
	return nil
}

// SegmentsContain reports whether pat occurs in the concatenation of segs, also across the
// joints: each segment is searched, and so is every stretch of len(pat)-1 bytes before a
// joint followed by the first len(pat)-1 bytes after it.
func SegmentsContain(segs [][]byte, pat []byte) bool {
	if len(pat) == 0 {
		return true
	}
	var carry []byte // the last len(pat)-1 bytes seen
	for _, b := range segs {
		if bytes.Contains(b, pat) {
			return true
		}
		if len(carry) > 0 {
			joint := append(append([]byte(nil), carry...), b[:min(len(b), len(pat)-1)]...)
			if bytes.Contains(joint, pat) {
				return true
			}
		}
		carry = append(carry, b[max(0, len(b)-(len(pat)-1)):]...)
		carry = carry[max(0, len(carry)-(len(pat)-1)):]
	}
	return false
}

// segmentsLen is the length of the concatenation of segs.
func segmentsLen(segs [][]byte) int {
	n := 0
	for _, b := range segs {
		n += len(b)
	}
	return n
}

// checkBoundary enforces RFC 2046 §5.1.1: 1 to 70 bchars, not ending in a space.
func checkBoundary(s string) error {
	if len(s) == 0 || len(s) > 70 || s[len(s)-1] == ' ' {
		return fmt.Errorf("smime: invalid boundary %q", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || bytes.IndexByte([]byte("'()+_,-./:=? "), c) >= 0) {
			return fmt.Errorf("smime: invalid boundary %q", s)
		}
	}
	return nil
}

func hexUpper(b []byte) string {
	return string(bytes.ToUpper([]byte(hex.EncodeToString(b))))
}

// appendBase64Lines appends the base64 of src in 76-column lines ending in CRLF, without the
// final CRLF (RFC 2045 §6.8).
func appendBase64Lines(dst, src []byte) []byte {
	enc := base64.StdEncoding
	for len(src) > 0 {
		n := min(len(src), 57) // 57 octets = 76 base64 characters
		start := len(dst)
		dst = append(dst, make([]byte, enc.EncodedLen(n))...)
		enc.Encode(dst[start:], src[:n])
		src = src[n:]
		if len(src) > 0 {
			dst = append(dst, '\r', '\n')
		}
	}
	return dst
}
