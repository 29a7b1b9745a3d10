package igpec

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestNewRecord(t *testing.T) {
	f := newFixture(t)
	c1, c2 := f.cert(t, "Acme, S.p.A.", "acme.test"), f.cert(t, "Acme, S.p.A.", "acme.test")
	r, err := NewRecord("Acme, S.p.A.", "", "ricevute@acme.test", []*x509.Certificate{c1, c2, c1}, "PEC.Acme.test.", "pec.acme.test")
	if err != nil {
		t.Fatal(err)
	}
	if r.DN != `providerName=Acme\, S.p.A.,o=postacert` || len(r.Certificates) != 2 || len(r.Domains) != 1 || r.Domains[0] != "pec.acme.test" {
		t.Errorf("record %+v", r)
	}
	s := NewSnapshot("test", time.Now(), r)
	if got, ok := s.Signer(c2.Raw, "pec.acme.test"); !ok || got != r {
		t.Error("second certificate (renewal overlap) not found")
	}
	u, err := NewRecord("Acme, S.p.A.", "collaudo", "ricevute@coll.acme.test", []*x509.Certificate{c1}, "coll.acme.test")
	if err != nil || u.Unit != "collaudo" || !strings.HasPrefix(u.DN, "providerUnit=collaudo,providerName=") {
		t.Errorf("unit record %+v, %v", u, err)
	}
	for _, bad := range [][]string{{"Acme", "", "<ricevute@acme.test>", "acme.test"}, {"", "", "r@acme.test", "acme.test"}, {"Acme", "", "r@acme.test", "bad_domain.test"}} {
		if _, err := NewRecord(bad[0], bad[1], bad[2], []*x509.Certificate{c1}, bad[3]); err == nil {
			t.Errorf("NewRecord%v accepted", bad)
		}
	}
	if _, err := NewRecord("Acme", "", "r@acme.test", nil, "acme.test"); err == nil {
		t.Error("NewRecord without certificates accepted")
	}
}
