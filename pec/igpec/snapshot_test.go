package igpec

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLookups(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "Provider A S.p.A.", "pec-a.test", "cert.pec-a.test")
	b := f.record(t, "Provider B S.p.A.", "pec-b.test")
	// A secondary environment of B sharing B's certificate (RFC 6109 §4.5.7).
	bu := f.record(t, "Provider B S.p.A.", "coll.pec-b.test")
	bu.DN = "providerUnit=collaudo,providerName=Provider B S.p.A.,o=postacert"
	bu.Unit = "collaudo"
	bu.Certificates, bu.Hashes = b.Certificates, b.Hashes
	bu.MailReceipt = "ricevute@coll.pec-b.test"
	s := Build(mustParse(t, ldifOf(t, a, b, bu)), "test", time.Now())
	if len(s.Records) != 3 || len(s.Rejected) != 0 {
		t.Fatalf("records %d rejected %v", len(s.Records), s.Rejected)
	}

	for _, d := range []string{"pec-a.test", "PEC-A.TEST", "Pec-A.Test.", "cert.pec-a.test", "pec-b.test.", "COLL.pec-b.test"} {
		if !s.Certified(d) {
			t.Errorf("Certified(%q) = false", d)
		}
	}
	for _, d := range []string{"", ".", "posta.test", "a.pec-a.test", "test", "pec-a.test..", "pec-a.testx", strings.Repeat("a", 300)} {
		if s.Certified(d) {
			t.Errorf("Certified(%q) = true", d)
		}
	}
	if r, ok := s.DomainRecord("Coll.PEC-B.test."); !ok || r.Unit != "collaudo" || r.MailReceipt != "ricevute@coll.pec-b.test" {
		t.Errorf("DomainRecord(coll) = %v, %v", r, ok)
	}

	ca := a.Certificates[0]
	if r, ok := s.Signer(ca.Raw, ""); !ok || r.Name != "Provider A S.p.A." || r.MailReceipt != "ricevute@pec-a.test" {
		t.Errorf("Signer(A) = %v, %v", r, ok)
	}
	if !a.Manages("CERT.PEC-A.TEST.") || a.Manages("pec-b.test") {
		t.Error("Manages")
	}
	// The shared certificate: the record managing the From domain wins, else the first.
	cb := b.Certificates[0].Raw
	if r, _ := s.Signer(cb, "coll.pec-b.test"); r == nil || r.Unit != "collaudo" {
		t.Errorf("Signer(B, coll) = %v", r)
	}
	if r, _ := s.Signer(cb, "PEC-B.test"); r == nil || r.Unit != "" {
		t.Errorf("Signer(B, pec-b) = %v", r)
	}
	if r, _ := s.Signer(cb, "elsewhere.test"); r == nil || r.Unit != "" {
		t.Errorf("Signer(B, elsewhere) = %v, want the first record", r)
	}
	// A certificate not in the index, from the same CA with the same key and name.
	other := f.cert(t, "Provider A S.p.A.", "pec-a.test")
	if r, ok := s.Signer(other.Raw, ""); ok {
		t.Errorf("Signer(unknown cert) = %v", r)
	}
	// Hash lookups are case-insensitive; a hash alone is not a signer match.
	h := a.Hashes[0]
	for _, q := range []string{h, strings.ToLower(h)} {
		if rs := s.ByHash(q); len(rs) != 1 || rs[0].Name != a.Name {
			t.Errorf("ByHash(%s) = %v", q, rs)
		}
	}
	if rs := s.ByHash("00"); rs != nil {
		t.Errorf("ByHash(short) = %v", rs)
	}
	if rs := s.ByHash(b.Hashes[0]); len(rs) != 2 {
		t.Errorf("ByHash(B) = %v, want main and unit", rs)
	}
}

