package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// signedData is the part of a parsed CMS SignedData (RFC 5652 §5.1) that Verify uses.
type signedData struct {
	digestAlgs   []asn1.ObjectIdentifier
	eContentType asn1.ObjectIdentifier
	eContent     []byte // nil when detached
	certs        []*x509.Certificate
	certErr      error // first certificate that did not parse
	signers      []signerInfo
}

// signerInfo is a parsed SignerInfo (RFC 5652 §5.3).
type signerInfo struct {
	issuer      []byte   // IssuerAndSerialNumber.issuer, DER
	serial      *big.Int // IssuerAndSerialNumber.serialNumber
	ski         []byte   // or SubjectKeyIdentifier (version 3)
	hash        crypto.Hash
	signedAttrs []byte // DER with the SET OF tag (RFC 5652 §5.4), nil when absent
	attrs       []Attribute
	contentType asn1.ObjectIdentifier
	digest      []byte
	signingTime time.Time
	sigAlg      asn1.ObjectIdentifier
	sigParams   *element
	signature   []byte
}

const maxSigners = 8

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: CMS: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// parseSignedData parses a ContentInfo holding SignedData (RFC 5652 §3, §5.1), DER or BER.
// (Long on purpose: RFC 5652 §5.1 SignedData parsed field by field in the order of the ASN.1 definition.)
func parseSignedData(b []byte) (*signedData, error) {
	ci, rest, err := parseElement(b, 0, &decoder{budget: maxElements})
	if err != nil {
		return nil, malformed("ContentInfo: %v", err)
	}
	if len(rest) != 0 {
		return nil, malformed("%d bytes after ContentInfo", len(rest))
	}
	if err := expect(ci, 0, asn1.TagSequence, true, "ContentInfo"); err != nil {
		return nil, malformed("%v", err)
	}
	f, err := ci.children(0)
	if err != nil || len(f) != 2 {
		return nil, malformed("ContentInfo has %d fields (%v)", len(f), err)
	}
	if ct, err := f[0].oid(); err != nil || !ct.Equal(oidSignedData) {
		return nil, malformed("content type %v is not signedData", ct)
	}
	if err := expect(f[1], 2, 0, true, "ContentInfo content"); err != nil {
		return nil, malformed("%v", err)
	}
	inner, err := f[1].children(1)
	if err != nil || len(inner) != 1 {
		return nil, malformed("ContentInfo [0] holds %d elements (%v)", len(inner), err)
	}
	if err := expect(inner[0], 0, asn1.TagSequence, true, "SignedData"); err != nil {
		return nil, malformed("%v", err)
	}
	fields, err := inner[0].children(2)
	if err != nil {
		return nil, malformed("SignedData: %v", err)
	}
	if len(fields) < 4 {
		return nil, malformed("SignedData has %d fields", len(fields))
	}
	sd := &signedData{}
	// RFC 5652 §5.1: version is 1, 3, 4 or 5.
	if ver, err := fields[0].smallInt(); err != nil || (ver != 1 && ver != 3 && ver != 4 && ver != 5) {
		return nil, malformed("SignedData version %d (%v)", ver, err)
	}
	if err := expect(fields[1], 0, asn1.TagSet, true, "digestAlgorithms"); err != nil {
		return nil, malformed("%v", err)
	}
	algs, err := fields[1].children(3)
	if err != nil {
		return nil, malformed("digestAlgorithms: %v", err)
	}
	for _, a := range algs {
		oid, _, err := algorithm(a)
		if err != nil {
			return nil, malformed("digestAlgorithms: %v", err)
		}
		sd.digestAlgs = append(sd.digestAlgs, oid)
	}
	if err := sd.parseEncap(fields[2]); err != nil {
		return nil, err
	}
	i := 3
	if i < len(fields)-1 && fields[i].is(2, 0, true) { // certificates [0] IMPLICIT
		if err := sd.parseCerts(fields[i]); err != nil {
			return nil, err
		}
		i++
	}
	if i < len(fields)-1 && fields[i].is(2, 1, true) { // crls [1] IMPLICIT: not used
		i++
	}
	if i != len(fields)-1 {
		return nil, malformed("SignedData has unexpected fields")
	}
	if err := sd.parseSigners(fields[i]); err != nil {
		return nil, err
	}
	return sd, nil
}

