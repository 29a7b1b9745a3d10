package igpec

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// ErrBadSignature is wrapped by VerifySignedLDIF when a .ldif.p7m does not verify: the
// signature is wrong, the content was altered, or the signer does not chain to the trust
// anchor.
var ErrBadSignature = errors.New("igpec: signed LDIF does not verify")

// SignLDIF wraps ldif in a CMS SignedData (RFC 5652) with the content attached and the signer
// chain included, DER-encoded: the .ldif.p7m each provider publishes at its LDIFLocationURL
// (RFC 6109 §4.5, pec-spec.md §9.2). The digest is SHA-256; pec/smime signs it, the code
// that signs PEC messages.
func SignLDIF(ldif []byte, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("igpec: no signer certificate")
	}
	p7m, err := smime.SignCMS(ldif, key, chain, smime.CMSOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, fmt.Errorf("igpec: sign LDIF: %w", err)
	}
	return p7m, nil
}

// VerifySignedLDIF checks a signed LDIF against roots and returns the signed content and the
// signer certificate. raw may be DER, PEM ("PKCS7" or "CMS" block) or bare base64 (the forms
// openssl and other tools write). The signer must chain to roots at the signing time (or now,
// when the signature carries none); SHA-1 and SHA-256 digests are accepted (pec-spec.md §8.2).
func VerifySignedLDIF(raw []byte, roots *x509.CertPool) ([]byte, *x509.Certificate, error) {
	v, err := verifySigned(raw, roots)
	if err != nil {
		return nil, nil, err
	}
	return v.content, v.signer, nil
}

type verified struct {
	content     []byte
	signer      *x509.Certificate
	signingTime time.Time // zero when the signature has no signingTime attribute
}

// verifySigned verifies a .ldif.p7m with pec/smime. The signer certificate may carry any
// extended key usage: it is the provider's PEC certificate (emailProtection) or whatever the
// central index signs with.
func verifySigned(raw []byte, roots *x509.CertPool) (*verified, error) {
	if roots == nil {
		return nil, errors.New("igpec: no trust anchor for a signed LDIF")
	}
	der, err := cmsDER(raw)
	if err != nil {
		return nil, err
	}
	v, err := smime.VerifyCMS(der, nil, smime.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if v.Signers != 1 {
		return nil, fmt.Errorf("%w: %d signers, want exactly one", ErrBadSignature, v.Signers)
	}
	if len(v.Entity) == 0 {
		return nil, fmt.Errorf("%w: no content", ErrBadSignature)
	}
	return &verified{content: v.Entity, signer: v.Signer, signingTime: v.SigningTime}, nil
}

// cmsDER turns the accepted encodings of a .p7m into DER.
func cmsDER(raw []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 0 && trimmed[0] == 0x30 { // SEQUENCE: already DER (or BER)
		return raw, nil
	}
	if block, _ := pem.Decode(trimmed); block != nil {
		return block.Bytes, nil
	}
	compact := bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, trimmed)
	der, err := base64.StdEncoding.DecodeString(string(compact))
	if err != nil {
		return nil, fmt.Errorf("%w: neither DER, PEM nor base64", ErrBadSignature)
	}
	return der, nil
}

// LoadTrustAnchor reads a PEM file of one or more CA certificates.
func LoadTrustAnchor(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}
