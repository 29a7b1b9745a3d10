package smime

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"time"
)

// CMSOptions tune SignCMS. The zero value makes an attached SignedData of id-data content,
// SHA-256, signingTime now, with crypto/rand.
type CMSOptions struct {
	Hash crypto.Hash // crypto.SHA256 (default when 0), crypto.SHA1, SHA-384 or SHA-512
	// Detached leaves the content out (RFC 5652 §5.2: eContent absent); the verifier needs
	// the content beside the signature. Default: the content is encapsulated (a .p7m).
	Detached bool
	// ContentType is the eContentType; nil is id-data. Any other type makes a version 3
	// SignedData (RFC 5652 §5.1), e.g. id-ct-TSTInfo for an RFC 3161 token.
	ContentType asn1.ObjectIdentifier
	SigningTime time.Time // zero = time.Now()
	// Attributes are signed attributes added to contentType, signingTime and messageDigest,
	// which SignCMS writes itself and which may not be given here.
	Attributes []Attribute
	// NoCertificates leaves the certificates field out (RFC 5652 §5.1 makes it optional):
	// the verifier has the signer's certificate some other way, as for an RFC 3161 token
	// requested without certReq (RFC 3161 §2.4.1).
	NoCertificates bool
	Rand           io.Reader // nil = crypto/rand
}

// Attribute is a CMS attribute (RFC 5652 §5.3): its type and the DER encoding of each value.
type Attribute struct {
	Type   asn1.ObjectIdentifier
	Values [][]byte
}

// SignCMS signs content with signer and returns the DER of a ContentInfo holding a CMS
// SignedData (RFC 5652 §5): one SignerInfo identified by issuer and serial number, the
// signed attributes contentType, signingTime and messageDigest (plus opts.Attributes), and
// chain (chain[0] = signer certificate, then intermediates) in the certificates field. The
// content is encapsulated unless opts.Detached. It is the same code that signs S/MIME
// messages (Sign), for any bytes: the daily log seal, the signed providers index, RFC 3161
// tokens. `openssl cms -verify -binary -inform DER` checks the result.
func SignCMS(content []byte, signer crypto.Signer, chain []*x509.Certificate, opts CMSOptions) ([]byte, error) {
	if signer == nil || len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("smime: SignCMS needs a signer and its certificate")
	}
	p := cmsParams{hash: opts.Hash, contentType: opts.ContentType, attached: !opts.Detached,
		signingTime: opts.SigningTime, attrs: opts.Attributes, noCerts: opts.NoCertificates, rnd: opts.Rand}
	if p.hash == 0 {
		p.hash = crypto.SHA256
	}
	if p.contentType == nil {
		p.contentType = oidData
	}
	if p.signingTime.IsZero() {
		p.signingTime = time.Now()
	}
	if p.rnd == nil {
		p.rnd = rand.Reader
	}
	for _, a := range p.attrs {
		// RFC 5652 §11: these attributes appear once, and SignCMS writes them.
		if a.Type.Equal(oidAttrContentType) || a.Type.Equal(oidAttrMessageDigest) || a.Type.Equal(oidAttrSigningTime) {
			return nil, fmt.Errorf("smime: attribute %v is written by SignCMS", a.Type)
		}
		if len(a.Values) == 0 {
			return nil, fmt.Errorf("smime: attribute %v without values", a.Type)
		}
	}
	return buildSignedData([][]byte{content}, signer, chain, p)
}

// maxContent keeps every DER length within the four length octets appendHeader writes.
const maxContent = 1<<32 - 1<<20

// cmsParams is what buildSignedData needs besides content, key and chain.
type cmsParams struct {
	hash        crypto.Hash
	contentType asn1.ObjectIdentifier
	attached    bool
	smimeCaps   bool // add smimeCapabilities (RFC 5751 §2.5.2): S/MIME messages only
	signingTime time.Time
	attrs       []Attribute
	noCerts     bool
	rnd         io.Reader
}