// parseCerts parses the certificates field. Certificates crypto/x509 cannot parse are
// skipped (the first error is kept for the report if the signer's is among them).
func (sd *signedData) parseCerts(e element) error {
	certs, err := e.children(3)
	if err != nil {
		return malformed("certificates: %v", err)
	}
	for _, c := range certs {
		if !c.is(0, asn1.TagSequence, true) {
			continue // other CertificateChoices (attribute certificates, ...) are not used
		}
		cert, err := x509.ParseCertificate(c.full)
		if err != nil {
			if sd.certErr == nil {
				sd.certErr = err
			}
			continue
		}
		sd.certs = append(sd.certs, cert)
	}
	return nil
}

// parseSigners parses the signerInfos SET (RFC 5652 §5.1).
func (sd *signedData) parseSigners(e element) error {
	if err := expect(e, 0, asn1.TagSet, true, "signerInfos"); err != nil {
		return malformed("%v", err)
	}
	sis, err := e.children(3)
	if err != nil {
		return malformed("signerInfos: %v", err)
	}
	// A PEC message has one signer; a few are tolerated. Every one costs a signature
	// check, so hostile input may not ask for thousands.
	if len(sis) == 0 || len(sis) > maxSigners {
		return malformed("%d SignerInfos", len(sis))
	}
	for _, e := range sis {
		si, err := parseSignerInfo(e)
		if err != nil {
			return malformed("SignerInfo: %v", err)
		}
		sd.signers = append(sd.signers, si)
	}
	return nil
}

// parseEncap parses EncapsulatedContentInfo (RFC 5652 §5.2).
func (sd *signedData) parseEncap(e element) error {
	if err := expect(e, 0, asn1.TagSequence, true, "encapContentInfo"); err != nil {
		return malformed("%v", err)
	}
	f, err := e.children(3)
	if err != nil || len(f) < 1 || len(f) > 2 {
		return malformed("encapContentInfo has %d fields (%v)", len(f), err)
	}
	if sd.eContentType, err = f[0].oid(); err != nil {
		return malformed("eContentType: %v", err)
	}
	if len(f) == 2 {
		if err := expect(f[1], 2, 0, true, "eContent"); err != nil {
			return malformed("%v", err)
		}
		c, err := f[1].children(4)
		if err != nil || len(c) != 1 {
			return malformed("eContent holds %d elements (%v)", len(c), err)
		}
		if sd.eContent, err = c[0].octets(5); err != nil {
			return malformed("eContent: %v", err)
		}
		if sd.eContent == nil {
			sd.eContent = []byte{}
		}
	}
	return nil
}

// algorithm parses an AlgorithmIdentifier; params is nil when absent.
func algorithm(e element) (asn1.ObjectIdentifier, *element, error) {
	if err := expect(e, 0, asn1.TagSequence, true, "AlgorithmIdentifier"); err != nil {
		return nil, nil, err
	}
	f, err := e.children(8)
	if err != nil || len(f) < 1 || len(f) > 2 {
		return nil, nil, fmt.Errorf("AlgorithmIdentifier has %d fields (%v)", len(f), err)
	}
	oid, err := f[0].oid()
	if err != nil {
		return nil, nil, err
	}
	if len(f) == 2 {
		return oid, &f[1], nil
	}
	return oid, nil, nil
}

func isNull(p *element) bool {
	return p == nil || (p.is(0, asn1.TagNull, false) && len(p.content) == 0)
}

// (Long on purpose: RFC 5652 §5.3 SignerInfo parsed field by field in the order of the ASN.1 definition.)
func parseSignerInfo(e element) (si signerInfo, err error) {
	if err := expect(e, 0, asn1.TagSequence, true, "SignerInfo"); err != nil {
		return si, err
	}
	f, err := e.children(4)
	if err != nil {
		return si, err
	}
	if len(f) < 5 || len(f) > 7 {
		return si, fmt.Errorf("%d fields", len(f))
	}
	ver, err := f[0].smallInt()
	if err != nil {
		return si, err
	}
	// RFC 5652 §5.3: version 1 with issuerAndSerialNumber, 3 with subjectKeyIdentifier.
	switch {
	case ver == 1 && f[1].is(0, asn1.TagSequence, true):
		ias, err := f[1].children(5)
		if err != nil || len(ias) != 2 || !ias[0].is(0, asn1.TagSequence, true) || !ias[1].is(0, asn1.TagInteger, false) {
			return si, errors.New("bad issuerAndSerialNumber")
		}
		si.issuer = ias[0].full
		if _, err := asn1.Unmarshal(ias[1].full, &si.serial); err != nil {
			return si, fmt.Errorf("serialNumber: %v", err)
		}
	case ver == 3 && f[1].is(2, 0, false) && len(f[1].content) > 0:
		si.ski = f[1].content
	default:
		return si, fmt.Errorf("version %d with an unexpected signer identifier", ver)
	}
	dOID, dParams, err := algorithm(f[2])
	if err != nil {
		return si, err
	}
	var ok bool
	if si.hash, ok = hashByOID(dOID); !ok || !si.hash.Available() || !isNull(dParams) {
		return si, fmt.Errorf("unsupported digest algorithm %v", dOID)
	}
	i := 3
	if f[i].is(2, 0, true) {
		if err := si.parseSignedAttrs(f[i]); err != nil {
			return si, err
		}
		i++
	}
	if i+2 > len(f) {
		return si, errors.New("signatureAlgorithm or signature missing")
	}
	if si.sigAlg, si.sigParams, err = algorithm(f[i]); err != nil {
		return si, err
	}
	if si.signature, err = f[i+1].octets(5); err != nil {
		return si, fmt.Errorf("signature: %v", err)
	}
	i += 2
	if i < len(f) && f[i].is(2, 1, true) { // unsignedAttrs: not used
		i++
	}
	if i != len(f) {
		return si, errors.New("unexpected fields after signature")
	}
	return si, nil
}

