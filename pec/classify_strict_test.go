package pec

import (
	"bytes"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
)

// The top-level header of a PEC message is not signed (pec-spec.md §4.1): these tests change
// it on messages whose signature still verifies, and the checker must still refuse what is
// not the spec's or not what the provider signed (issue 12 item 14).

// editHeader rewrites the top-level header of msg: fn gets the fields and returns the new
// list. The body (the signed entity and the signature) is kept byte for byte.
func editHeader(t *testing.T, msg []byte, fn func(Header) Header) []byte {
	t.Helper()
	h, body, err := SplitHeader(ToCRLF(msg))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fn(append(Header(nil), h...)) {
		b.Write(f.Raw)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// setField replaces the first field called name (case-insensitive) by "name: value", or
// appends it when there is none.
func setField(t *testing.T, msg []byte, name, value string) []byte {
	t.Helper()
	return editHeader(t, msg, func(h Header) Header {
		nf := Field{Name: name, Raw: []byte(name + ": " + value + "\r\n")}
		for i, f := range h {
			if strings.EqualFold(f.Name, name) {
				h[i] = nf
				return h
			}
		}
		return append(h, nf)
	})
}

// addField adds "name: value" at the top of the header (as a relay would).
func addField(t *testing.T, msg []byte, name, value string) []byte {
	t.Helper()
	return editHeader(t, msg, func(h Header) Header {
		return append(Header{{Name: name, Raw: []byte(name + ": " + value + "\r\n")}}, h...)
	})
}

func delField(t *testing.T, msg []byte, name string) []byte {
	t.Helper()
	return editHeader(t, msg, func(h Header) Header {
		var out Header
		for _, f := range h {
			if !strings.EqualFold(f.Name, name) {
				out = append(out, f)
			}
		}
		return out
	})
}

// wantError classifies msg and requires a verified signature (the change is outside it), no
// conformance, and an Error with code.
func wantError(t *testing.T, name string, msg []byte, code string) *Classified {
	t.Helper()
	c := Classify(msg, ClassifyOptions{})
	if c.Verified == nil {
		t.Fatalf("%s: the signature no longer verifies (%v): the test changed signed bytes", name, c.SigErr)
	}
	found := false
	for _, d := range c.Deviations {
		if d.Code == code {
			found = true
			if d.Severity != Error {
				t.Errorf("%s: %s is a %s, want an error: %s", name, code, d.Severity, d.Message)
			}
		}
	}
	if !found {
		t.Errorf("%s: no %s; deviations %+v", name, code, c.Deviations)
	}
	if c.Conforms() {
		t.Errorf("%s: conforms", name)
	}
	return c
}

// wantConforms classifies msg and requires conformance with no deviation of code.
func wantConforms(t *testing.T, name string, msg []byte) *Classified {
	t.Helper()
	c := Classify(msg, ClassifyOptions{})
	if c.Verified == nil || !c.Conforms() {
		t.Errorf("%s: does not conform (signature %v): %+v", name, c.SigErr, c.Deviations)
	}
	return c
}

// Type header values that are not the spec's literals (pec-spec.md §3.1 value sets and its
// "Warning" on hobby parsers) are refused, even when daticert tipo says what the message is.
func TestClassifyRefusesHobbyTypeTokens(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		kind        Kind
		field, val  string
		code        string
		stillKindOf Kind // the kind still recognised (the other rules of that kind run)
	}{
		{KindMancataConsegna, "X-Ricevuta", "mancata-consegna", "type-header-value", KindMancataConsegna},
		{KindConsegnaCompleta, "X-Ricevuta", "Avvenuta-Consegna", "type-header-value", KindConsegnaCompleta},
		{KindConsegnaCompleta, "X-Ricevuta", "consegna", "type-header-value", KindConsegnaCompleta},
		{KindAccettazione, "X-Ricevuta", "ACCETTAZIONE", "type-header-value", KindAccettazione},
		{KindPreavviso12h, "X-Ricevuta", "preavviso-mancata-consegna", "type-header-value", KindPreavviso12h},
		{KindBusta, "X-Trasporto", "certificata", "type-header-value", KindBusta},
		{KindBusta, "X-Trasporto", "Posta-Certificata", "type-header-value", KindBusta},
		{KindAnomalia, "X-Trasporto", "anomalia", "type-header-value", KindOrdinary},
		{KindNonAccettazioneVirus, "X-VerificaSicurezza", "ERRORE", "verifica-sicurezza-value", KindNonAccettazioneVirus},
		{KindMancataConsegnaVirus, "X-VerificaSicurezza", "virus", "verifica-sicurezza-value", KindMancataConsegnaVirus},
		{KindBusta, "X-TipoRicevuta", "ridotta", "tiporicevuta-value", KindBusta},
		{KindBusta, "X-TipoRicevuta", "Breve", "tiporicevuta-value", KindBusta},
	} {
		name := tc.kind.String() + " " + tc.field + ": " + tc.val
		msg := f.build(t, tc.kind, Options{})
		wantConforms(t, tc.kind.String(), msg)
		c := wantError(t, name, setField(t, msg, tc.field, tc.val), tc.code)
		if c.Kind != tc.stillKindOf {
			t.Errorf("%s: classified as %s, want %s", name, c.Kind, tc.stillKindOf)
		}
	}
}

// The subject prefixes of hobby parsers (pec-spec.md §3.1 "Warning") are not PEC prefixes.
func TestClassifyRefusesHobbySubjectPrefixes(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		kind   Kind
		prefix string
	}{
		{KindConsegnaCompleta, "AVVENUTA CONSEGNA: "},
		{KindConsegnaSintetica, "RICEVUTA DI CONSEGNA: "},
		{KindPreavviso12h, "PREAVVISO DI MANCATA CONSEGNA: "},
		{KindPreavviso12h, "AVVISO DI MANCATA CONSEGNA: "}, // the 12 h case under the plain mancata consegna prefix
		{KindPreavviso24h, "AVVISO DI MANCATA CONSEGNA: "},
		{KindMancataConsegna, "MANCATA CONSEGNA: "},
		{KindMancataConsegna, "ERRORE CONSEGNA: "},
		{KindMancataConsegna, "AVVISO DI MANCATA CONSEGNA PER VIRUS: "},
		{KindMancataConsegnaVirus, "AVVISO DI MANCATA CONSEGNA: "},
		{KindNonAccettazioneVirus, "AVVISO DI NON ACCETTAZIONE: "},
		{KindBusta, "POSTA CERTIFICATA:"},
		{KindAccettazione, "Accettazione: "},
	} {
		msg := f.build(t, tc.kind, Options{})
		wantError(t, tc.kind.String()+" "+tc.prefix, setField(t, msg, "Subject", tc.prefix+"=?utf-8?q?Fattura_n=2E_1_=E2=80=93_perch=C3=A8?="), "subject-prefix")
	}
}