// buildSignedData returns the DER of a ContentInfo holding a SignedData over content, the
// concatenation of its segments (RFC 5652 §5), the content encapsulated when p.attached. The output is built in one
// allocation: a sealed day of log can be hundreds of megabytes.
// (Long on purpose: the DER of SignedData written field by field in RFC 5652 order, in one allocation.)
func buildSignedData(content [][]byte, signer crypto.Signer, chain []*x509.Certificate, p cmsParams) ([]byte, error) {
	hOID, _, ok := hashOID(p.hash)
	if !ok || !p.hash.Available() {
		return nil, fmt.Errorf("smime: unsupported digest %v", p.hash)
	}
	if n := segmentsLen(content); uint64(n) > maxContent {
		return nil, fmt.Errorf("smime: %d bytes are too many for one SignedData", n)
	}
	leaf := chain[0]
	pub := signer.Public()
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(leaf.PublicKey) {
		return nil, errors.New("smime: signer key does not match the certificate chain[0]")
	}
	var sigAlg []byte
	switch pub.(type) {
	case *rsa.PublicKey:
		// RFC 3370 §3.2: rsaEncryption with NULL parameters, as OpenSSL and Aruba emit.
		sigAlg = algID(oidRSA, true)
	case *ecdsa.PublicKey:
		for _, e := range hashes {
			if e.h == p.hash {
				sigAlg = algID(e.ecOID, false) // RFC 5753 §7.1.3, RFC 5758 §3.2: no parameters
			}
		}
	default:
		return nil, fmt.Errorf("smime: unsupported signer key type %T", pub)
	}

	d := p.hash.New()
	for _, seg := range content {
		d.Write(seg)
	}
	signedAttrs := signedAttributes(p, d.Sum(nil))
	ad := p.hash.New()
	ad.Write(signedAttrs)
	sig, err := signer.Sign(p.rnd, ad.Sum(nil), p.hash)
	if err != nil {
		return nil, fmt.Errorf("smime: signing: %w", err)
	}
	// Check what the signer (an HSM, possibly) returned before it goes out on the wire.
	if err := checkSignature(pub, p.hash, ad.Sum(nil), sig); err != nil {
		return nil, fmt.Errorf("smime: signer produced an invalid signature: %w", err)
	}

	signedAttrs[0] = tagCtx0
	sid := der(tagSequence, leaf.RawIssuer, mustMarshal(leaf.SerialNumber)) // IssuerAndSerialNumber
	signerInfo := der(tagSequence,
		[]byte{tagInteger, 1, 1}, // version 1: sid is issuerAndSerialNumber (RFC 5652 §5.3)
		sid,
		algID(hOID, false),
		signedAttrs,
		sigAlg,
		der(tagOctetString, sig),
	)
	var certs []byte
	for _, c := range chain {
		certs = append(certs, c.Raw...)
	}
	// RFC 5652 §5.1: version 1 for id-data without v2+ certificates or attributes, 3 when
	// eContentType is another type.
	version := byte(1)
	if !p.contentType.Equal(oidData) {
		version = 3
	}
	encap := tlv(tagSequence, raw(mustMarshal(p.contentType)))
	if p.attached {
		octets := tlv(tagOctetString)
		for _, seg := range content {
			octets.kids = append(octets.kids, raw(seg))
		}
		encap.kids = append(encap.kids, tlv(tagCtx0, octets)) // RFC 5652 §5.2 eContent [0] EXPLICIT
	}
	sd := tlv(tagSequence,
		raw([]byte{tagInteger, 1, version}),
		raw(der(tagSet, algID(hOID, false))),
		encap,
	)
	if !p.noCerts {
		sd.kids = append(sd.kids, raw(der(tagCtx0, certs)))
	}
	sd.kids = append(sd.kids, raw(der(tagSet, signerInfo)))
	ci := tlv(tagSequence, raw(mustMarshal(oidSignedData)), tlv(tagCtx0, sd))
	return ci.appendTo(make([]byte, 0, ci.size())), nil
}

// signedAttributes returns the DER of the signed attributes with the SET OF tag
// (RFC 5652 §5.4): contentType, signingTime, messageDigest (RFC 5652 §5.3, §11), then
// smimeCapabilities (RFC 5751 §2.5.2) for S/MIME and the caller's attributes.
func signedAttributes(p cmsParams, digest []byte) []byte {
	attrs := [][]byte{
		attribute(oidAttrContentType, mustMarshal(p.contentType)),
		// RFC 5652 §11.3: UTCTime through 2049, GeneralizedTime after; encoding/asn1 picks.
		attribute(oidAttrSigningTime, mustMarshal(p.signingTime.UTC().Truncate(time.Second))),
		attribute(oidAttrMessageDigest, der(tagOctetString, digest)),
	}
	if p.smimeCaps {
		caps := der(tagSequence,
			der(tagSequence, mustMarshal(oidAES256CBC)),
			der(tagSequence, mustMarshal(oidAES128CBC)),
			der(tagSequence, mustMarshal(oidDESEDE3CBC)),
		)
		attrs = append(attrs, attribute(oidAttrSMIMECapabilities, caps))
	}
	for _, a := range p.attrs {
		attrs = append(attrs, der(tagSequence, mustMarshal(a.Type), derSetOf(tagSet, a.Values)))
	}
	// The signature covers the DER of the SET OF (sorted, X.690 §11.6); the SignerInfo
	// carries the same bytes with the [0] IMPLICIT tag.
	return derSetOf(tagSet, attrs)
}

func attribute(oid asn1.ObjectIdentifier, value []byte) []byte {
	return der(tagSequence, mustMarshal(oid), der(tagSet, value))
}

// node is a DER element whose encoding is written once, into a buffer of its final size:
// either pre-encoded bytes (leaf) or a tag over children.
type node struct {
	tag  byte // 0: leaf
	leaf []byte
	kids []node
}

func raw(b []byte) node               { return node{leaf: b} }
func tlv(tag byte, kids ...node) node { return node{tag: tag, kids: kids} }

func (n node) contentLen() (l int) {
	for _, k := range n.kids {
		l += k.size()
	}
	return l
}

func (n node) size() int {
	if n.tag == 0 {
		return len(n.leaf)
	}
	l := n.contentLen()
	return len(appendHeader(nil, n.tag, l)) + l
}

func (n node) appendTo(dst []byte) []byte {
	if n.tag == 0 {
		return append(dst, n.leaf...)
	}
	dst = appendHeader(dst, n.tag, n.contentLen())
	for _, k := range n.kids {
		dst = k.appendTo(dst)
	}
	return dst
}
