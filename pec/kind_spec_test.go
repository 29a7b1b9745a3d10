package pec_test

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
)

// specRow is one row of pec-spec.md §3.1 (master table) and §3.2 (header templates), written
// out here by hand from the spec so that the kind table under test (pec/kind.go), which the
// builders and the classifier both read, is not its own reference (issue 20 item 4).
type specRow struct {
	header, value string   // the type header and its exact value
	prefix        string   // the subject prefix, trailing space included
	sicurezza     bool     // X-VerificaSicurezza: errore (only #5 and #8)
	xMittente     bool     // X-Mittente: original sender (only #7)
	tipo          string   // daticert postacert/@tipo; "" = no daticert.xml (#2)
	errore        []string // the daticert errore values allowed
	postacert     string   // "yes", "no" (not carried), "hash" (breve: attachments as .hash)
}

var spec = map[string]specRow{
	// #1 busta di trasporto
	"busta": {"X-Trasporto", "posta-certificata", "POSTA CERTIFICATA: ", false, false, "posta-certificata", []string{"nessuno"}, "yes"},
	// #2 busta di anomalia: no daticert, the whole received message
	"anomalia": {"X-Trasporto", "errore", "ANOMALIA MESSAGGIO: ", false, false, "", nil, "yes"},
	// #3 ricevuta di accettazione
	"accettazione": {"X-Ricevuta", "accettazione", "ACCETTAZIONE: ", false, false, "accettazione", []string{"nessuno"}, "no"},
	// #4 avviso di non accettazione (eccezioni formali): altro (pec-spec.md §7.1)
	"non-accettazione": {"X-Ricevuta", "non-accettazione", "AVVISO DI NON ACCETTAZIONE: ", false, false, "non-accettazione", []string{"altro"}, "no"},
	// #5 avviso di non accettazione per virus
	"non-accettazione-virus": {"X-Ricevuta", "non-accettazione", "AVVISO DI NON ACCETTAZIONE PER VIRUS: ", true, false, "non-accettazione", []string{"virus"}, "no"},
	// #6 ricevuta di presa in carico
	"presa-in-carico": {"X-Ricevuta", "presa-in-carico", "PRESA IN CARICO: ", false, false, "presa-in-carico", []string{"nessuno"}, "no"},
	// #7 avviso di rilevazione virus (errore virus: INFERENCE of pec-spec.md §5.3)
	"rilevazione-virus": {"X-Ricevuta", "rilevazione-virus", "PROBLEMA DI SICUREZZA: ", false, true, "rilevazione-virus", []string{"virus"}, "no"},
	// #8 avviso di mancata consegna per virus
	"mancata-consegna-virus": {"X-Ricevuta", "errore-consegna", "AVVISO DI MANCATA CONSEGNA PER VIRUS: ", true, false, "errore-consegna", []string{"virus"}, "no"},
	// #9 ricevuta di avvenuta consegna, completa / breve / sintetica (§4.2)
	"consegna-completa":  {"X-Ricevuta", "avvenuta-consegna", "CONSEGNA: ", false, false, "avvenuta-consegna", []string{"nessuno"}, "yes"},
	"consegna-breve":     {"X-Ricevuta", "avvenuta-consegna", "CONSEGNA: ", false, false, "avvenuta-consegna", []string{"nessuno"}, "hash"},
	"consegna-sintetica": {"X-Ricevuta", "avvenuta-consegna", "CONSEGNA: ", false, false, "avvenuta-consegna", []string{"nessuno"}, "no"},
	// #10 avviso di mancata consegna
	"mancata-consegna": {"X-Ricevuta", "errore-consegna", "AVVISO DI MANCATA CONSEGNA: ", false, false, "errore-consegna", []string{"no-dest", "no-dominio", "altro"}, "no"},
	// #11, #12 timeout notices: same header and prefix; errore UNVERIFIED, nessuno (§5.3)
	"preavviso-12h": {"X-Ricevuta", "preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", false, false, "preavviso-errore-consegna", []string{"nessuno"}, "no"},
	"preavviso-24h": {"X-Ricevuta", "preavviso-errore-consegna", "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", false, false, "preavviso-errore-consegna", []string{"nessuno"}, "no"},
}

// specFrom is the From each kind has (pec-spec.md §3.1 "From" column): the buste
// "Per conto di: <sender>" <service address>, every receipt the bare service address.
func specFrom(kind, service, sender string) (name, addr string) {
	if kind == "busta" || kind == "anomalia" {
		return "Per conto di: " + sender, service
	}
	return "", service
}