// typeLines are every type header line of the spec with its subject prefix (pec-spec.md §3.1
// value sets and master table), written out here rather than read from the kind table.
var typeLines = []struct{ name, value, prefix string }{
	{"X-Trasporto", "posta-certificata", "POSTA CERTIFICATA: "}, {"X-Trasporto", "errore", "ANOMALIA MESSAGGIO: "},
	{"X-Ricevuta", "accettazione", "ACCETTAZIONE: "}, {"X-Ricevuta", "non-accettazione", "AVVISO DI NON ACCETTAZIONE: "},
	{"X-Ricevuta", "presa-in-carico", "PRESA IN CARICO: "}, {"X-Ricevuta", "avvenuta-consegna", "CONSEGNA: "},
	{"X-Ricevuta", "errore-consegna", "AVVISO DI MANCATA CONSEGNA: "},
	{"X-Ricevuta", "preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: "},
	{"X-Ricevuta", "rilevazione-virus", "PROBLEMA DI SICUREZZA: "},
}

// A type header that says another kind than the signed daticert tipo (or than the signed
// content, for the anomaly, which has no daticert) never conforms: every kind we build
// relabelled with every other spec type line and that kind's subject prefix, and with no
// type header at all.
func TestClassifyHeaderKindAgainstDaticert(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	const subject = "=?utf-8?q?Fattura_n=2E_1_=E2=80=93_perch=C3=A8?="
	for _, k := range Kinds() {
		msg := f.build(t, k, Options{})
		h, _, err := SplitHeader(msg)
		if err != nil {
			t.Fatal(err)
		}
		bare := delField(t, delField(t, msg, "X-Trasporto"), "X-Ricevuta")
		if k.Info().Daticert {
			wantError(t, k.String()+" without type header", bare, "type-header-missing")
		} else if c := Classify(bare, ClassifyOptions{}); c.Kind != KindOrdinary {
			t.Errorf("anomalia without X-Trasporto classified as %s", c.Kind)
		}
		for _, line := range typeLines {
			if v, _ := h.Get(line.name); v == line.value {
				continue
			}
			m := setField(t, setField(t, bare, line.name, line.value), "Subject", line.prefix+subject)
			code := "daticert-tipo-mismatch"
			switch {
			case !k.Info().Daticert:
				code = "daticert-missing"
			case line.value == "errore":
				code = "daticert-forbidden"
			}
			wantError(t, k.String()+" relabelled "+line.name+": "+line.value, m, code)
		}
	}
}

