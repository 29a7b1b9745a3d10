package igpec

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// fixture issues provider certificates from one throw-away CA.
type fixture struct {
	ca  *hsmtest.CA
	key *ecdsa.PrivateKey
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &fixture{ca: hsmtest.NewCA(tb), key: key}
}

func (f *fixture) cert(tb testing.TB, name, domain string) *x509.Certificate {
	tb.Helper()
	now := time.Now()
	return f.ca.ProviderCert(tb, name, "posta-certificata@"+domain, &f.key.PublicKey, now.AddDate(0, 0, -1), now.AddDate(1, 0, 0))
}

// record makes a valid record for provider name with the given domains.
func (f *fixture) record(tb testing.TB, name string, domains ...string) *Record {
	tb.Helper()
	c := f.cert(tb, name, domains[0])
	return &Record{
		DN:           "providerName=" + name + ",o=postacert",
		Name:         name,
		Certificates: []*x509.Certificate{c},
		Hashes:       []string{CertificateHash(c.Raw)},
		MailReceipt:  "ricevute@" + domains[0],
		Domains:      domains,
	}
}

func ldifOf(tb testing.TB, recs ...*Record) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := WriteLDIF(&b, recs); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func mustParse(tb testing.TB, ldif []byte) []Entry {
	tb.Helper()
	es, err := ParseLDIF(bytes.NewReader(ldif), LDIFOptions{})
	if err != nil {
		tb.Fatalf("ParseLDIF: %v\n%s", err, ldif)
	}
	return es
}

// fakeSource is a Source whose answer the test changes between refreshes.
type fakeSource struct {
	mu      sync.Mutex
	entries []Entry
	err     error
	loads   int
}

func (s *fakeSource) String() string { return "fake://index" }

func (s *fakeSource) Load(ctx context.Context) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	if s.err != nil {
		return nil, s.err
	}
	return s.entries, nil
}

func (s *fakeSource) set(entries []Entry, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries, s.err = entries, err
}

// bigIndex builds an LDIF of providers records with domainsPer domains each.
func bigIndex(tb testing.TB, providers, domainsPer int) ([]byte, []string) {
	tb.Helper()
	f := newFixture(tb)
	var recs []*Record
	var all []string
	for p := 0; p < providers; p++ {
		var ds []string
		for d := 0; d < domainsPer; d++ {
			ds = append(ds, fmt.Sprintf("d%d.pec-%d.example", d, p))
		}
		all = append(all, ds...)
		recs = append(recs, f.record(tb, fmt.Sprintf("Provider %d S.p.A.", p), ds...))
	}
	return ldifOf(tb, recs...), all
}
