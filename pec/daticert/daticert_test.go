package daticert

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/internal/corpus"
)

// findDaticert walks a MIME message and returns the decoded daticert.xml part.
func findDaticert(t *testing.T, r io.Reader, ct string) []byte {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(r, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return nil
			}
			if _, ps, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ps["name"] == "daticert.xml" {
				b, _ := io.ReadAll(p)
				if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
					b, err = io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(b)))
					if err != nil {
						t.Fatal(err)
					}
				}
				return b
			}
			if d := findDaticert(t, p, p.Header.Get("Content-Type")); d != nil {
				return d
			}
		}
	}
	return nil
}

func realDaticerts(t *testing.T) map[string][]byte {
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(f, err)
		}
		if d := findDaticert(t, m.Body, m.Header.Get("Content-Type")); d != nil {
			out[filepath.Base(f)] = d
		}
	}
	return out
}

func TestRealDaticertRoundTrip(t *testing.T) {
	all := realDaticerts(t)
	if len(all) != 11 {
		t.Fatalf("found %d daticert.xml in the corpus, want 11 (all but the edited busta)", len(all))
	}
	for name, raw := range all {
		p, err := Parse(raw)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if probs := p.Validate(); len(probs) > 0 {
			t.Errorf("%s: %v", name, probs)
		}
		out := Marshal(p)
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: reparse: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(p, q) {
			t.Errorf("%s: not equivalent after re-marshal:\n%+v\n%+v", name, p, q)
		}
		if c := canon(raw); c != canon(out) {
			t.Errorf("%s: canonical form differs:\n%s\n%s", name, c, canon(out))
		}
		xmllint(t, out)
	}
}

// canon strips inter-element whitespace and the self-closing space, the only differences a
// re-marshal may introduce.
func canon(b []byte) string {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	s = strings.Join(out, "")
	return strings.ReplaceAll(s, `" />`, `"/>`)
}

func xmllint(t *testing.T, doc []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "daticert.xml")
	if err := os.WriteFile(f, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xmllint", "--noout", "--dtdvalid", corpus.DTD(), f).CombinedOutput()
	if err != nil {
		t.Fatalf("xmllint: %v\n%s\n%s", err, out, doc)
	}
}

func sample() *Postacert {
	return &Postacert{
		Tipo: TipoAvvenutaConsegna,
		Intestazione: Intestazione{
			Mittente:    "alice@pec-a.test",
			Destinatari: []Destinatario{{Certificato, "bruno@pec-b.test"}, {Esterno, "oscar@posta.test"}},
			Risposte:    "alice@pec-a.test",
			Oggetto:     Subject(`Fattura <n. 1> & "saldo" – 東京 d'aprile`),
		},
		Dati: Dati{
			GestoreEmittente: "Provider B S.p.A.",
			Data:             Data{Zona: "+0100", Giorno: "07/11/2014", Ora: "16:52:00"},
			Identificativo:   "20141107155200.n1.abc@pec-a.test",
			Msgid:            "<x&y@client>",
			Ricevuta:         Completa,
			Consegna:         "bruno@pec-b.test",
		},
	}
}

func TestMarshalEscapingAndDTD(t *testing.T) {
	p := sample()
	out := Marshal(p)
	if !bytes.HasPrefix(out, []byte(`<?xml version="1.0" encoding="UTF-8"?>`+"\n<postacert ")) {
		t.Fatalf("bad prologue:\n%s", out)
	}
	if bytes.Contains(out, []byte("DOCTYPE")) {
		t.Fatal("DOCTYPE emitted")
	}
	for _, want := range []string{`&lt;n. 1&gt; &amp; "saldo" – 東京 d'aprile`, `<msgid>&lt;x&amp;y@client&gt;</msgid>`, `errore="nessuno"`, `<ricevuta tipo="completa" />`, `<destinatari tipo="esterno">oscar@posta.test</destinatari>`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	xmllint(t, out)
	q, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	p.Errore = ErroreNessuno
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip:\n%+v\n%+v", p, q)
	}
}