// parseSignedAttrs reads contentType, messageDigest and signingTime, each allowed once
// (RFC 5652 §11.1-§11.3), and keeps the bytes the signature covers.
// (Long on purpose: one case per signed attribute RFC 5652 §11 and RFC 5035 define.)
func (si *signerInfo) parseSignedAttrs(e element) error {
	if e.indefinite {
		return errors.New("signedAttrs not DER encoded")
	}
	// RFC 5652 §5.4: the signature covers the DER of the SET OF, i.e. these bytes with
	// the [0] IMPLICIT tag replaced by the SET tag. We hash the attributes as received
	// (like most implementations) rather than re-sorting them.
	si.signedAttrs = append([]byte{asn1.TagSet | 0x20}, e.full[1:]...)
	attrs, err := e.children(5)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, a := range attrs {
		f, err := a.children(6)
		if err != nil || !a.is(0, asn1.TagSequence, true) || len(f) != 2 || !f[1].is(0, asn1.TagSet, true) {
			return errors.New("bad attribute")
		}
		oid, err := f[0].oid()
		if err != nil {
			return err
		}
		vals, err := f[1].children(7)
		if err != nil {
			return err
		}
		values := make([][]byte, len(vals))
		for i, v := range vals {
			values[i] = v.full
		}
		si.attrs = append(si.attrs, Attribute{Type: oid, Values: values})
		key := oid.String()
		switch {
		case oid.Equal(oidAttrContentType), oid.Equal(oidAttrMessageDigest), oid.Equal(oidAttrSigningTime):
			if seen[key] || len(vals) != 1 {
				return fmt.Errorf("attribute %v must have exactly one value and appear once", oid)
			}
			seen[key] = true
		default:
			continue
		}
		v := vals[0]
		switch {
		case oid.Equal(oidAttrContentType):
			if si.contentType, err = v.oid(); err != nil {
				return fmt.Errorf("contentType: %v", err)
			}
		case oid.Equal(oidAttrMessageDigest):
			if !v.is(0, asn1.TagOctetString, false) {
				return errors.New("messageDigest is not an OCTET STRING")
			}
			si.digest = v.content
		case oid.Equal(oidAttrSigningTime):
			if _, err := asn1.Unmarshal(v.full, &si.signingTime); err != nil {
				return fmt.Errorf("signingTime: %v", err)
			}
		}
	}
	// RFC 5652 §5.3: with signedAttrs, contentType and messageDigest MUST be present.
	if si.contentType == nil || si.digest == nil {
		return errors.New("signedAttrs lack contentType or messageDigest")
	}
	return nil
}

// findCert returns the certificate the SignerInfo names (RFC 5652 §5.3 sid).
func (sd *signedData) findCert(si *signerInfo) (*x509.Certificate, error) {
	for _, c := range sd.certs {
		if si.ski != nil {
			if bytes.Equal(c.SubjectKeyId, si.ski) {
				return c, nil
			}
		} else if c.SerialNumber.Cmp(si.serial) == 0 && bytes.Equal(c.RawIssuer, si.issuer) {
			return c, nil
		}
	}
	if sd.certErr != nil {
		return nil, malformed("signer certificate not found; a certificate did not parse: %v", sd.certErr)
	}
	return nil, malformed("signer certificate not in the CMS")
}

