package pec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
)

func TestClassifyCorpus(t *testing.T) {
	want := map[string]Kind{
		"aruba-2014-accettazione.eml":          KindAccettazione,
		"aruba-2014-busta-completa.eml":        KindBusta,
		"aruba-2014-busta.eml":                 KindBusta,
		"aruba-2014-consegna.eml":              KindConsegnaCompleta,
		"aruba-2018-accettazione.eml":          KindAccettazione,
		"aruba-2018-consegna-completa.eml":     KindConsegnaCompleta,
		"aruba-2021-accettazione-2rcpt.eml":    KindAccettazione,
		"aruba-2021-consegna.eml":              KindConsegnaSintetica, // completa requested, no postacert.eml (Cc recipient)
		"aruba-2021-mancata-consegna.eml":      KindMancataConsegna,
		"sogei-2018-busta-breve-1.eml":         KindBusta,
		"sogei-2018-busta-breve-2.eml":         KindBusta,
		"sogei-2019-busta-edited-upstream.eml": KindBusta,
	}
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	if len(files) != len(want) {
		t.Fatalf("%d corpus files, %d expected", len(files), len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := Classify(raw, ClassifyOptions{})
		if c.Kind != want[name] {
			t.Errorf("%s: kind %s, want %s", name, c.Kind, want[name])
		}
		if name == "sogei-2019-busta-edited-upstream.eml" {
			codes := map[string]bool{}
			for _, d := range c.Deviations {
				codes[d.Code] = true
			}
			if !codes["signature"] || !codes["daticert-missing"] || c.Conforms() {
				t.Errorf("%s: want signature and daticert-missing errors, got %+v", name, c.Deviations)
			}
			continue
		}
		if c.Signer == nil || c.Daticert == nil {
			t.Errorf("%s: signer %v daticert %v sigerr %v", name, c.Signer != nil, c.Daticert != nil, c.SigErr)
		}
		if !c.Conforms() {
			t.Errorf("%s: does not conform: %+v", name, c.Deviations)
		}
		for _, d := range c.Deviations {
			t.Logf("%s: %s %s %s: %s", name, d.Severity, d.Code, d.Where, d.Message)
		}
	}
}

func TestClassifyOwnMessages(t *testing.T) {
	f := newFix(t, time.Now())
	for _, k := range Kinds() {
		msg := f.build(t, k, Options{HTML: true})
		c := Classify(msg, ClassifyOptions{})
		if c.Kind != k {
			t.Errorf("%s classified as %s", k, c.Kind)
		}
		for _, d := range c.Deviations {
			t.Errorf("%s: %s %s %s: %s", k, d.Severity, d.Code, d.Where, d.Message)
		}
	}
}

func TestClassifyOrdinary(t *testing.T) {
	c := Classify([]byte("From: a@b\r\nTo: c@d\r\nSubject: hi\r\n\r\nbody\r\n"), ClassifyOptions{})
	if c.Kind != KindOrdinary || len(c.Deviations) != 0 {
		t.Fatalf("%s %+v", c.Kind, c.Deviations)
	}
	c = Classify([]byte("From: a@b\r\nX-Ricevuta: accettazione\r\nSubject: ACCETTAZIONE: x\r\n\r\nbody\r\n"), ClassifyOptions{})
	if c.Kind != KindAccettazione || c.Conforms() {
		t.Fatalf("forged unsigned receipt: %s %+v", c.Kind, c.Deviations)
	}
}

// Deviations outside the signed entity are still found: header fields are not signed.
func TestClassifyHeaderDeviations(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	msg := string(f.build(t, KindAccettazione, Options{}))
	for _, c := range []struct{ from, to, code string }{
		{"Date: Sat, 22 Nov 2025 10:00:00 +0100", "Date: Sat, 22 Nov 2025 10:05:00 +0100", "date-mismatch"},
		{"Subject: ACCETTAZIONE: ", "Subject: ACCETTATO: ", "subject-prefix"},
		{"From: posta-certificata@pec-a.test", "From: posta-certificata@pec-z.test", "from-not-signer"},
		{"X-Ricevuta: accettazione", "X-Ricevuta: presa-in-carico", "daticert-tipo-mismatch"},
		{"X-Riferimento-Message-ID: <orig.1@client.example>", "X-Riferimento-Message-ID: <other@x>", "riferimento-mismatch"},
		{"X-Ricevuta: accettazione", "X-Ricevuta: accettazione\r\nX-Trasporto: posta-certificata", "type-header-both"},
	} {
		m := strings.Replace(msg, c.from, c.to, 1)
		if m == msg {
			t.Fatalf("%s: no change", c.code)
		}
		found := false
		for _, d := range Classify([]byte(m), ClassifyOptions{}).Deviations {
			found = found || d.Code == c.code
		}
		if !found {
			t.Errorf("%s not reported", c.code)
		}
	}
}
