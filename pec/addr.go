package pec

import (
	"strings"

	"golang.org/x/net/idna"
)

// CanonAddr is the one comparison form of a mailbox, shared by the formal checks, daticert's
// recipient list and tracking (issue 12 item 6): the local part as written (RFC 5321 §2.4:
// only the receiving system may fold its case), the domain in lower case and in A-label form
// (RFC 5890: an IDN written in Unicode and its xn-- form are one domain). An address whose
// domain is not a valid IDN keeps its domain in lower case.
func CanonAddr(addr string) string {
	addr = strings.TrimSpace(addr)
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i+1] + CanonDomain(addr[i+1:])
}

// CanonDomain is a domain in lower case and A-label form.
func CanonDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if a, err := idna.Lookup.ToASCII(d); err == nil {
		return a
	}
	return d
}

// domainOf is the canonical domain of an address ("" without one).
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return CanonDomain(addr[i+1:])
}