// Control characters XML 1.0 cannot carry become U+FFFD; TAB, LF survive, CR survives as
// a character reference; invalid UTF-8 becomes U+FFFD.
func TestMarshalControlCharacters(t *testing.T) {
	p := sample()
	p.Intestazione.Oggetto = Subject("a\x00b\x07c\x1bd\te\nf\rg\xffh\uFFFEi")
	out := Marshal(p)
	xmllint(t, out)
	q, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "a\uFFFDb\uFFFDc\uFFFDd\te\nf\rg\uFFFDh\uFFFDi"
	if got := *q.Intestazione.Oggetto; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestParseStrictErrors(t *testing.T) {
	good := string(Marshal(sample()))
	cases := []struct{ name, from, to, path string }{
		{"unknown tipo", `tipo="avvenuta-consegna"`, `tipo="errore"`, "/postacert/@tipo"},
		{"unknown errore", `errore="nessuno"`, `errore="boh"`, "/postacert/@errore"},
		{"unknown destinatari tipo", `tipo="esterno"`, `tipo="ordinario"`, "/postacert/intestazione/destinatari/@tipo"},
		{"unknown ricevuta tipo", `<ricevuta tipo="completa" />`, `<ricevuta tipo="lunga" />`, "/postacert/dati/ricevuta/@tipo"},
		{"missing ricevuta tipo", `<ricevuta tipo="completa" />`, `<ricevuta />`, "/postacert/dati/ricevuta/@tipo"},
		{"missing tipo", `tipo="avvenuta-consegna" `, ``, "/postacert/@tipo"},
		{"missing mittente", `<mittente>alice@pec-a.test</mittente>`, ``, "/postacert/intestazione/destinatari"},
		{"missing risposte", `<risposte>alice@pec-a.test</risposte>`, ``, "/postacert/intestazione/oggetto"},
		{"missing identificativo", `<identificativo>20141107155200.n1.abc@pec-a.test</identificativo>`, ``, "/postacert/dati/msgid"},
		{"missing zona", ` zona="+0100"`, ``, "/postacert/dati/data/@zona"},
		{"missing ora", `<ora>16:52:00</ora>`, ``, "/postacert/dati/data/ora"},
		{"unknown element", `<consegna>`, `<tipo-ricevuta>x</tipo-ricevuta><consegna>`, "/postacert/dati/tipo-ricevuta"},
		{"wrong order", `<msgid>&lt;x&amp;y@client&gt;</msgid>`, ``, ""},
		{"unknown attribute", `<dati>`, `<dati foo="1">`, "/postacert/dati/@foo"},
		{"text in element content", `<dati>`, `<dati>hello`, "/postacert/dati"},
		{"ricevuta not empty", `<ricevuta tipo="completa" />`, `<ricevuta tipo="completa">x</ricevuta>`, "/postacert/dati/ricevuta"},
		{"wrong root", `<postacert `, `<certdata `, ""},
		{"namespace", `<postacert `, `<postacert xmlns="urn:x" `, ""},
		{"internal subset", `<postacert `, `<!DOCTYPE postacert [<!ENTITY a "b">]><postacert `, "/"},
		{"malformed", `</dati>`, ``, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(good, c.from, c.to, 1)
			if c.name == "wrong order" {
				doc = strings.Replace(good, `<identificativo>`, `<msgid>&lt;x&amp;y@client&gt;</msgid><identificativo>`, 1)
				doc = strings.Replace(doc, "        <msgid>&lt;x&amp;y@client&gt;</msgid>\n", "", 1)
			}
			if doc == good {
				t.Fatal("test case did not change the document")
			}
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
			e, ok := err.(*Error)
			if !ok {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if c.path != "" && e.Path != c.path {
				t.Fatalf("path %q, want %q (%v)", e.Path, c.path, err)
			}
		})
	}
}

func TestParseDefaultsAndLatin1(t *testing.T) {
	doc := "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<!DOCTYPE postacert SYSTEM \"daticert.dtd\">" +
		"<postacert tipo=\"presa-in-carico\"><intestazione><mittente>a@x</mittente><destinatari>b@y</destinatari>" +
		"<risposte>a@x</risposte><oggetto>perch\xe8</oggetto></intestazione><dati><gestore-emittente>G</gestore-emittente>" +
		"<data zona=\"+0200\"><giorno>01/07/2025</giorno><ora>10:00:00</ora></data><identificativo>i@x</identificativo>" +
		"<ricezione>b@y</ricezione><ricezione>c@y</ricezione></dati></postacert>"
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if p.Errore != ErroreNessuno || p.Intestazione.Destinatari[0].Tipo != Certificato || *p.Intestazione.Oggetto != "perchè" || len(p.Dati.Ricezione) != 2 {
		t.Fatalf("%+v", p)
	}
	if probs := p.Validate(); len(probs) != 0 {
		t.Fatal(probs)
	}
}

func TestValidateProblems(t *testing.T) {
	p := sample()
	p.Dati.Data.Zona = "+01:00"
	p.Dati.Data.Giorno = "31/02/2020"
	p.Dati.Consegna = ""
	p.Dati.Msgid = "no-brackets@x"
	got := p.Validate()
	want := []string{"/postacert/dati/data/@zona", "/postacert/dati/data/giorno", "/postacert/dati/msgid", "/postacert/dati/consegna"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].Path != want[i] {
			t.Errorf("problem %d: %v, want path %s", i, got[i], want[i])
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Marshal(sample()))
	f.Add([]byte(`<postacert tipo="accettazione"><intestazione/></postacert>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if !IsError(err) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		p.Validate()
		// What parses must re-marshal to a document that parses to the same model, except
		// for text XML cannot carry, which Marshal replaces.
		q, err := Parse(Marshal(p))
		if err != nil {
			t.Fatalf("re-marshal does not parse: %v", err)
		}
		if q.Tipo != p.Tipo || len(q.Intestazione.Destinatari) != len(p.Intestazione.Destinatari) || len(q.Dati.Ricezione) != len(p.Dati.Ricezione) {
			t.Fatalf("re-marshal changed structure")
		}
	})
}
