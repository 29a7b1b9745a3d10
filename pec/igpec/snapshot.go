package igpec

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Snapshot is an immutable copy of the index, built once from one load of a source. All its
// lookups are map reads: no I/O, no locks, safe from any number of goroutines.
type Snapshot struct {
	Source   string    // where it came from (a URL or path, never a password)
	Loaded   time.Time // when the data was fetched from the source
	Records  []*Record // accepted records, in source order
	Rejected []Rejected
	Warnings []string // accepted but suspicious: a domain claimed by two records

	byDomain map[string]*Record   // lower-case domain -> first record claiming it
	byHash   map[string][]*Record // upper-case hex SHA-1 -> records listing it
}

// Build validates entries and indexes the good ones. Entries that are not provider records
// (the o=postacert root, organisational entries) are skipped silently; malformed provider
// records are listed in Rejected with the reason, one by one, and the others still load.
func Build(entries []Entry, source string, loaded time.Time) *Snapshot {
	s := &Snapshot{Source: source, Loaded: loaded, byHash: map[string][]*Record{}}
	seenDN := map[string]bool{}
	var recs []*Record
	domains := 0
	for i := range entries {
		e := &entries[i]
		if !isProvider(e) {
			continue
		}
		key := strings.ToLower(e.DN)
		if seenDN[key] {
			s.Rejected = append(s.Rejected, Rejected{DN: e.DN, Line: e.Line, Reason: "duplicate DN"})
			continue
		}
		r, err := buildRecord(e)
		if err != nil {
			s.Rejected = append(s.Rejected, Rejected{DN: e.DN, Line: e.Line, Reason: err.Error()})
			continue
		}
		seenDN[key] = true
		recs = append(recs, r)
		domains += len(r.Domains)
	}
	s.byDomain = make(map[string]*Record, domains)
	for _, r := range recs {
		s.add(r)
	}
	return s
}

// NewSnapshot indexes records that are already valid (built by Build or by hand in tests),
// without validating them again.
func NewSnapshot(source string, loaded time.Time, records ...*Record) *Snapshot {
	s := &Snapshot{Source: source, Loaded: loaded, byDomain: map[string]*Record{}, byHash: map[string][]*Record{}}
	for _, r := range records {
		s.add(r)
	}
	return s
}

func (s *Snapshot) add(r *Record) {
	s.Records = append(s.Records, r)
	for _, d := range r.Domains {
		if other, dup := s.byDomain[d]; dup {
			s.Warnings = append(s.Warnings, fmt.Sprintf("domain %s is claimed by %s and %s; lookups answer with the first", d, other.DN, r.DN))
			continue
		}
		s.byDomain[d] = r
	}
	for _, h := range r.Hashes {
		s.byHash[h] = append(s.byHash[h], r)
	}
}

// Domains is the number of distinct managed domains.
func (s *Snapshot) Domains() int { return len(s.byDomain) }

// Certified reports whether domain is a managedDomain of any record: the recipient is
// "certificato" rather than "esterno" (pec-spec.md §9.3 step 1). The match is exact (no
// parent-domain matching: §9.3 INFERENCE), case-insensitive, and ignores a trailing dot.
func (s *Snapshot) Certified(domain string) bool {
	return s.domainRecord(domain) != nil
}

// DomainRecord returns the record that manages domain (same matching as Certified).
func (s *Snapshot) DomainRecord(domain string) (*Record, bool) {
	r := s.domainRecord(domain)
	return r, r != nil
}

// domainRecord does not allocate (see lookupLower).
func (s *Snapshot) domainRecord(domain string) *Record {
	r, _ := lookupLower(s.byDomain, domain)
	return r
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// ByHash returns the records listing the providerCertificateHash h (hex SHA-1, any case:
// RFC 6109 §4.5.1 caseIgnoreIA5Match). Hash matches alone prove nothing; use Signer to
// identify who signed a message.
func (s *Snapshot) ByHash(h string) []*Record {
	if len(h) != 2*sha1.Size {
		return nil
	}
	var buf [2 * sha1.Size]byte
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		buf[i] = c
	}
	return s.byHash[string(buf[:])]
}

// Signer returns the record that owns the signer certificate der (pec-spec.md §7.2 step 2,
// §9.3 step 2): SHA-1 of the DER looked up in providerCertificateHash, then the certificate
// compared byte for byte with that record's providerCertificate values. When several records
// list the certificate (a main entry and a secondary environment sharing it), the one that
// manages fromDomain wins (§9.3 step 3), else the first; fromDomain may be empty.
func (s *Snapshot) Signer(der []byte, fromDomain string) (*Record, bool) {
	sum := sha1.Sum(der)
	var buf [2 * sha1.Size]byte
	hex.Encode(buf[:], sum[:])
	for i, c := range buf {
		if c >= 'a' && c <= 'f' {
			buf[i] = c - ('a' - 'A')
		}
	}
	var first *Record
	for _, r := range s.byHash[string(buf[:])] {
		if !r.HasCertificate(der) {
			continue
		}
		if fromDomain == "" || r.Manages(fromDomain) {
			return r, true
		}
		if first == nil {
			first = r
		}
	}
	return first, first != nil
}

// Changes is what differs between two snapshots, by record DN and by domain.
type Changes struct {
	Added, Removed, Changed      []string // record DNs
	DomainsAdded, DomainsRemoved []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added)+len(c.Removed)+len(c.Changed)+len(c.DomainsAdded)+len(c.DomainsRemoved) == 0
}

// Compare lists what changed from old to new; a nil old counts as empty.
func Compare(old, new *Snapshot) Changes {
	var c Changes
	oldRecs, newRecs := map[string]*Record{}, map[string]*Record{}
	oldDoms, newDoms := map[string]bool{}, map[string]bool{}
	if old != nil {
		for _, r := range old.Records {
			oldRecs[strings.ToLower(r.DN)] = r
		}
		for d := range old.byDomain {
			oldDoms[d] = true
		}
	}
	for _, r := range new.Records {
		k := strings.ToLower(r.DN)
		newRecs[k] = r
		o, ok := oldRecs[k]
		switch {
		case !ok:
			c.Added = append(c.Added, r.DN)
		case !sameRecord(o, r):
			c.Changed = append(c.Changed, r.DN)
		}
	}
	for k, r := range oldRecs {
		if _, ok := newRecs[k]; !ok {
			c.Removed = append(c.Removed, r.DN)
		}
	}
	for d := range new.byDomain {
		newDoms[d] = true
		if !oldDoms[d] {
			c.DomainsAdded = append(c.DomainsAdded, d)
		}
	}
	for d := range oldDoms {
		if !newDoms[d] {
			c.DomainsRemoved = append(c.DomainsRemoved, d)
		}
	}
	slices.Sort(c.Removed)
	slices.Sort(c.DomainsAdded)
	slices.Sort(c.DomainsRemoved)
	return c
}

func sameRecord(a, b *Record) bool {
	return a.DN == b.DN && a.Name == b.Name && a.Unit == b.Unit && a.MailReceipt == b.MailReceipt &&
		a.LDIFLocationURL == b.LDIFLocationURL && a.Description == b.Description &&
		slices.Equal(a.Hashes, b.Hashes) && slices.Equal(a.Domains, b.Domains)
}
