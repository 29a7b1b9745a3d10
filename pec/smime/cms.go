package smime

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"fmt"
	"sort"
	"strings"
)

// Object identifiers used in the CMS (RFC 5652, RFC 3370, RFC 5754, RFC 5758, RFC 5751).
var (
	oidData                  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidAttrContentType       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidAttrSMIMECapabilities = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}

	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	oidRSA         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSASHA1     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
	oidRSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidRSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidRSASHA512   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSASHA1   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}
	oidECDSASHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSASHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidAES256CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidDESEDE3CBC  = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

// hashes maps the digest algorithms we sign and verify with to their OID and the micalg
// value we emit. RFC 5751 §3.4.3.2 spells them "sha-1", "sha-256"; real PEC peers (Aruba,
// pec-spec §8.2) and OpenSSL write "sha1" for SHA-1, so we emit "sha1" for SHA-1 and the
// RFC 5751 names for SHA-2. Verify accepts every spelling (see micalgHash).
var hashes = []struct {
	h      crypto.Hash
	oid    asn1.ObjectIdentifier
	micalg string
	rsaOID asn1.ObjectIdentifier
	ecOID  asn1.ObjectIdentifier
}{
	{crypto.SHA1, oidSHA1, "sha1", oidRSASHA1, oidECDSASHA1},
	{crypto.SHA256, oidSHA256, "sha-256", oidRSASHA256, oidECDSASHA256},
	{crypto.SHA384, oidSHA384, "sha-384", oidRSASHA384, oidECDSASHA384},
	{crypto.SHA512, oidSHA512, "sha-512", oidRSASHA512, oidECDSASHA512},
}

func hashOID(h crypto.Hash) (asn1.ObjectIdentifier, string, bool) {
	for _, e := range hashes {
		if e.h == h {
			return e.oid, e.micalg, true
		}
	}
	return nil, "", false
}

func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	for _, e := range hashes {
		if e.oid.Equal(oid) {
			return e.h, true
		}
	}
	return 0, false
}

// DER tags used when building.
const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagNull        = 0x05
	tagOID         = 0x06
	tagSequence    = 0x30
	tagSet         = 0x31
	tagCtx0        = 0xa0 // [0] constructed
)

// appendHeader appends the tag and definite length of a DER TLV whose contents are n bytes.
func appendHeader(dst []byte, tag byte, n int) []byte {
	dst = append(dst, tag)
	switch {
	case n < 0x80:
		return append(dst, byte(n))
	case n < 0x100:
		return append(dst, 0x81, byte(n))
	case n < 0x10000:
		return append(dst, 0x82, byte(n>>8), byte(n))
	case n < 0x1000000:
		return append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// appendDER appends a definite-length DER TLV with the given one-byte tag.
func appendDER(dst []byte, tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	dst = appendHeader(dst, tag, n)
	for _, c := range content {
		dst = append(dst, c...)
	}
	return dst
}

func der(tag byte, content ...[]byte) []byte { return appendDER(nil, tag, content...) }

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic("smime: asn1.Marshal: " + err.Error())
	}
	return b
}

// algID encodes an AlgorithmIdentifier. withNull adds the NULL parameters that
// rsaEncryption requires (RFC 3370 §3.2); digest algorithms go without parameters
// (RFC 5754 §2, RFC 3370 §2.1 "SHOULD omit").
func algID(oid asn1.ObjectIdentifier, withNull bool) []byte {
	if withNull {
		return der(tagSequence, mustMarshal(oid), []byte{tagNull, 0})
	}
	return der(tagSequence, mustMarshal(oid))
}

// derSetOf encodes a SET OF with its elements sorted as DER requires (X.690 §11.6):
// the signature covers this exact encoding (RFC 5652 §5.4).
func derSetOf(tag byte, elems [][]byte) []byte {
	sorted := append([][]byte(nil), elems...)
	sort.Slice(sorted, func(i, j int) bool { return bytes.Compare(sorted[i], sorted[j]) < 0 })
	return der(tag, sorted...)
}

// ParseHash maps a digest name as written in configuration files ("digest: sha256") or in a
// micalg parameter (RFC 5751 §3.4.3.2 "sha-256", RFC 3851 "sha1") to the hash Sign accepts.
// Case is ignored; "" is SHA-256, the default.
func ParseHash(name string) (crypto.Hash, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "sha256", "sha-256":
		return crypto.SHA256, nil
	case "sha1", "sha-1":
		return crypto.SHA1, nil
	case "sha384", "sha-384":
		return crypto.SHA384, nil
	case "sha512", "sha-512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("smime: unknown digest %q (want sha256 or sha1)", name)
}
