package pec

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// validity checks the signer certificate's validity period at r.At (pec-spec.md §7.2
// step 3). The chain check repeats it for every certificate; this one names the problem.
func (t *Trust) validity(r *TrustResult) bool {
	c := r.Signer
	switch {
	case r.At.Before(c.NotBefore):
		r.add(Error, "cert-validity", "§7.2", whereSigner, "not valid before %s; signed at %s", c.NotBefore.UTC().Format(time.RFC3339), r.At.UTC().Format(time.RFC3339))
	case r.At.After(c.NotAfter):
		r.add(Error, "cert-validity", "§7.2", whereSigner, "expired on %s; signed at %s", c.NotAfter.UTC().Format(time.RFC3339), r.At.UTC().Format(time.RFC3339))
	default:
		return true
	}
	return false
}

// chain builds the signer's certification path to an anchor at r.At (pec-spec.md §7.2
// step 3), with the certificates of the CMS as intermediates.
func (t *Trust) chain(r *TrustResult, v *smime.Verified) {
	if t.roots == nil {
		r.Skipped = append(r.Skipped, "chain: no trust anchors given; only the signature's integrity was checked")
		return
	}
	when := r.At.UTC().Format(time.RFC3339)
	// RFC 5750 §4.4.2: a keyUsage extension must allow digitalSignature or nonRepudiation.
	if ku := r.Signer.KeyUsage; ku != 0 && ku&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		r.add(Error, "chain", "§7.2", whereSigner, "key usage does not allow signing")
		return
	}
	inter := x509.NewCertPool()
	for _, c := range v.Certs {
		if c != v.Signer {
			inter.AddCert(c)
		}
	}
	chains, err := r.Signer.Verify(x509.VerifyOptions{
		Roots:         t.roots,
		Intermediates: inter,
		CurrentTime:   r.At,
		// A certificate without EKU is valid for any purpose (RFC 5280 §4.2.1.12), which
		// covers the DigitPA-era provider certificates; AgID CA1 and its providers carry
		// emailProtection (pec-spec.md §8.2).
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	})
	if err == nil {
		r.Chain = chains[0]
		return
	}
	// crypto/x509 refuses SHA-1 certificate signatures; the DigitPA-era chains of 2014
	// (pec-spec.md §8.2–8.3) use them. We check that chain ourselves: a real, legacy
	// deviation, not a forgery.
	if ch, serr := sha1Chain(r.Signer, v.Certs, t.cfg.Anchors, r.At); serr == nil {
		r.Chain = ch
		r.add(Warning, "chain-sha1", "§8.3", whereSigner, "chain verified at %s with SHA-1 certificate signatures (legacy, refused by modern verifiers)", when)
		return
	}
	r.add(Error, "chain", "§7.2", whereSigner, "chain not trusted at %s: %v", when, err)
}

// sha1Chain checks a chain whose certificate signatures are RSA with SHA-1, which crypto/x509
// refuses: from leaf up through the CMS certificates to one of anchors, each certificate
// valid at at and signed by the next, each issuer a CA (basicConstraints, path length, and
// keyCertSign when it has a keyUsage). Other signature algorithms on the way are checked by
// crypto/x509. A chain without any SHA-1 signature is not legacy and is left to crypto/x509
// alone, which also applies name constraints and extended key usages. It returns the chain,
// leaf first, anchor last.
func sha1Chain(leaf *x509.Certificate, pool, anchors []*x509.Certificate, at time.Time) ([]*x509.Certificate, error) {
	cur := leaf
	chain := []*x509.Certificate{leaf}
	legacy := false
	for depth := 0; depth < 5; depth++ {
		if at.Before(cur.NotBefore) || at.After(cur.NotAfter) {
			return nil, fmt.Errorf("%s not valid at %s", cur.Subject, at)
		}
		for _, a := range anchors {
			if bytes.Equal(a.Raw, cur.Raw) {
				if !legacy {
					return nil, errors.New("no SHA-1 certificate signature: not a legacy chain")
				}
				return chain, nil
			}
		}
		var parent *x509.Certificate
		for _, cand := range append(append([]*x509.Certificate{}, anchors...), pool...) {
			if bytes.Equal(cand.RawSubject, cur.RawIssuer) && !bytes.Equal(cand.Raw, cur.Raw) && checkSHA1Sig(cur, cand) == nil {
				parent = cand
				break
			}
		}
		if parent == nil {
			return nil, errors.New("no issuer found")
		}
		// RFC 5280 §4.2.1.9, §4.2.1.3: only a CA issues certificates, within its path length.
		// A provider certificate has no basicConstraints (RFC 6109 §5.5.2): it never issues.
		if !parent.BasicConstraintsValid || !parent.IsCA {
			return nil, fmt.Errorf("issuer %s is not a CA", parent.Subject)
		}
		if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("issuer %s may not sign certificates", parent.Subject)
		}
		if below := len(chain) - 1; (parent.MaxPathLen > 0 || parent.MaxPathLenZero) && below > parent.MaxPathLen {
			return nil, fmt.Errorf("issuer %s: path length %d exceeded", parent.Subject, parent.MaxPathLen)
		}
		legacy = legacy || cur.SignatureAlgorithm == x509.SHA1WithRSA
		cur = parent
		chain = append(chain, cur)
	}
	return nil, errors.New("chain too long")
}

func checkSHA1Sig(c, parent *x509.Certificate) error {
	if c.SignatureAlgorithm != x509.SHA1WithRSA {
		return c.CheckSignatureFrom(parent)
	}
	pub, ok := parent.PublicKey.(*rsa.PublicKey)
	if !ok {
		return errors.New("issuer key is not RSA")
	}
	h := sha1.Sum(c.RawTBSCertificate)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA1, h[:], c.Signature)
}