// The outer Subject, From display name and To/Cc that mail clients show are compared with
// their signed copies (daticert.xml, postacert.eml).
func TestClassifyOuterFieldsAgainstSignedCopy(t *testing.T) {
	f := newFix(t, time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC))
	for _, k := range Kinds() {
		msg := f.build(t, k, Options{})
		prefix := map[Kind]string{KindBusta: "POSTA CERTIFICATA: ", KindAnomalia: "ANOMALIA MESSAGGIO: "}[k]
		if prefix == "" {
			prefix = k.Info().Prefix
		}
		wantError(t, k.String()+" subject rewritten", setField(t, msg, "Subject", prefix+"Bonifico urgente IBAN IT60X0542811101000000123456"), "subject-mismatch")
		wantError(t, k.String()+" subject emptied", setField(t, msg, "Subject", prefix), "subject-mismatch")
		wantError(t, k.String()+" second subject", addField(t, msg, "Subject", prefix+"Bonifico urgente"), "header-repeated")
		wantError(t, k.String()+" second From", addField(t, msg, "From", "posta-certificata@pec-a.test"), "header-repeated")
		// The same subject written otherwise (one encoded word for all, folded) still agrees.
		wantConforms(t, k.String()+" subject re-encoded", setField(t, msg, "Subject", "=?utf-8?b?"+b64(prefix)+"?=\r\n =?iso-8859-1?q?Fattura_n=2E_1?=\r\n =?utf-8?q?_=E2=80=93_perch=C3=A8?="))
	}
	for _, k := range []Kind{KindBusta, KindAnomalia} {
		msg := f.build(t, k, Options{})
		wantConforms(t, k.String()+" To with other display names", setField(t, msg, "To", "\"B.\" <BRUNO@pec-b.test>,\r\n Oscar <oscar@posta.test>"))
		for name, val := range map[string]string{
			"From": "\"Per conto di: direttore@banca.example\" <posta-certificata@pec-a.test>",
		} {
			wantError(t, k.String()+" "+name, setField(t, msg, name, val), "from-sender-mismatch")
		}
		wantError(t, k.String()+" From display name", setField(t, msg, "From", "\"Banca d'Italia - Ufficio pagamenti\" <posta-certificata@pec-a.test>"), "from-sender-mismatch")
		wantError(t, k.String()+" To", setField(t, msg, "To", "Bruno <bruno@pec-b.test>, eve@posta.test"), "recipients-mismatch")
		wantError(t, k.String()+" To dropped", delField(t, msg, "To"), "recipients-mismatch")
		wantError(t, k.String()+" Cc added to", setField(t, msg, "Cc", "bianca@pec-b.test, eve@pec-b.test"), "recipients-mismatch")
		wantError(t, k.String()+" Cc dropped", delField(t, msg, "Cc"), "recipients-mismatch")
	}
	for _, k := range Kinds() {
		if !k.Info().ToSender {
			continue
		}
		msg := f.build(t, k, Options{})
		wantConforms(t, k.String()+" To with a display name", setField(t, msg, "To", "Alice <ALICE@pec-a.test>"))
		wantError(t, k.String()+" To", setField(t, msg, "To", "eve@pec-a.test"), "to-not-sender")
		wantError(t, k.String()+" To twice", setField(t, msg, "To", "alice@pec-a.test, eve@pec-a.test"), "to-not-sender")
		wantError(t, k.String()+" no To", delField(t, msg, "To"), "to-not-sender")
	}
	msg := f.build(t, KindRilevazioneVirus, Options{})
	wantError(t, "rilevazione-virus X-Mittente", setField(t, msg, "X-Mittente", "eve@pec-a.test"), "x-mittente-mismatch")
}

// A genuine busta whose outer Subject, From or To was rewritten on the way does not conform
// (issue 12 item 14), while the real messages as received do (TestClassifyCorpus).
func TestClassifyRealBustaRewritten(t *testing.T) {
	for _, name := range []string{"aruba-2014-busta-completa.eml", "sogei-2018-busta-breve-1.eml"} {
		raw, err := os.ReadFile(corpus.Path("real", name))
		if err != nil {
			t.Fatal(err)
		}
		wantConforms(t, name, raw)
		wantError(t, name+" Subject", setField(t, raw, "Subject", "POSTA CERTIFICATA: Bonifico urgente IBAN IT60X0542811101000000123456"), "subject-mismatch")
		wantError(t, name+" From", setField(t, raw, "From", "\"Per conto di: tesoreria@pec.it\" <posta-certificata@pec.aruba.it>"), "from-sender-mismatch")
		wantError(t, name+" To", setField(t, raw, "To", "altro@pec.it"), "recipients-mismatch")
		wantError(t, name+" X-Trasporto", setField(t, raw, "X-Trasporto", "certificata"), "type-header-value")
	}
	raw, err := os.ReadFile(corpus.Path("real", "aruba-2021-mancata-consegna.eml"))
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, "real mancata consegna relabelled", setField(t, raw, "X-Ricevuta", "mancata-consegna"), "type-header-value")
	wantError(t, "real mancata consegna Subject", setField(t, raw, "Subject", "AVVISO DI MANCATA CONSEGNA: altro"), "subject-mismatch")
	wantError(t, "real mancata consegna To", setField(t, raw, "To", "altro@pec.it"), "to-not-sender")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