// dissected is what an independent reading (net/mail, mime/multipart, encoding/xml; not the
// pec package's parsers) finds in a message.
type dissected struct {
	header        mail.Header
	tipo, errore  string // daticert attributes; tipo "" = no daticert.xml
	postacert     []byte // nil = no message/rfc822 postacert.eml part
	daticertParts int
}

func dissect(t *testing.T, name string, raw []byte) *dissected {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	d := &dissected{header: m.Header}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/signed" || params["protocol"] != "application/x-pkcs7-signature" {
		t.Fatalf("%s: top-level Content-Type %q: want multipart/signed, protocol application/x-pkcs7-signature (pec-spec.md §3.2, §4.1)", name, m.Header.Get("Content-Type"))
	}
	signed, err := multipart.NewReader(m.Body, params["boundary"]).NextRawPart()
	if err != nil {
		t.Fatalf("%s: signed part: %v", name, err)
	}
	mt, params, err = mime.ParseMediaType(signed.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("%s: signed entity %q, want multipart/mixed (§4.1)", name, signed.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(signed, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pt, pp, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		_, dp, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
		fname := pp["name"]
		if fname == "" {
			fname = dp["filename"]
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch {
		case fname == "daticert.xml":
			d.daticertParts++
			if pt != "application/xml" {
				t.Errorf("%s: daticert.xml is %s, want application/xml (§4.1)", name, pt)
			}
			x, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(body)))
			if err != nil {
				t.Fatalf("%s: daticert.xml: %v", name, err)
			}
			var root struct {
				XMLName xml.Name `xml:"postacert"`
				Tipo    string   `xml:"tipo,attr"`
				Errore  string   `xml:"errore,attr"`
			}
			if err := xml.Unmarshal(x, &root); err != nil {
				t.Fatalf("%s: daticert.xml: %v", name, err)
			}
			d.tipo, d.errore = root.Tipo, root.Errore
		case fname == "postacert.eml":
			if pt != "message/rfc822" {
				t.Errorf("%s: postacert.eml is %s, want message/rfc822 (§4.1)", name, pt)
			}
			d.postacert = body
		}
	}
	return d
}

