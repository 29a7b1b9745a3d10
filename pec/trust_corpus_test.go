package pec_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// The real CA certificates pec/smime keeps for its corpus tests (see its testdata/README.md).
var trRealAnchors = []string{"agid-ca1-2018.pem", "agid-ca1-2021.pem", "digitpa-ca1.pem"}

// trRealDomains are the managed domains of the two real providers, as their messages show
// them (the From of system messages and the certified senders).
var trRealDomains = map[string][]string{
	"aruba": {"pec.aruba.it", "pec.it"},
	"sogei": {"pcert.sogei.it", "pec.fatturapa.it"},
}

type trReal struct {
	name string
	raw  []byte
	c    *pec.Classified
}

func trRealCorpus(t *testing.T) (msgs []trReal, anchors []*x509.Certificate, records map[string]*igpec.Record) {
	t.Helper()
	for _, f := range trRealAnchors {
		certs, err := hsm.ReadChain(filepath.Join("smime", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		anchors = append(anchors, certs...)
	}
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	certs := map[string][]*x509.Certificate{}
	for _, f := range files {
		if strings.Contains(f, "edited") {
			continue // signature broken upstream
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := pec.Classify(raw, pec.ClassifyOptions{})
		if c.Signer == nil {
			t.Fatalf("%s: %v", f, c.SigErr)
		}
		p := strings.Fields(strings.ToLower(filepath.Base(f)))[0][:5]
		certs[p] = append(certs[p], c.Signer)
		msgs = append(msgs, trReal{filepath.Base(f), raw, c})
	}
	if len(msgs) != 11 {
		t.Fatalf("%d corpus messages", len(msgs))
	}
	records = map[string]*igpec.Record{}
	for p, cs := range certs {
		name := map[string]string{"aruba": "Aruba PEC S.p.A.", "sogei": "Sogei S.p.A."}[p]
		rec, err := igpec.NewRecord(name, "", "ricevute@"+trRealDomains[p][0], cs, trRealDomains[p]...)
		if err != nil {
			t.Fatal(err)
		}
		records[p] = rec
	}
	return msgs, anchors, records
}

// Every intact real message passes the trust check at its signing time, with its own signer
// certificates in the index and the real CA as anchor; without its provider's entry, or with
// the entry holding only another of its certificates, it fails.
func TestTrustRealCorpus(t *testing.T) {
	msgs, anchors, records := trRealCorpus(t)
	full := igpec.NewSnapshot("corpus", msgs[0].c.SignedAt(), records["aruba"], records["sogei"])
	tr, err := pec.NewTrust(pec.TrustConfig{Anchors: anchors}, pec.TrustDeps{Index: full})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		r, err := tr.Check(context.Background(), m.raw, m.c)
		if err != nil || !r.Trusted || len(r.Chain) < 2 {
			t.Errorf("%s: err %v trusted %v chain %d: %+v", m.name, err, r.Trusted, len(r.Chain), r.Findings)
			continue
		}
		p := m.name[:5]
		if r.Provider != records[p] {
			t.Errorf("%s: provider %v", m.name, r.Provider)
		}
		codes := trCodes(r)
		if old := strings.HasPrefix(m.name, "aruba-2014"); old != (codes["chain-sha1"] == pec.Warning) ||
			old != (codes["cert-basic-constraints"] == pec.Warning) {
			t.Errorf("%s: findings %+v", m.name, r.Findings)
		}
		if len(r.Skipped) != 1 || !strings.HasPrefix(r.Skipped[0], "revocation") {
			t.Errorf("%s: skipped %q", m.name, r.Skipped)
		}
	}

	// Without the provider's entry.
	for _, m := range msgs {
		other := records["sogei"]
		if m.name[:5] == "sogei" {
			other = records["aruba"]
		}
		tr, _ := pec.NewTrust(pec.TrustConfig{Anchors: anchors}, pec.TrustDeps{Index: igpec.NewSnapshot("corpus", m.c.SignedAt(), other)})
		r, err := tr.Check(context.Background(), m.raw, m.c)
		if err != nil || r.Trusted || trCodes(r)["signer-unlisted"] != pec.Error || r.Provider != nil {
			t.Errorf("%s without its entry: %v %+v", m.name, err, r.Findings)
		}
	}

	// Aruba's entry listing only the 2021 certificate: the 2014 messages are unlisted.
	var cur *x509.Certificate
	for _, m := range msgs {
		if strings.HasPrefix(m.name, "aruba-2021") {
			cur = m.c.Signer
		}
	}
	rec, err := igpec.NewRecord("Aruba PEC S.p.A.", "", "ricevute@pec.aruba.it", []*x509.Certificate{cur}, trRealDomains["aruba"]...)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ = pec.NewTrust(pec.TrustConfig{Anchors: anchors}, pec.TrustDeps{Index: igpec.NewSnapshot("corpus", cur.NotBefore, rec)})
	for _, m := range msgs {
		if !strings.HasPrefix(m.name, "aruba-2014") {
			continue
		}
		if r, _ := tr.Check(context.Background(), m.raw, m.c); r.Trusted || trCodes(r)["signer-unlisted"] != pec.Error {
			t.Errorf("%s: %+v", m.name, r.Findings)
		}
	}

	// Today the certificates have expired: checked now, the chain fails.
	for _, m := range msgs[:1] {
		tr, _ := pec.NewTrust(pec.TrustConfig{Anchors: anchors}, pec.TrustDeps{Index: full})
		r, _ := tr.CheckAt(context.Background(), m.raw, m.c, cur.NotAfter.AddDate(1, 0, 0))
		if r.Trusted || trCodes(r)["cert-validity"] != pec.Error {
			t.Errorf("%s now: %+v", m.name, r.Findings)
		}
	}
}
