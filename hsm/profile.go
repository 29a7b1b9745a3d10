package hsm

import (
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Problem is one finding about a provider certificate.
type Problem struct {
	Check   string // short name: subject, san, key_usage, aki, ski, basic_constraints, critical, eku, validity, expiry, chain, version
	Warning bool   // true: worth fixing, not a reason to refuse the certificate
	Detail  string
}

func (p Problem) String() string {
	if p.Warning {
		return "warning: " + p.Check + ": " + p.Detail
	}
	return p.Check + ": " + p.Detail
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidEmailAddress     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// CheckProfile checks a provider signing certificate against the profile of RFC 6109 §5.5
// (pec-spec §8.1). It returns nil when the certificate is fine.
func CheckProfile(cert *x509.Certificate, providerName, serviceAddress string) []Problem {
	var ps []Problem
	add := func(check string, warn bool, format string, a ...any) {
		ps = append(ps, Problem{Check: check, Warning: warn, Detail: fmt.Sprintf(format, a...)})
	}
	if cert.Version != 3 {
		add("version", false, "certificate is X.509 v%d, want v3", cert.Version)
	}
	// RFC 6109 §5.5.1: providerName in the subject, in CN or O. Real certificates put it in O
	// and "Posta Certificata <name>" in CN, so CN may also contain it.
	name := strings.TrimSpace(providerName)
	ok := false
	for _, o := range cert.Subject.Organization {
		ok = ok || strings.EqualFold(strings.TrimSpace(o), name)
	}
	cn := strings.TrimSpace(cert.Subject.CommonName)
	ok = ok || strings.EqualFold(cn, name) || (name != "" && strings.Contains(strings.ToLower(cn), strings.ToLower(name)))
	if !ok {
		add("subject", false, "provider name %q is neither the O nor in the CN of %q", providerName, cert.Subject.String())
	}
	// RFC 6109 §5.5.1: the address goes in subjectAltName, and SHOULD NOT be in the subject.
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidEmailAddress) {
			add("subject", true, "the subject carries an emailAddress; RFC 6109 §5.5.1 wants it only in subjectAltName")
		}
	}
	found := false
	for _, e := range cert.EmailAddresses {
		found = found || strings.EqualFold(e, serviceAddress)
	}
	if !found {
		if len(cert.EmailAddresses) == 0 {
			add("san", false, "no rfc822Name subjectAltName; want %s", serviceAddress)
		} else {
			add("san", false, "rfc822Name subjectAltName %s is not the service address %s", strings.Join(cert.EmailAddresses, ", "), serviceAddress)
		}
	}
	// RFC 6109 §5.5.2: required extensions and criticality.
	seen := map[string]bool{}
	for _, ext := range cert.Extensions {
		switch {
		case ext.Id.Equal(oidKeyUsage):
			seen["ku"] = true
			if !ext.Critical {
				add("key_usage", false, "keyUsage is not critical")
			}
		case ext.Id.Equal(oidBasicConstraints):
			add("basic_constraints", false, "basicConstraints is present; RFC 6109 §5.5.2 forbids it")
		case ext.Id.Equal(oidAuthorityKeyID):
			seen["aki"] = true
			if ext.Critical {
				add("aki", false, "authorityKeyIdentifier is critical")
			}
		case ext.Id.Equal(oidSubjectKeyID):
			seen["ski"] = true
			if ext.Critical {
				add("ski", false, "subjectKeyIdentifier is critical")
			}
		case ext.Critical:
			if ext.Id.Equal(oidSubjectAltName) {
				add("san", false, "subjectAltName is critical")
			} else {
				add("critical", false, "extension %v is critical; only keyUsage may be", ext.Id)
			}
		}
	}
	if !seen["ku"] {
		add("key_usage", false, "keyUsage is missing")
	} else if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		add("key_usage", false, "keyUsage lacks digitalSignature")
	}
	if !seen["aki"] || len(cert.AuthorityKeyId) == 0 {
		add("aki", false, "authorityKeyIdentifier with keyIdentifier is missing")
	}
	if !seen["ski"] {
		add("ski", false, "subjectKeyIdentifier is missing")
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		ok := false
		for _, u := range cert.ExtKeyUsage {
			ok = ok || u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny
		}
		if !ok {
			add("eku", false, "extKeyUsage is present without emailProtection")
		}
	}
	return ps
}

// CheckValidity checks that cert is valid at now, and warns when it expires within warn.
func CheckValidity(cert *x509.Certificate, now time.Time, warn time.Duration) []Problem {
	switch {
	case now.Before(cert.NotBefore):
		return []Problem{{Check: "validity", Detail: fmt.Sprintf("not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))}}
	case now.After(cert.NotAfter):
		return []Problem{{Check: "validity", Detail: fmt.Sprintf("expired on %s", cert.NotAfter.UTC().Format(time.RFC3339))}}
	case cert.NotAfter.Sub(now) < warn:
		return []Problem{{Check: "expiry", Warning: true, Detail: fmt.Sprintf("expires on %s, in %d days", cert.NotAfter.UTC().Format(time.RFC3339), DaysLeft(cert, now))}}
	}
	return nil
}

// DaysLeft is the number of whole days until cert expires (negative once expired).
func DaysLeft(cert *x509.Certificate, now time.Time) int {
	d := cert.NotAfter.Sub(now)
	if d < 0 {
		return -int((-d).Hours() / 24)
	}
	return int(d.Hours() / 24)
}

// Fingerprint is the SHA-1 of the certificate's DER in upper-case hex, the form of the
// providers index's providerCertificateHash (pec-spec §8.2, §9.1).
func Fingerprint(cert *x509.Certificate) string {
	h := sha1.Sum(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(h[:]))
}

// ProviderTemplate is a certificate template with the RFC 6109 §5.5 profile: C=IT,
// O=providerName, CN="Posta Certificata <providerName>", rfc822 SAN serviceAddress, critical
// keyUsage digitalSignature, extKeyUsage emailProtection, SKI, no basicConstraints. The AKI
// comes from the issuer's SKI when x509.CreateCertificate signs it.
func ProviderTemplate(providerName, serviceAddress string, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	ski, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{providerName}, CommonName: "Posta Certificata " + providerName},
		NotBefore:      notBefore,
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature, // Go marks keyUsage critical
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{serviceAddress},
		SubjectKeyId:   ski,
	}, nil
}

// SubjectKeyID is the SHA-1 of the subjectPublicKey bit string (RFC 5280 §4.2.1.2 method 1).
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	h := sha1.Sum(spki.PublicKey.Bytes)
	return h[:], nil
}