// checkRow compares a message with its spec row: type header, the other type header absent,
// subject prefix, X-VerificaSicurezza, X-Mittente, daticert tipo and errore, postacert.eml.
func checkRow(t *testing.T, name string, d *dissected, row specRow, sender string) {
	t.Helper()
	h := d.header
	if v := h.Get(row.header); v != row.value {
		t.Errorf("%s: %s: %q, want %q", name, row.header, v, row.value)
	}
	other := map[string]string{"X-Trasporto": "X-Ricevuta", "X-Ricevuta": "X-Trasporto"}[row.header]
	if _, ok := h[textproto.CanonicalMIMEHeaderKey(other)]; ok {
		t.Errorf("%s: carries %s as well (§3.1: never on the other family)", name, other)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if err != nil {
		subj = h.Get("Subject")
	}
	if !strings.HasPrefix(h.Get("Subject"), row.prefix) && !strings.HasPrefix(subj, row.prefix) {
		t.Errorf("%s: Subject %q, want the prefix %q", name, h.Get("Subject"), row.prefix)
	}
	if v, ok := h[textproto.CanonicalMIMEHeaderKey("X-Verificasicurezza")]; row.sicurezza != ok || (ok && (len(v) != 1 || v[0] != "errore")) {
		t.Errorf("%s: X-VerificaSicurezza %q, want present=%v with the value errore (§3.1: only #5 and #8)", name, v, row.sicurezza)
	}
	if v, ok := h[textproto.CanonicalMIMEHeaderKey("X-Mittente")]; row.xMittente != ok || (ok && (len(v) != 1 || !strings.EqualFold(v[0], sender))) {
		t.Errorf("%s: X-Mittente %q, want present=%v with the sender %s (§3.1: only #7)", name, v, row.xMittente, sender)
	}
	switch {
	case row.tipo == "" && d.daticertParts != 0:
		t.Errorf("%s: carries daticert.xml (§3.2 #2: the anomaly has none)", name)
	case row.tipo != "" && d.daticertParts != 1:
		t.Errorf("%s: %d daticert.xml parts, want 1", name, d.daticertParts)
	case row.tipo != "" && d.tipo != row.tipo:
		t.Errorf("%s: daticert tipo %q, want %q (§5.2: equal to the type header)", name, d.tipo, row.tipo)
	}
	if row.tipo != "" && !contains(row.errore, d.errore) {
		t.Errorf("%s: daticert errore %q, want one of %v", name, d.errore, row.errore)
	}
	switch row.postacert {
	case "yes", "hash":
		if d.postacert == nil {
			t.Errorf("%s: no postacert.eml (§4.2)", name)
		}
	case "no":
		if d.postacert != nil {
			t.Errorf("%s: carries postacert.eml (§4.2)", name)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// specOriginal is a submitted message with an attachment (for the breve receipt).
const specOriginal = "Date: Sat, 22 Nov 2025 10:00:00 +0100\r\n" +
	"From: Alice <alice@pec-a.test>\r\n" +
	"To: Bruno <bruno@pec-b.test>\r\n" +
	"Cc: bianca@pec-b.test\r\n" +
	"Subject: Fattura n. 1\r\n" +
	"Message-ID: <orig.1@client.example>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
	"--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nvedi allegato\r\n" +
	"--b1\r\nContent-Type: application/pdf; name=\"fattura.pdf\"\r\nContent-Disposition: attachment; filename=\"fattura.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"

// buildAll builds one message of each of the 14 kinds with the Builder methods.
func buildAll(t *testing.T) map[string]*pec.Message {
	t.Helper()
	id := pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test", ReceiptAddress: "ricevute@pec-a.test"}
	bd := &pec.Builder{ID: id, Keys: hsmtest.New(t, id.Name, id.Domain)}
	ref := pec.NewTimeRef(time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC), nil)
	orig, err := pec.ParseOriginal([]byte(specOriginal))
	if err != nil {
		t.Fatal(err)
	}
	env := pec.Envelope{MailFrom: "alice@pec-a.test", Rcpts: []string{"bruno@pec-b.test", "bianca@pec-b.test"}}
	tx := pec.NewSubmissionTransaction("20251122090000.n1.abcdefghijklmnop@pec-a.test", orig, env, func(string) daticert.RecipientType { return daticert.Certificato })
	pc := pec.PostacertEML(orig, tx.ID)
	withReceipt := func(r daticert.ReceiptType) *pec.Transaction { x := *tx; x.Receipt = r; return &x }
	out := map[string]*pec.Message{}
	add := func(name string, m *pec.Message, err error) {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = m
	}
	add2 := func(name string) func(*pec.Message, error) {
		return func(m *pec.Message, err error) { add(name, m, err) }
	}
	add2("busta")(bd.Busta(ref, tx, orig))
	add2("anomalia")(bd.Anomalia(ref, orig, env, "firma non valida"))
	add2("accettazione")(bd.Accettazione(ref, tx))
	add2("non-accettazione")(bd.NonAccettazione(ref, tx, &pec.FormalError{Reason: pec.ReasonBcc}))
	add2("non-accettazione-virus")(bd.NonAccettazioneVirus(ref, tx, "Eicar-Signature"))
	add2("presa-in-carico")(bd.PresaInCarico(ref, tx, "ricevute@pec-a.test", []string{"bruno@pec-b.test"}))
	add2("rilevazione-virus")(bd.RilevazioneVirus(ref, tx, "ricevute@pec-a.test", "bruno@pec-b.test", "Eicar-Signature"))
	add2("mancata-consegna-virus")(bd.MancataConsegnaVirus(ref, tx, "bruno@pec-b.test", "Eicar-Signature"))
	add2("consegna-completa")(bd.Consegna(ref, withReceipt(daticert.Completa), "bruno@pec-b.test", true, pc))
	add2("consegna-breve")(bd.Consegna(ref, withReceipt(daticert.Breve), "bruno@pec-b.test", true, pc))
	add2("consegna-sintetica")(bd.Consegna(ref, withReceipt(daticert.Sintetica), "bruno@pec-b.test", true, pc))
	add2("mancata-consegna")(bd.MancataConsegna(ref, tx, "nessuno@pec-b.test", daticert.ErroreNoDest, pec.DeliveryErrorText("5.1.1", id.Name, "indirizzo non valido")))
	add2("preavviso-12h")(bd.Preavviso(ref, tx, "bruno@pec-b.test", 12))
	add2("preavviso-24h")(bd.Preavviso(ref, tx, "bruno@pec-b.test", 24))
	return out
}

// Every kind the builders make carries the literal tokens of pec-spec.md §3.1/§3.2, read by an
// independent parser; the From, To and X-Riferimento-Message-ID are those of §3.1 too.
func TestBuiltKindsMatchSpecLiterals(t *testing.T) {
	msgs := buildAll(t)
	if len(msgs) != 14 || len(spec) != 14 {
		t.Fatalf("%d kinds built, %d spec rows", len(msgs), len(spec))
	}
	for name, m := range msgs {
		row, ok := spec[name]
		if !ok {
			t.Fatalf("no spec row for %s", name)
		}
		if m.Kind.String() != name {
			t.Errorf("%s: built as %s", name, m.Kind)
		}
		d := dissect(t, name, m.Bytes())
		checkRow(t, name, d, row, "alice@pec-a.test")
		from, err := mail.ParseAddress(d.header.Get("From"))
		wantName, wantAddr := specFrom(name, "posta-certificata@pec-a.test", "alice@pec-a.test")
		if err != nil || from.Name != wantName || from.Address != wantAddr {
			t.Errorf("%s: From %q, want %q <%s> (§3.1)", name, d.header.Get("From"), wantName, wantAddr)
		}
		wantTo := map[string]string{"busta": "bruno@pec-b.test", "anomalia": "bruno@pec-b.test",
			"presa-in-carico": "ricevute@pec-a.test", "rilevazione-virus": "ricevute@pec-a.test"}[name]
		if wantTo == "" {
			wantTo = "alice@pec-a.test" // the original sender
		}
		if to, err := mail.ParseAddress(d.header.Get("To")); err != nil || to.Address != wantTo {
			t.Errorf("%s: To %q, want %s (§3.1)", name, d.header.Get("To"), wantTo)
		}
		if name != "anomalia" && d.header.Get("X-Riferimento-Message-ID") != "<orig.1@client.example>" {
			t.Errorf("%s: X-Riferimento-Message-ID %q (§3.1: every notification and the busta)", name, d.header.Get("X-Riferimento-Message-ID"))
		}
		if d.header.Get("MIME-Version") != "1.0" {
			t.Errorf("%s: MIME-Version %q", name, d.header.Get("MIME-Version"))
		}
		if row.postacert == "hash" && (!bytes.Contains(d.postacert, []byte("fattura.pdf.hash")) || bytes.Contains(d.postacert, []byte("JVBERi0xLjQK"))) {
			t.Errorf("%s: the attachment is not replaced by its .hash part (§4.3)", name)
		}
		if row.postacert == "yes" && !bytes.Contains(d.postacert, []byte("JVBERi0xLjQK")) {
			t.Errorf("%s: postacert.eml lacks the original's attachment", name)
		}
	}
}

// The real provider messages carry the same literal tokens (the edited Sogei busta only its
// header: its daticert.xml was removed upstream).
func TestRealCorpusMatchesSpecLiterals(t *testing.T) {
	want := map[string]string{
		"aruba-2014-accettazione.eml":          "accettazione",
		"aruba-2014-busta-completa.eml":        "busta",
		"aruba-2014-busta.eml":                 "busta",
		"aruba-2014-consegna.eml":              "consegna-completa",
		"aruba-2018-accettazione.eml":          "accettazione",
		"aruba-2018-consegna-completa.eml":     "consegna-completa",
		"aruba-2021-accettazione-2rcpt.eml":    "accettazione",
		"aruba-2021-consegna.eml":              "consegna-sintetica", // completa requested, no postacert.eml
		"aruba-2021-mancata-consegna.eml":      "mancata-consegna",
		"sogei-2018-busta-breve-1.eml":         "busta",
		"sogei-2018-busta-breve-2.eml":         "busta",
		"sogei-2019-busta-edited-upstream.eml": "busta",
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
		row := spec[want[name]]
		d := dissect(t, name, raw)
		if strings.Contains(name, "edited") {
			row.tipo, row.errore = "", nil
		}
		checkRow(t, name, d, row, d.header.Get("X-Mittente"))
		from, err := mail.ParseAddress(d.header.Get("From"))
		if err != nil || !strings.HasPrefix(from.Address, "posta-certificata@") ||
			(row.header == "X-Trasporto") != strings.HasPrefix(from.Name, "Per conto di: ") {
			t.Errorf("%s: From %q (§3.1)", name, d.header.Get("From"))
		}
		// What the classifier makes of it agrees with the literal row.
		if c := pec.Classify(raw, pec.ClassifyOptions{}); c.Kind.String() != want[name] {
			t.Errorf("%s: classified as %s, want %s", name, c.Kind, want[name])
		}
	}
}
