// Package smime is the project's one CMS implementation. It builds and checks the S/MIME v3
// signatures that wrap every PEC message (pec-spec §4.1, §8.1): a multipart/signed entity
// (RFC 1847) whose second part is a detached CMS SignedData (RFC 5652) in
// application/x-pkcs7-signature (RFC 5751 §3.4.3). SignCMS and VerifyCMS do the same for
// any bytes, with the content encapsulated or detached: the daily log seal (.jsonl.p7m), the
// signed providers index (.ldif.p7m), RFC 3161 time-stamp tokens (pec/tsa).
//
// Sign works with any crypto.Signer (in-memory RSA or ECDSA keys, PKCS#11 keys that only
// implement crypto.Signer) and writes its own DER: the CMS is small and fully under our
// control (signingTime is the PEC time reference, the randomness and boundary are injectable,
// the entity is hashed once and never copied into the CMS).
//
// Verify accepts what real providers send (pec-spec §7.2.1, §8.2): multipart/signed with
// either protocol spelling, micalg sha1/sha-1/sha256/sha-256, SHA-1 or SHA-2 CMS digests over
// RSA PKCS #1 v1.5 or ECDSA, and opaque application/(x-)pkcs7-mime signed-data with BER
// (indefinite length) encodings. Messages stored with LF line ends are canonicalised to CRLF
// before hashing (RFC 5751 §3.1.1).
package smime

import "errors"

// Sentinel errors. Every error Verify returns wraps exactly one of ErrNotSigned, ErrMalformed,
// ErrBadSignature or ErrUntrusted (ErrExpired errors also match ErrUntrusted), with a precise
// reason in the message.
var (
	// ErrNotSigned: the message has neither a multipart/signed nor an opaque
	// application/(x-)pkcs7-mime signed-data body at the top level.
	ErrNotSigned = errors.New("smime: message is not S/MIME signed")
	// ErrMalformed: the MIME or CMS structure is broken or uses something unsupported.
	ErrMalformed = errors.New("smime: malformed signed message")
	// ErrBadSignature: the digest or the signature does not match; the signed bytes were
	// changed after signing.
	ErrBadSignature = errors.New("smime: signature does not verify")
	// ErrUntrusted: the signature is intact but the signer's chain does not build to the
	// given roots at the time used (including insecure SHA-1 certificate signatures).
	ErrUntrusted = errors.New("smime: signer not trusted")
	// ErrExpired: a certificate of the chain was outside its validity period at the time
	// used. Errors wrapping ErrExpired also wrap ErrUntrusted.
	ErrExpired = errors.New("smime: certificate expired or not yet valid")
)
