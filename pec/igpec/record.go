// Package igpec is the index of PEC providers (IGPEC, "indice dei gestori di posta
// elettronica certificata"; RFC 6109 §4.5, pec-spec.md §9): the record model, loading it from
// an LDAP server, an LDIF file or a signed .ldif.p7m, an immutable in-memory snapshot swapped
// atomically on refresh, and the lookups every PEC decision needs (is a domain certified, who
// signed a busta, where the presa in carico goes).
//
// Lookups never touch the network: RFC 6109 §4.5 requires each provider to keep a local copy,
// refreshed daily, and use it for every lookup (pec-spec.md §9.2).
//
// Sources: an LDAP server (the o=postacert subtree, certificates read as
// providerCertificate;binary), a plain LDIF file (ParseLDIF, RFC 2849; "attr:< file:" values
// only inside the LDIF's own directory, see LDIFOptions), or a signed .ldif.p7m (CMS
// SignedData verified against index.trust_anchor before a byte is parsed; URL values refused).
// Malformed records are rejected one by one with a reason (Snapshot.Rejected); the others load.
// A failed refresh keeps the last good snapshot; index.cache keeps a local copy on disk for a
// restart while the source is down.
//
// The OpenLDAP schema of the index ships next to this file as pec-index.schema (also embedded
// as Schema). WriteLDIF output starts with "version: 1" as RFC 2849 wants: ldapadd accepts
// it, slapadd (OpenLDAP 2.5) does not, so strip that line before an offline slapadd.
package igpec

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Record is one entry of the index: a provider's main entry
// (providerName=<name>,o=postacert) or one of its secondary environments
// (providerUnit=<env>,providerName=<name>,o=postacert), RFC 6109 §4.5.
//
// Records handed out by lookups are shared by every caller and must not be modified.
type Record struct {
	DN           string
	Name         string              // providerName (RFC 6109 §4.5.3), as written
	Unit         string              // providerUnit (§4.5.7); empty on the main entry
	Certificates []*x509.Certificate // providerCertificate (§4.5.2), several during renewal
	// Hashes are the providerCertificateHash values (§4.5.1): upper-case hex SHA-1 of the DER
	// of each certificate, in the order of Certificates.
	Hashes          []string
	MailReceipt     string   // mailReceipt (§4.5.4): where presa in carico and rilevazione virus go
	Domains         []string // managedDomains (§4.5.5): lower case, no trailing dot, in the order given
	LDIFLocationURL string   // §4.5.6; empty on secondary environments
	Description     string

	domainSet map[string]struct{} // Domains, for Manages
}

// Manages reports whether domain is one of the record's managedDomains (RFC 6109 §7: the From
// domain of a busta should be managed by the provider that signed it; pec-spec.md §7.2 step 4).
// The comparison is case-insensitive and ignores a trailing dot.
//
// Records built by Build or NewRecord answer with one map lookup and no allocation; a Record
// written as a literal is scanned.
func (r *Record) Manages(domain string) bool {
	if r.domainSet == nil {
		d := strings.TrimSuffix(domain, ".")
		for _, m := range r.Domains {
			if strings.EqualFold(m, d) {
				return true
			}
		}
		return false
	}
	_, ok := lookupLower(r.domainSet, domain)
	return ok
}

// lookupLower looks domain up in a map keyed by lower-case domains, ignoring a trailing dot,
// without allocating: an already lower-case name is used as is, any other is lowered into a
// stack buffer (the compiler does not copy string(buf[:n]) in a map index).
func lookupLower[V any](m map[string]V, domain string) (V, bool) {
	d := strings.TrimSuffix(domain, ".")
	if !hasUpper(d) {
		v, ok := m[d]
		return v, ok
	}
	var zero V
	if len(d) > 253 {
		return zero, false
	}
	var buf [253]byte
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	v, ok := m[string(buf[:len(d)])]
	return v, ok
}

// HasCertificate reports whether der is byte for byte one of the record's certificates.
func (r *Record) HasCertificate(der []byte) bool {
	for _, c := range r.Certificates {
		if string(c.Raw) == string(der) {
			return true
		}
	}
	return false
}

// String names the record for logs: provider name and, for a secondary environment, its unit.
func (r *Record) String() string {
	if r.Unit != "" {
		return r.Name + " / " + r.Unit
	}
	return r.Name
}

// Rejected is a record left out of a snapshot, with the reason.
type Rejected struct {
	DN     string
	Line   int // LDIF line of the record's dn, 0 when it came from LDAP
	Reason string
}

