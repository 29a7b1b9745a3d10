package igpec

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParseLDIF feeds arbitrary bytes to the LDIF parser and the record builder: the index is
// downloaded from outside, so neither may panic, hang or accept something that does not
// survive a write and re-parse.
func FuzzParseLDIF(f *testing.F) {
	fx := newFixture(f)
	f.Add(ldifOf(f, fx.record(f, "Seed S.p.A.", "seed.test", "Cert.Seed.Test.")))
	f.Add([]byte("version: 1\n# c\n  folded comment\ndn:: bz14\nchangetype: add\ncn;lang-it: a\n b\n\n\ndn: o=y\r\n"))
	f.Add([]byte("dn: providerUnit=u,providerName=P,o=postacert\nobjectClass: provider\nproviderName: P\nmailReceipt: a@b.c\nmanagedDomains: b.c\n"))
	f.Add([]byte("dn: o=x\ncn:< file:a\n"))
	f.Add([]byte(" \n#\n\ndn:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseLDIF(bytes.NewReader(data), LDIFOptions{})
		if err != nil {
			if _, ok := err.(*LDIFError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		s := Build(entries, "fuzz", time.Time{})
		for _, r := range s.Records {
			for _, d := range r.Domains {
				if !s.Certified(d) {
					t.Fatalf("accepted domain %q not certified", d)
				}
			}
			if got, ok := s.Signer(r.Certificates[0].Raw, ""); !ok || !got.HasCertificate(r.Certificates[0].Raw) {
				t.Fatalf("accepted record %q not found by its certificate", r.DN)
			}
		}
		// What was accepted must round-trip through the writer (the cache and pecctl dump).
		var out bytes.Buffer
		if err := WriteLDIF(&out, s.Records); err != nil {
			t.Fatal(err)
		}
		again, err := ParseLDIF(&out, LDIFOptions{})
		if err != nil {
			t.Fatalf("re-parse of written LDIF: %v\n%s", err, out.Bytes())
		}
		s2 := Build(again, "fuzz", time.Time{})
		if len(s2.Records) != len(s.Records) || len(s2.Rejected) != 0 {
			t.Fatalf("round trip: %d records -> %d, rejected %v", len(s.Records), len(s2.Records), s2.Rejected)
		}
		for i := range s.Records {
			if !sameRecord(s.Records[i], s2.Records[i]) {
				t.Fatalf("round trip changed record %d: %+v -> %+v", i, *s.Records[i], *s2.Records[i])
			}
		}
	})
}
