package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	Roots         *x509.CertPool // nil: integrity only (like openssl -noverify); non-nil: build the chain
	Intermediates *x509.CertPool // extra intermediates besides those in the CMS
	// At is the time for chain validity; zero = the CMS signingTime if present, else now.
	// signingTime is asserted by the signer itself (a stolen expired key can backdate it),
	// so the reception point checking live traffic (pec-spec §7.2.3) passes time.Now();
	// the signing time suits archived messages, such as the corpus.
	At time.Time
	// KeyUsages are the extended key usages the signer's chain must allow; nil is
	// emailProtection (S/MIME). x509.ExtKeyUsageAny accepts any.
	KeyUsages []x509.ExtKeyUsage
}

// Verified describes a message whose signature verified.
type Verified struct {
	Signer *x509.Certificate
	Certs  []*x509.Certificate   // all certificates in the CMS that parse
	Chains [][]*x509.Certificate // when Roots given
	// Entity is the exact signed entity: the first body part of the multipart/signed as
	// received, or the encapsulated content of opaque signed-data, in the CRLF form that
	// was hashed. It aliases msg unless LF-stored input had to be converted.
	Entity []byte
	// Header holds the top-level header fields of the whole message (not covered by the
	// signature); RawHeader is the same header section as received, empty line included.
	Header    textproto.Header
	RawHeader []byte
	Hash      crypto.Hash // digest algorithm of the CMS signer
	Micalg    string      // micalg parameter as received ("" for opaque signed-data)
	Protocol  string      // application/pkcs7-signature or application/x-pkcs7-signature (lower case); for opaque: the media type
	// SigningTime is the signingTime signed attribute (RFC 5652 §11.3), zero if absent.
	SigningTime time.Time
	// VerifiedAt is the time the chain was checked at (zero when Roots is nil).
	VerifiedAt time.Time
	// ContentType is the eContentType (RFC 5652 §5.2): id-data for S/MIME, id-ct-TSTInfo
	// for an RFC 3161 token.
	ContentType asn1.ObjectIdentifier
	// Attributes are the signed attributes of the first signer as received, those read
	// above included; their values alias the CMS.
	Attributes []Attribute
	Signers    int // SignerInfos in the CMS, all verified
}

// Verify checks a whole RFC 5322 message as received (CRLF or LF storage): a top-level
// multipart/signed with a detached CMS signature (RFC 1847, RFC 5751 §3.4.3), or opaque
// application/(x-)pkcs7-mime signed-data (RFC 5751 §3.4.2, pec-spec §7.2.1).
//
// It checks the messageDigest over the signed entity and the signature over the signed
// attributes (RFC 5652 §5.4, §5.6) with SHA-1 or SHA-2, and, when opts.Roots is set, builds
// the signer's chain at opts.At. Every SignerInfo must verify (at most 8); the chain and the
// Verified fields describe the first one, the only one PEC messages have. The micalg
// parameter is reported, not enforced: the header is not signed and RFC 5751 §3.4.3.2 asks
// receivers to recover from values they do not know; the CMS names the digest.
//
// The returned error wraps ErrNotSigned, ErrMalformed, ErrBadSignature or ErrUntrusted (and
// ErrExpired). Revocation (CRL/OCSP, pec-spec §7.2.3) and checking the signer against the
// providers index (pec-spec §7.2.2) are the caller's job.
func Verify(msg []byte, opts VerifyOptions) (*Verified, error) {
	rawHeader, body, err := splitHeader(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: message: %v", ErrMalformed, err)
	}
	hdr, err := readHeader(rawHeader)
	if err != nil {
		return nil, fmt.Errorf("%w: message header: %v", ErrMalformed, err)
	}
	mt, params, err := mediaType(hdr.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("%w: Content-Type: %v", ErrMalformed, err)
	}
	v := &Verified{Header: hdr, RawHeader: rawHeader}
	var candidates [][]byte // entity forms to try, canonical first
	var p7 []byte
	switch mt {
	case "multipart/signed":
		if candidates, p7, err = detached(v, body, params); err != nil {
			return nil, err
		}
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		v.Protocol = mt
		if st := strings.ToLower(params["smime-type"]); st != "" && st != "signed-data" {
			return nil, fmt.Errorf("%w: %s with smime-type=%s", ErrNotSigned, mt, st)
		}
		if p7, err = decodeTransfer(orBase64(hdr.Get("Content-Transfer-Encoding")), body); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, mt, err)
		}
	default:
		return nil, fmt.Errorf("%w: top-level Content-Type is %s", ErrNotSigned, mt)
	}

	sd, err := parseSignedData(p7)
	if err != nil {
		return nil, err
	}
	if candidates == nil {
		if sd.eContent == nil {
			return nil, fmt.Errorf("%w: opaque signed-data without encapsulated content", ErrMalformed)
		}
		candidates = [][]byte{sd.eContent}
	}
	if err := sd.verifySigners(candidates, v); err != nil {
		return nil, err
	}
	if opts.Roots != nil {
		if err := verifyChain(v, opts); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// detached reads a multipart/signed body (RFC 1847 §2.1): it returns the forms of the first
// part to hash and the DER of the signature part, and fills v.Protocol and v.Micalg.
func detached(v *Verified, body []byte, params map[string]string) (candidates [][]byte, p7 []byte, err error) {
	v.Protocol = strings.ToLower(params["protocol"])
	v.Micalg = params["micalg"]
	// RFC 1847 §2.1 requires protocol; RFC 5751 §3.4.3.2 names the S/MIME values.
	switch v.Protocol {
	case "application/pkcs7-signature", "application/x-pkcs7-signature":
	case "":
		return nil, nil, fmt.Errorf("%w: multipart/signed without protocol parameter", ErrMalformed)
	default:
		return nil, nil, fmt.Errorf("%w: multipart/signed with protocol %q, not S/MIME", ErrNotSigned, v.Protocol)
	}
	if params["boundary"] == "" {
		return nil, nil, fmt.Errorf("%w: multipart/signed without boundary", ErrMalformed)
	}
	first, second, err := signedParts(body, params["boundary"])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: multipart/signed: %v", ErrMalformed, err)
	}
	if p7, err = signaturePart(second, v.Protocol); err != nil {
		return nil, nil, err
	}
	// RFC 5751 §3.1.1: the signature covers the canonical (CRLF) form. LF-stored copies
	// are converted; if that does not match, the bytes as received are tried too (a
	// signer may have hashed binary content with bare LFs).
	candidates = append(candidates, canonicalCRLF(first))
	if len(candidates[0]) != len(first) {
		candidates = append(candidates, first)
	}
	return candidates, p7, nil
}

