// Package certprofile checks a PEC provider's signing certificate against the profile of
// RFC 6109 §5.5 (pec-spec.md §8.1): the provider name in the subject, the service address as
// rfc822Name subjectAltName, critical keyUsage with digitalSignature, AKI and SKI not
// critical, no basicConstraints, nothing else critical.
//
// The same certificate fault weighs differently by whose certificate it is, so the caller
// says which (Role): our own keys are checked at start-up and a broken profile stops the
// signer (Error); another provider's certificate only gets Warnings, because the DigitPA-era
// certificates real providers used violate the profile (pec-spec.md §8.2, §13 #8) and trust
// is decided by the chain and the providers index, not by the profile.
//
// It is a leaf package (standard library only): hsm, pec and pecctl all use it.
package certprofile

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
)

// Severity of a finding.
type Severity int

// Severities. An Error makes our own key unusable; a Warning is worth fixing.
const (
	Warning Severity = iota + 1
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// Role says whose certificate is checked, which decides the severities.
type Role int

const (
	// Own is a certificate of ours (hsm start-up checks, pecctl keys): the profile's MUSTs
	// are Errors, its SHOULDs Warnings. The zero Role, so a caller that forgets is strict.
	Own Role = iota
	// Peer is another provider's certificate (reception point, pecctl verify): every
	// finding is a Warning.
	Peer
)

// Options are what the certificate is checked against.
type Options struct {
	Role Role
	// ProviderName is the providerName as in the index (RFC 6109 §5.5.1: in the subject's CN
	// or O). Empty skips the subject check.
	ProviderName string
	// ServiceAddress is the provider's service address, the From of its system messages,
	// which must be an rfc822Name subjectAltName. Empty only requires some rfc822Name.
	ServiceAddress string
}

// Finding is one way a certificate departs from the profile.
type Finding struct {
	// Check names the rule: version, subject, san, key_usage, basic_constraints, aki, ski,
	// critical, eku. Stable: callers build codes from it.
	Check    string
	Severity Severity
	Detail   string
}

func (f Finding) String() string {
	if f.Severity == Warning {
		return "warning: " + f.Check + ": " + f.Detail
	}
	return f.Check + ": " + f.Detail
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidEmailAddress     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
)

// level of a rule in the RFC: must (MUST, MUST NOT) or should (SHOULD NOT).
type level bool

const (
	must   level = true
	should level = false
)

type checker struct {
	role Role
	out  []Finding
}

func (c *checker) add(check string, l level, format string, a ...any) {
	sev := Warning
	if c.role == Own && l == must {
		sev = Error
	}
	c.out = append(c.out, Finding{Check: check, Severity: sev, Detail: fmt.Sprintf(format, a...)})
}

// Check checks cert against the RFC 6109 §5.5 profile. It returns nil when the certificate
// has the profile.
func Check(cert *x509.Certificate, opts Options) []Finding {
	c := &checker{role: opts.Role}
	if cert.Version != 3 {
		c.add("version", must, "certificate is X.509 v%d, want v3", cert.Version)
	}
	c.subject(cert, opts.ProviderName)
	c.san(cert, opts.ServiceAddress)
	c.extensions(cert)
	return c.out
}

// subject: RFC 6109 §5.5.1, providerName in the subject, in CN or O; the address SHOULD NOT
// be in the subject.
func (c *checker) subject(cert *x509.Certificate, providerName string) {
	if name := strings.TrimSpace(providerName); name != "" {
		// Real certificates put the name in O and "Posta Certificata <name>" in CN, so the CN
		// may also contain it (pec-spec.md §8.2).
		ok := false
		for _, o := range cert.Subject.Organization {
			ok = ok || strings.EqualFold(strings.TrimSpace(o), name)
		}
		cn := strings.TrimSpace(cert.Subject.CommonName)
		ok = ok || strings.EqualFold(cn, name) || strings.Contains(strings.ToLower(cn), strings.ToLower(name))
		if !ok {
			c.add("subject", must, "provider name %q is neither the O nor in the CN of %q", providerName, cert.Subject.String())
		}
	}
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidEmailAddress) {
			c.add("subject", should, "the subject carries an emailAddress; RFC 6109 §5.5.1 wants it only in subjectAltName")
			break
		}
	}
}

// san: RFC 6109 §5.5.1, the service address as rfc822Name subjectAltName.
func (c *checker) san(cert *x509.Certificate, serviceAddress string) {
	switch {
	case len(cert.EmailAddresses) == 0 && serviceAddress != "":
		c.add("san", must, "no rfc822Name subjectAltName; want %s", serviceAddress)
	case len(cert.EmailAddresses) == 0:
		c.add("san", must, "no rfc822Name subjectAltName (the service address)")
	case serviceAddress != "":
		for _, e := range cert.EmailAddresses {
			if strings.EqualFold(e, serviceAddress) {
				return
			}
		}
		c.add("san", must, "rfc822Name subjectAltName %s is not the service address %s", strings.Join(cert.EmailAddresses, ", "), serviceAddress)
	}
}

// extensions: RFC 6109 §5.5.2, required extensions, their criticality, no basicConstraints.
func (c *checker) extensions(cert *x509.Certificate) {
	var ku, aki, ski bool
	for _, ext := range cert.Extensions {
		switch {
		case ext.Id.Equal(oidKeyUsage):
			ku = true
			if !ext.Critical {
				c.add("key_usage", must, "keyUsage is not critical")
			}
		case ext.Id.Equal(oidBasicConstraints):
			c.add("basic_constraints", must, "basicConstraints is present; RFC 6109 §5.5.2 forbids it")
		case ext.Id.Equal(oidAuthorityKeyID):
			aki = true
			if ext.Critical {
				c.add("aki", must, "authorityKeyIdentifier is critical")
			}
		case ext.Id.Equal(oidSubjectKeyID):
			ski = true
			if ext.Critical {
				c.add("ski", must, "subjectKeyIdentifier is critical")
			}
		case ext.Critical && ext.Id.Equal(oidSubjectAltName):
			c.add("san", must, "subjectAltName is critical")
		case ext.Critical:
			c.add("critical", must, "extension %v is critical; only keyUsage may be", ext.Id)
		}
	}
	if !ku {
		c.add("key_usage", must, "keyUsage is missing")
	} else if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		c.add("key_usage", must, "keyUsage lacks digitalSignature")
	}
	if !aki || len(cert.AuthorityKeyId) == 0 {
		c.add("aki", must, "authorityKeyIdentifier with keyIdentifier is missing")
	}
	if !ski {
		c.add("ski", must, "subjectKeyIdentifier is missing")
	}
	// Not in RFC 6109: an extKeyUsage, when present, must allow S/MIME (RFC 5750 §4.4.4);
	// AgID CA1 certificates carry emailProtection (pec-spec.md §8.2).
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		for _, u := range cert.ExtKeyUsage {
			if u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny {
				return
			}
		}
		c.add("eku", must, "extKeyUsage is present without emailProtection")
	}
}
