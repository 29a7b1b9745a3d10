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

	"github.com/gestore-pec/gestore/pec/certprofile"
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

// CheckProfile checks one of our signing certificates against the profile of RFC 6109 §5.5
// (pec-spec §8.1), as our own (certprofile.Own): a MUST broken is a problem that stops the
// key, a SHOULD a warning. It returns nil when the certificate is fine.
func CheckProfile(cert *x509.Certificate, providerName, serviceAddress string) []Problem {
	var ps []Problem
	for _, f := range certprofile.Check(cert, certprofile.Options{Role: certprofile.Own, ProviderName: providerName, ServiceAddress: serviceAddress}) {
		ps = append(ps, Problem{Check: f.Check, Warning: f.Severity != certprofile.Error, Detail: f.Detail})
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
