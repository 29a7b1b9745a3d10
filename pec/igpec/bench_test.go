package igpec

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The benchmark index: 100 providers, 1,000 domains each (100,000 domains).
const benchProviders, benchDomainsPer = 100, 1000

func benchSnapshot(b *testing.B) (*Snapshot, []byte, []string) {
	b.Helper()
	ldif, domains := bigIndex(b, benchProviders, benchDomainsPer)
	s := Build(mustParse(b, ldif), "bench", time.Now())
	if len(s.Records) != benchProviders || s.Domains() != benchProviders*benchDomainsPer {
		b.Fatalf("records %d domains %d", len(s.Records), s.Domains())
	}
	return s, ldif, domains
}

func BenchmarkLookup(b *testing.B) {
	s, _, domains := benchSnapshot(b)
	mixed := make([]string, len(domains))
	for i, d := range domains {
		mixed[i] = strings.ToUpper(d[:1]) + d[1:] + "."
	}
	der := s.Records[benchProviders/2].Certificates[0].Raw
	b.Run("domain-lower", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !s.Certified(domains[i%len(domains)]) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("domain-mixed-case-dot", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !s.Certified(mixed[i%len(mixed)]) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("domain-unknown", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if s.Certified("Posta.Esterna.Example") {
				b.Fatal("hit")
			}
		}
	})
	b.Run("manages-mixed-case", func(b *testing.B) {
		r := s.Records[benchProviders/2]
		d := strings.ToUpper(r.Domains[benchDomainsPer-1])
		b.ReportAllocs()
		for b.Loop() {
			if !r.Manages(d) {
				b.Fatal("miss")
			}
		}
	})
	b.Run("signer-cert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.Signer(der, ""); !ok {
				b.Fatal("miss")
			}
		}
	})
}

// BenchmarkRefresh is one refresh from LDIF: parse plus build of the snapshot.
func BenchmarkRefresh(b *testing.B) {
	_, ldif, _ := benchSnapshot(b)
	b.SetBytes(int64(len(ldif)))
	b.ReportAllocs()
	for b.Loop() {
		entries, err := ParseLDIF(bytes.NewReader(ldif), LDIFOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if s := Build(entries, "bench", time.Now()); len(s.Records) != benchProviders {
			b.Fatal(len(s.Records))
		}
	}
}
