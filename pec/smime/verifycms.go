package smime

import "fmt"

// VerifyCMS checks a CMS SignedData (RFC 5652 §5) that is not a MIME message: a .p7m with
// the content encapsulated (content nil) or a detached signature over content (content
// non-nil; use []byte{} for empty content). der is the ContentInfo, DER or BER.
//
// The checks are those of Verify, by the same code: messageDigest over the exact content
// bytes (no line-end conversion), signature over the signed attributes with SHA-1 or SHA-2,
// contentType equal to eContentType, every SignerInfo (at most 8); and, when opts.Roots is
// set, the first signer's chain at opts.At, else at its signingTime, else now, for the
// extended key usages opts.KeyUsages (default emailProtection).
//
// Verified.Entity is the content that verified (it aliases der or content),
// Verified.ContentType its type. Header, RawHeader, Micalg and Protocol stay empty. The
// error wraps ErrMalformed, ErrBadSignature or ErrUntrusted (and ErrExpired), as Verify's.
func VerifyCMS(der, content []byte, opts VerifyOptions) (*Verified, error) {
	sd, err := parseSignedData(der)
	if err != nil {
		return nil, err
	}
	var candidates [][]byte
	switch {
	case content == nil && sd.eContent == nil:
		return nil, fmt.Errorf("%w: detached SignedData: the signed content is needed to verify it", ErrMalformed)
	case content == nil:
		candidates = [][]byte{sd.eContent}
	case sd.eContent != nil:
		return nil, fmt.Errorf("%w: the SignedData encapsulates its content, and another was given", ErrMalformed)
	default:
		candidates = [][]byte{content}
	}
	v := &Verified{}
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

// VerifyChain builds the signer's chain to opts.Roots (required) at opts.At, else at the
// signing time, else now, and fills v.Chains and v.VerifiedAt. Verify and VerifyCMS do it
// when given Roots; callers call it themselves when the time to check at is in the signed
// content, such as the genTime of an RFC 3161 token (verify with Roots nil first, read the
// content, then VerifyChain). The error wraps ErrUntrusted (and ErrExpired).
func (v *Verified) VerifyChain(opts VerifyOptions) error { return verifyChain(v, opts) }