func (r Rejected) String() string {
	if r.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", r.DN, r.Line, r.Reason)
	}
	return r.DN + ": " + r.Reason
}

// CertificateHash is the providerCertificateHash of a DER certificate: SHA-1, upper-case hex
// (RFC 6109 §4.5.1; pec-spec.md §9.3 step 2).
func CertificateHash(der []byte) string {
	h := sha1.Sum(der)
	return strings.ToUpper(hex.EncodeToString(h[:]))
}

// isProvider tells provider entries from the others in a directory dump (the o=postacert
// root, organisational entries): objectClass provider, or, for LDIF written without
// objectClass lines, a providerName attribute.
func isProvider(e *Entry) bool {
	for _, v := range e.Values("objectclass") {
		if strings.EqualFold(string(v), "provider") {
			return true
		}
	}
	return len(e.Values("providername")) > 0
}

// buildRecord validates one provider entry. The error text is the rejection reason.
func buildRecord(e *Entry) (*Record, error) {
	r := &Record{DN: e.DN}
	var err error
	if r.Name, err = single(e, "providername", "providerName", true); err != nil {
		return nil, err
	}
	if r.Unit, err = single(e, "providerunit", "providerUnit", false); err != nil {
		return nil, err
	}
	if err := checkDN(e.DN, r); err != nil {
		return nil, err
	}
	if r.MailReceipt, err = single(e, "mailreceipt", "mailReceipt", true); err != nil {
		return nil, err
	}
	if !validAddrSpec(r.MailReceipt) {
		return nil, fmt.Errorf("mailReceipt %s is not a dot-atom addr-spec", quote(r.MailReceipt))
	}
	if r.LDIFLocationURL, err = single(e, "ldiflocationurl", "LDIFLocationURL", false); err != nil {
		return nil, err
	}
	if r.Unit != "" {
		// RFC 6109 §4.5.6: absent on secondary environments. Not worth a rejection: the
		// value is simply not used.
		r.LDIFLocationURL = ""
	}
	if r.Description, err = single(e, "description", "description", false); err != nil {
		// description is multi-valued in core.schema; keep the first.
		r.Description = string(e.Values("description")[0])
	}
	if err := addDomains(e, r); err != nil {
		return nil, err
	}
	if err := addCertificates(e, r); err != nil {
		return nil, err
	}
	return r, nil
}

func single(e *Entry, name, display string, required bool) (string, error) {
	vs := e.Values(name)
	switch {
	case len(vs) == 0 && required:
		return "", fmt.Errorf("missing %s", display)
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", fmt.Errorf("%s has %d values, it is single-valued", display, len(vs))
	}
	v := strings.TrimSpace(string(vs[0]))
	if v == "" && required {
		return "", fmt.Errorf("empty %s", display)
	}
	return v, nil
}

// checkDN checks the DN against the attributes: a providerUnit=<env> RDN must name the
// entry's providerUnit (which it supplies when the attribute is absent), a providerName=<name>
// RDN must name its providerName. Other DN shapes are accepted: RFC 6109 §4.5 notes the DN
// namespace is not registered, and the DN is only the record's key here.
func checkDN(dn string, r *Record) error {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 {
		return fmt.Errorf("bad DN %s", quote(dn))
	}
	for i, rdn := range parsed.RDNs {
		if i > 1 {
			break
		}
		for _, a := range rdn.Attributes {
			switch strings.ToLower(a.Type) {
			case "providerunit":
				if i != 0 {
					return fmt.Errorf("providerUnit is not the first RDN of %s", quote(dn))
				}
				if r.Unit == "" {
					r.Unit = a.Value
				} else if !strings.EqualFold(r.Unit, a.Value) {
					return fmt.Errorf("DN names providerUnit %s but the entry says %s", quote(a.Value), quote(r.Unit))
				}
			case "providername":
				// RFC 6109 §4.5.3: caseIgnoreMatch.
				if !strings.EqualFold(strings.Join(strings.Fields(a.Value), " "), strings.Join(strings.Fields(r.Name), " ")) {
					return fmt.Errorf("DN names provider %s but providerName is %s", quote(a.Value), quote(r.Name))
				}
			}
		}
	}
	return nil
}