func TestDomainLookupAllocs(t *testing.T) {
	ldif, domains := bigIndex(t, 3, 10)
	s := Build(mustParse(t, ldif), "test", time.Now())
	for _, d := range []string{domains[5], strings.ToUpper(domains[5]), domains[7] + ".", "unknown.example", "UNKNOWN.example."} {
		if n := testing.AllocsPerRun(100, func() { s.Certified(d) }); n != 0 {
			t.Errorf("Certified(%q): %v allocs, want 0", d, n)
		}
	}
	r := s.Records[0]
	for _, d := range []string{domains[5], strings.ToUpper(domains[5]) + ".", "pec-1.example", domains[15]} {
		want := d != "pec-1.example" && d != domains[15] // domains[15] belongs to the second record
		if r.Manages(d) != want {
			t.Errorf("Manages(%q) = %v, want %v", d, !want, want)
		}
		if n := testing.AllocsPerRun(100, func() { r.Manages(d) }); n != 0 {
			t.Errorf("Manages(%q): %v allocs, want 0", d, n)
		}
	}
	der := s.Records[1].Certificates[0].Raw
	if n := testing.AllocsPerRun(100, func() { s.Signer(der, "") }); n != 0 {
		t.Errorf("Signer: %v allocs, want 0", n)
	}
}

// entryLDIF renders a hand-made record, for malformed ones WriteLDIF would not produce.
func entryLDIF(dn string, lines ...string) string {
	return "dn: " + dn + "\nobjectClass: provider\n" + strings.Join(lines, "\n") + "\n\n"
}

func TestBuildRejects(t *testing.T) {
	f := newFixture(t)
	good := f.record(t, "Good S.p.A.", "good.test")
	c := f.cert(t, "X", "x.test")
	c2 := f.cert(t, "X", "x.test")
	cert := "providerCertificate;binary:: " + base64.StdEncoding.EncodeToString(c.Raw)
	hash := "providerCertificateHash: " + strings.ToLower(CertificateHash(c.Raw)) // lower case is fine
	name := func(n string) string { return "providerName: " + n }
	rcpt := "mailReceipt: ricevute@x.test"
	dom := "managedDomains: x.test"
	dn := func(n string) string { return "providerName=" + n + ",o=postacert" }

	bad := []struct{ name, ldif, reason string }{
		{"BadDER", entryLDIF(dn("BadDER"), name("BadDER"), "providerCertificate;binary:: AAECAw==", hash, rcpt, dom), "not a DER X.509 certificate"},
		{"HashMismatch", entryLDIF(dn("HashMismatch"), name("HashMismatch"), cert, "providerCertificateHash: "+CertificateHash(c2.Raw), rcpt, dom), "matches none"},
		{"NoHash", entryLDIF(dn("NoHash"), name("NoHash"), cert, rcpt, dom), "missing providerCertificateHash"},
		{"HashMissingForCert", entryLDIF(dn("HashMissingForCert"), name("HashMissingForCert"), cert, "providerCertificate;binary:: "+base64.StdEncoding.EncodeToString(c2.Raw), hash, rcpt, dom), "has no providerCertificateHash"},
		{"NoCert", entryLDIF(dn("NoCert"), name("NoCert"), hash, rcpt, dom), "missing providerCertificate"},
		{"NoDomains", entryLDIF(dn("NoDomains"), name("NoDomains"), cert, hash, rcpt), "no managedDomains"},
		{"EmptyDomain", entryLDIF(dn("EmptyDomain"), name("EmptyDomain"), cert, hash, rcpt, "managedDomains: "), "not a domain name"},
		{"BadDomain", entryLDIF(dn("BadDomain"), name("BadDomain"), cert, hash, rcpt, "managedDomains: a..b"), "not a domain name"},
		{"NoReceipt", entryLDIF(dn("NoReceipt"), name("NoReceipt"), cert, hash, dom), "missing mailReceipt"},
		{"BadReceipt", entryLDIF(dn("BadReceipt"), name("BadReceipt"), cert, hash, "mailReceipt: <ricevute@x.test>", dom), "not a dot-atom"},
		{"BadReceipt2", entryLDIF(dn("BadReceipt2"), name("BadReceipt2"), cert, hash, "mailReceipt: ricevute", dom), "not a dot-atom"},
		{"TwoReceipts", entryLDIF(dn("TwoReceipts"), name("TwoReceipts"), cert, hash, rcpt, "mailReceipt: other@x.test", dom), "single-valued"},
		{"NoName", entryLDIF(dn("NoName"), cert, hash, rcpt, dom), "missing providerName"},
		{"EmptyName", entryLDIF(dn("EmptyName"), "providerName:  ", cert, hash, rcpt, dom), "empty providerName"},
		{"DNMismatch", entryLDIF(dn("Other"), name("DNMismatch"), cert, hash, rcpt, dom), "DN names provider"},
		{"UnitMismatch", entryLDIF("providerUnit=u1,"+dn("UnitMismatch"), name("UnitMismatch"), "providerUnit: u2", cert, hash, rcpt, dom), "providerUnit"},
		{"Duplicate", string(ldifOf(t, good))[len("version: 1\n"):] + "\n", "duplicate DN"},
	}
	in := string(ldifOf(t, good)) + "\n"
	for _, b := range bad {
		in += b.ldif
	}
	// A unit whose providerUnit comes from the DN alone, and lower-case hashes: accepted.
	in += entryLDIF("providerUnit=test,"+dn("X"), name("X"), cert, hash, rcpt, "managedDomains: test.x.test.")
	s := Build(mustParse(t, []byte(in)), "test", time.Now())

	if len(s.Records) != 2 {
		t.Fatalf("accepted %d records, want 2: %v; rejected %v", len(s.Records), s.Records, s.Rejected)
	}
	if r := s.Records[1]; r.Unit != "test" || !s.Certified("TEST.x.test") {
		t.Errorf("unit record: %+v", r)
	}
	if len(s.Rejected) != len(bad) {
		t.Errorf("rejected %d, want %d", len(s.Rejected), len(bad))
	}
	for i, b := range bad {
		if i >= len(s.Rejected) {
			break
		}
		r := s.Rejected[i]
		if !strings.Contains(r.Reason, b.reason) || r.Line == 0 {
			t.Errorf("%s: rejected %v, want reason containing %q", b.name, r, b.reason)
		}
	}
	if !s.Certified("good.test") {
		t.Error("the good record was dropped")
	}
}