// checkAlgorithm checks signatureAlgorithm against the key and the digest (RFC 3370 §3.2,
// RFC 5754 §3, RFC 5758 §3.2).
func checkAlgorithm(si *signerInfo, pub crypto.PublicKey) error {
	switch pub.(type) {
	case *rsa.PublicKey:
		if !isNull(si.sigParams) {
			return errors.New("RSA signature algorithm with parameters")
		}
		if si.sigAlg.Equal(oidRSA) {
			return nil
		}
		for _, e := range hashes {
			if e.rsaOID.Equal(si.sigAlg) && e.h == si.hash {
				return nil
			}
		}
	case *ecdsa.PublicKey:
		if !isNull(si.sigParams) {
			return errors.New("ECDSA signature algorithm with parameters")
		}
		if si.sigAlg.Equal(oidECPublicKey) {
			return nil
		}
		for _, e := range hashes {
			if e.ecOID.Equal(si.sigAlg) && e.h == si.hash {
				return nil
			}
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return fmt.Errorf("unsupported signature algorithm %v for %T", si.sigAlg, pub)
}

// verifySigners checks every SignerInfo against one of the entity candidates and fills v.
func (sd *signedData) verifySigners(candidates [][]byte, v *Verified) error {
	v.Certs = sd.certs
	// The entity is hashed at most once per digest algorithm and candidate, however many
	// signers there are.
	type key struct {
		h crypto.Hash
		i int
	}
	sums := map[key][]byte{}
	digestOf := func(h crypto.Hash, i int) []byte {
		if d, ok := sums[key{h, i}]; ok {
			return d
		}
		d := h.New()
		d.Write(candidates[i])
		sums[key{h, i}] = d.Sum(nil)
		return sums[key{h, i}]
	}
	for n := range sd.signers {
		si := &sd.signers[n]
		cert, err := sd.findCert(si)
		if err != nil {
			return err
		}
		// RFC 5652 §5.1: digestAlgorithms lists the signers' digest algorithms.
		listed := false
		for _, o := range sd.digestAlgs {
			if h, ok := hashByOID(o); ok && h == si.hash {
				listed = true
			}
		}
		if !listed {
			return malformed("signer digest %v not listed in digestAlgorithms", si.hash)
		}
		if err := checkAlgorithm(si, cert.PublicKey); err != nil {
			return malformed("%v", err)
		}
		entity, err := si.verify(sd.eContentType, cert.PublicKey, candidates, digestOf)
		if err != nil {
			return err
		}
		if n == 0 {
			v.Signer, v.Hash, v.SigningTime, v.Entity = cert, si.hash, si.signingTime, entity
			v.Attributes = si.attrs
		}
	}
	v.ContentType, v.Signers = sd.eContentType, len(sd.signers)
	return nil
}

// verify checks the digest of the content and the signature (RFC 5652 §5.4, §5.6) and
// returns the candidate that matched.
func (si *signerInfo) verify(eContentType asn1.ObjectIdentifier, pub crypto.PublicKey, candidates [][]byte, digestOf func(crypto.Hash, int) []byte) ([]byte, error) {
	sum := func(b []byte) []byte {
		d := si.hash.New()
		d.Write(b)
		return d.Sum(nil)
	}
	if si.signedAttrs == nil {
		// RFC 5652 §5.4: without signed attributes the signature covers the content
		// digest, and the content type must be id-data.
		if !eContentType.Equal(oidData) {
			return nil, malformed("no signedAttrs with content type %v", eContentType)
		}
		for i, c := range candidates {
			if checkSignature(pub, si.hash, digestOf(si.hash, i), si.signature) == nil {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w: signature over the content does not verify (no signed attributes)", ErrBadSignature)
	}
	// RFC 5652 §11.1: the contentType attribute equals eContentType.
	if !si.contentType.Equal(eContentType) {
		return nil, malformed("contentType attribute %v differs from eContentType %v", si.contentType, eContentType)
	}
	var entity []byte
	for i, c := range candidates {
		if digestEqual(digestOf(si.hash, i), si.digest) {
			entity = c
			break
		}
	}
	if entity == nil {
		return nil, fmt.Errorf("%w: messageDigest does not match the %v of the signed entity: the entity was altered", ErrBadSignature, si.hash)
	}
	if err := checkSignature(pub, si.hash, sum(si.signedAttrs), si.signature); err != nil {
		return nil, fmt.Errorf("%w: signature over the signed attributes: %v", ErrBadSignature, err)
	}
	return entity, nil
}