func addDomains(e *Entry, r *Record) error {
	vs := e.Values("manageddomains")
	r.domainSet = make(map[string]struct{}, len(vs))
	for _, v := range vs {
		d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(string(v)), "."))
		if !validDomain(d) {
			return fmt.Errorf("managedDomains value %s is not a domain name", quote(string(v)))
		}
		if _, dup := r.domainSet[d]; !dup {
			r.domainSet[d] = struct{}{}
			r.Domains = append(r.Domains, d)
		}
	}
	if len(r.Domains) == 0 {
		return fmt.Errorf("no managedDomains")
	}
	return nil
}

// addCertificates parses every providerCertificate (with or without the ;binary option) and
// checks that the providerCertificateHash values are exactly the SHA-1 of those certificates.
func addCertificates(e *Entry, r *Record) error {
	ders := e.Values("providercertificate")
	if len(ders) == 0 {
		return fmt.Errorf("missing providerCertificate")
	}
	want := map[string]bool{}
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("providerCertificate #%d is not a DER X.509 certificate: %v", i+1, err)
		}
		h := CertificateHash(c.Raw)
		if want[h] {
			continue
		}
		want[h] = true
		r.Certificates = append(r.Certificates, c)
		r.Hashes = append(r.Hashes, h)
	}
	hashes := e.Values("providercertificatehash")
	if len(hashes) == 0 {
		return fmt.Errorf("missing providerCertificateHash")
	}
	got := map[string]bool{}
	for _, v := range hashes {
		// RFC 6109 §4.5.1: caseIgnoreIA5Match; the RFC's own example mixes cases.
		h := strings.ToUpper(strings.TrimSpace(string(v)))
		if !want[h] {
			return fmt.Errorf("providerCertificateHash %s matches none of the record's certificates", quote(h))
		}
		got[h] = true
	}
	for _, h := range r.Hashes {
		if !got[h] {
			return fmt.Errorf("certificate with SHA-1 %s has no providerCertificateHash", h)
		}
	}
	return nil
}

// validDomain accepts a lower-case host name of LDH labels (A-labels for IDNs), 1 to 253
// octets, each label 1 to 63 octets not starting or ending with '-'.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for len(d) > 0 {
		label := d
		if i := strings.IndexByte(d, '.'); i >= 0 {
			label, d = d[:i], d[i+1:]
			if d == "" {
				return false // trailing empty label
			}
		} else {
			d = ""
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validAddrSpec accepts local@domain with a dot-atom local part and an LDH domain: RFC 6109
// §4.5.4 requires mailReceipt in dot-atom form, without angle brackets or CFWS.
func validAddrSpec(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || len(s) > 254 {
		return false
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > 64 || !strings.Contains(domain, ".") || !validDomain(strings.ToLower(domain)) {
		return false
	}
	for _, atom := range strings.Split(local, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return false
			}
		}
	}
	return true
}

// isAtext is RFC 5322 atext.
func isAtext(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// ProviderDN is the DN of a provider's main entry, providerName=<name>,o=postacert, or with
// unit set, of a secondary environment, providerUnit=<unit>,providerName=<name>,o=postacert
// (RFC 6109 §4.5; the RFC's "providerUnits=" is a misprint, pec-spec.md §9.1). Values are
// escaped as RFC 4514 requires.
func ProviderDN(name, unit string) string {
	dn := "providerName=" + ldap.EscapeDN(name) + "," + DefaultBaseDN
	if unit != "" {
		dn = "providerUnit=" + ldap.EscapeDN(unit) + "," + dn
	}
	return dn
}

// NewRecord builds and validates a record the way a loaded one is validated: the provider's
// own record for export, or a record for a test index (NewSnapshot). Domains are normalised
// to lower case; the hashes are computed from certs. unit is empty for a main entry.
func NewRecord(name, unit, mailReceipt string, certs []*x509.Certificate, domains ...string) (*Record, error) {
	e := Entry{DN: ProviderDN(name, unit)}
	add := func(n, v string) { e.Attrs = append(e.Attrs, Attr{Name: n, Value: []byte(v)}) }
	add("objectclass", "provider")
	add("providername", name)
	if unit != "" {
		add("providerunit", unit)
	}
	add("mailreceipt", mailReceipt)
	for _, d := range domains {
		add("manageddomains", d)
	}
	for _, c := range certs {
		e.Attrs = append(e.Attrs, Attr{Name: "providercertificate", Options: []string{"binary"}, Value: c.Raw})
		add("providercertificatehash", CertificateHash(c.Raw))
	}
	return buildRecord(&e)
}