func TestBuildDomainConflict(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test", "shared.test")
	b := f.record(t, "B", "b.test", "shared.test")
	s := Build(mustParse(t, ldifOf(t, a, b)), "test", time.Now())
	if len(s.Records) != 2 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "shared.test") {
		t.Fatalf("records %d warnings %v", len(s.Records), s.Warnings)
	}
	if r, _ := s.DomainRecord("shared.test"); r.Name != "A" {
		t.Errorf("shared.test -> %v, want the first record", r)
	}
	if !b.Manages("shared.test") {
		t.Error("B still manages shared.test for the consistency check")
	}
}

func TestCompare(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test")
	b := f.record(t, "B", "b.test")
	c := f.record(t, "C", "c.test")
	b2 := *b
	b2.Domains = []string{"b.test", "b2.test"}
	old := NewSnapshot("x", time.Now(), a, b)
	cur := NewSnapshot("x", time.Now(), &b2, c)
	ch := Compare(old, cur)
	want := Changes{
		Added: []string{c.DN}, Removed: []string{a.DN}, Changed: []string{b.DN},
		DomainsAdded: []string{"b2.test", "c.test"}, DomainsRemoved: []string{"a.test"},
	}
	if fmt.Sprint(ch) != fmt.Sprint(want) {
		t.Errorf("Compare = %+v\nwant %+v", ch, want)
	}
	if !Compare(cur, cur).Empty() {
		t.Error("Compare(x, x) not empty")
	}
	if ch := Compare(nil, cur); !slices.Equal(ch.DomainsAdded, []string{"b.test", "b2.test", "c.test"}) {
		t.Errorf("Compare(nil) = %+v", ch)
	}
}