func orBase64(cte string) string {
	if strings.TrimSpace(cte) == "" {
		return "base64" // RFC 5751 §3.2: pkcs7-mime bodies are base64 in practice; tolerate a missing field
	}
	return cte
}

// signaturePart returns the DER of the second body part (RFC 1847 §2.1 control part).
func signaturePart(part []byte, protocol string) ([]byte, error) {
	rawHdr, body, err := splitHeader(part)
	if err != nil {
		return nil, fmt.Errorf("%w: signature part: %v", ErrMalformed, err)
	}
	h, err := readHeader(rawHdr)
	if err != nil {
		return nil, fmt.Errorf("%w: signature part header: %v", ErrMalformed, err)
	}
	mt, _, err := mediaType(h.Get("Content-Type"))
	if err != nil {
		return nil, fmt.Errorf("%w: signature part Content-Type: %v", ErrMalformed, err)
	}
	// RFC 1847 §2.1: the control part's type matches the protocol parameter; accept either
	// S/MIME spelling, peers mix them.
	if mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature" {
		return nil, fmt.Errorf("%w: second part is %s, protocol says %s", ErrMalformed, mt, protocol)
	}
	der, err := decodeTransfer(orBase64(h.Get("Content-Transfer-Encoding")), body)
	if err != nil {
		return nil, fmt.Errorf("%w: signature part: %v", ErrMalformed, err)
	}
	return der, nil
}

// verifyChain builds the signer's chain to opts.Roots at opts.At, else at the signing time,
// else now (pec-spec §7.2.3: a receipt is judged at the time it was signed).
func verifyChain(v *Verified, opts VerifyOptions) error {
	at := opts.At
	if at.IsZero() {
		at = v.SigningTime
	}
	if at.IsZero() {
		at = time.Now()
	}
	if opts.Roots == nil {
		return fmt.Errorf("%w: no trust anchors to build the chain to", ErrUntrusted)
	}
	v.VerifiedAt = at
	// RFC 5750 §4.4.2: a keyUsage extension must allow digitalSignature or nonRepudiation.
	if ku := v.Signer.KeyUsage; ku != 0 && ku&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("%w: signer certificate key usage does not allow signing", ErrUntrusted)
	}
	inter := x509.NewCertPool()
	if opts.Intermediates != nil {
		inter = opts.Intermediates.Clone()
	}
	for _, c := range v.Certs {
		if c != v.Signer {
			inter.AddCert(c)
		}
	}
	// A certificate without EKU is valid for any purpose (RFC 5280 §4.2.1.12), which
	// covers the DigitPA-era provider certificates; AgID CA1 and its providers carry
	// emailProtection (pec-spec §8.2).
	eku := opts.KeyUsages
	if len(eku) == 0 {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	}
	chains, err := v.Signer.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     eku,
	})
	if err != nil {
		return chainError(err, at)
	}
	v.Chains = chains
	return nil
}

// chainError turns an x509 verification error into ErrUntrusted (and ErrExpired).
func chainError(err error, at time.Time) error {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		return fmt.Errorf("%w: %w: at %s: %v", ErrUntrusted, ErrExpired, at.UTC().Format(time.RFC3339), err)
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		// Go's x509 refuses SHA-1 certificate signatures (Go 1.18+); DigitPA-era chains
		// (2014, pec-spec §8.3) end up here: the signature may be intact, the chain cannot
		// be checked with crypto/x509.
		if ua.Cert != nil && isSHA1(ua.Cert.SignatureAlgorithm) {
			return fmt.Errorf("%w: chain uses a SHA-1 certificate signature, refused by crypto/x509: %v", ErrUntrusted, err)
		}
	}
	return fmt.Errorf("%w: at %s: %v", ErrUntrusted, at.UTC().Format(time.RFC3339), err)
}

func isSHA1(a x509.SignatureAlgorithm) bool {
	return a == x509.SHA1WithRSA || a == x509.ECDSAWithSHA1 || a == x509.DSAWithSHA1
}

// digestEqual compares digests; they are public values, so no constant time is needed.
func digestEqual(a, b []byte) bool { return bytes.Equal(a, b) }
