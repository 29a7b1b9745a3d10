package pec

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec/daticert"
)

func TestTimeRefRome(t *testing.T) {
	winter := NewTimeRef(time.Date(2021, 12, 14, 13, 36, 8, 900e6, time.UTC), nil)
	if winter.Giorno() != "14/12/2021" || winter.Ora() != "14:36:08" || winter.Zona() != "+0100" {
		t.Fatalf("winter: %s %s %s", winter.Giorno(), winter.Ora(), winter.Zona())
	}
	if winter.Date() != "Tue, 14 Dec 2021 14:36:08 +0100" {
		t.Fatalf("Date %q", winter.Date())
	}
	if winter.Text() != "Il giorno 14/12/2021 alle ore 14:36:08 (+0100)" {
		t.Fatalf("Text %q", winter.Text())
	}
	summer := NewTimeRef(time.Date(2025, 7, 1, 22, 30, 0, 0, time.UTC), nil)
	if summer.Giorno() != "02/07/2025" || summer.Ora() != "00:30:00" || summer.Zona() != "+0200" {
		t.Fatalf("summer: %+v", summer.Data())
	}
	d := summer.Data()
	p := &daticert.Postacert{Dati: daticert.Dati{Data: d}}
	for _, pr := range p.Validate() {
		if strings.Contains(pr.Path, "/data") {
			t.Errorf("Data() invalid: %v", pr)
		}
	}
}

func TestIdentificativo(t *testing.T) {
	now := time.Date(2025, 11, 22, 9, 48, 0, 0, time.UTC)
	dotAtom := regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9-]+)*@pec-a\.test$`)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id, err := NewIdentificativo(now, "MX 1/ä", "PEC-A.test", nil)
		if err != nil {
			t.Fatal(err)
		}
		if !dotAtom.MatchString(id) || !strings.HasPrefix(id, "20251122094800.mx1.") {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate %q", id)
		}
		seen[id] = true
	}
	a := ReceiptMessageID(KindConsegnaCompleta, "x@pec-a.test", "Bruno@pec-b.test", "pec-b.test")
	if a != ReceiptMessageID(KindConsegnaCompleta, "x@pec-a.test", "bruno@pec-b.test", "pec-b.test") {
		t.Fatal("receipt Message-ID not deterministic")
	}
	if a == ReceiptMessageID(KindConsegnaCompleta, "x@pec-a.test", "bianca@pec-b.test", "pec-b.test") ||
		a == ReceiptMessageID(KindMancataConsegna, "x@pec-a.test", "bruno@pec-b.test", "pec-b.test") {
		t.Fatal("receipt Message-IDs collide")
	}
	if !regexp.MustCompile(`^<consegna-completa\.[a-z2-7]{26}@pec-b\.test>$`).MatchString(a) {
		t.Fatalf("bad receipt id %q", a)
	}
}

func TestFormalChecks(t *testing.T) {
	base := "From: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\nCc: bianca@pec-b.test\r\nSubject: s\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\n\r\nbody\r\n"
	env := Envelope{MailFrom: "alice@pec-a.test", Rcpts: []string{"bruno@pec-b.test", "bianca@pec-b.test"}}
	cases := []struct {
		name  string
		msg   string
		env   Envelope
		login string
		lim   Limits
		want  ReasonCode
	}{
		{"ok", base, env, "alice@pec-a.test", Limits{}, 0},
		{"domain case", strings.Replace(base, "alice@pec-a.test", "alice@PEC-A.test", 1), env, "Alice@pec-a.test", Limits{}, 0},
		{"local part case", strings.Replace(base, "alice@", "Alice@", 1), env, "alice@pec-a.test", Limits{}, ReasonFromMismatch},
		{"no from", strings.Replace(base, "From: alice@pec-a.test\r\n", "", 1), env, "alice@pec-a.test", Limits{}, ReasonNoFrom},
		{"two from", strings.Replace(base, "From: alice@pec-a.test", "From: alice@pec-a.test, eve@x.test", 1), env, "alice@pec-a.test", Limits{}, ReasonMultipleFrom},
		{"from mismatch", base, Envelope{MailFrom: "eve@pec-a.test", Rcpts: env.Rcpts}, "eve@pec-a.test", Limits{}, ReasonFromMismatch},
		{"login mismatch", base, env, "eve@pec-a.test", Limits{}, ReasonLoginMismatch},
		{"no login", base, env, "", Limits{}, ReasonLoginMismatch},
		{"no to", strings.Replace(base, "To: bruno@pec-b.test\r\n", "", 1), Envelope{MailFrom: env.MailFrom, Rcpts: []string{"bianca@pec-b.test"}}, "alice@pec-a.test", Limits{}, ReasonNoTo},
		{"bad address", strings.Replace(base, "To: bruno@pec-b.test", "To: bruno@@pec-b", 1), env, "alice@pec-a.test", Limits{}, ReasonBadAddress},
		{"bcc", strings.Replace(base, "Subject", "Bcc: carla@pec-b.test\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, ReasonBcc},
		{"empty bcc ok", strings.Replace(base, "Subject", "Bcc: \r\nSubject", 1), env, "alice@pec-a.test", Limits{}, 0},
		{"rcpt not in header", base, Envelope{MailFrom: env.MailFrom, Rcpts: []string{"bruno@pec-b.test", "carla@pec-b.test"}}, "alice@pec-a.test", Limits{}, ReasonRcptNotInHeader},
		{"too many", base, env, "alice@pec-a.test", Limits{MaxRecipients: 1}, ReasonTooManyRcpts},
		{"too large", base, env, "alice@pec-a.test", Limits{MaxSizeTimesRecipients: int64(len(base))}, ReasonTooLarge},
		{"long line", base + strings.Repeat("x", 999) + "\r\n", env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		// issue 12 items 5-7b
		{"header-only recipient", strings.Replace(base, "Cc: bianca@pec-b.test", "Cc: bianca@pec-b.test, carla@pec-b.test", 1), env, "alice@pec-a.test", Limits{}, ReasonHeaderRcptNotInEnvelope},
		{"same mailbox in To and Cc, domain case", strings.Replace(base, "Cc: bianca@pec-b.test", "Cc: bianca@pec-b.test, bruno@PEC-B.test", 1), env, "alice@pec-a.test", Limits{MaxRecipients: 2}, 0},
		{"limits count header recipients", base, Envelope{MailFrom: env.MailFrom, Rcpts: []string{"bruno@pec-b.test"}}, "alice@pec-a.test", Limits{}, ReasonHeaderRcptNotInEnvelope},
		{"sender field", strings.Replace(base, "Subject", "Sender: eve@pec-a.test\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, ReasonSenderField},
		{"sender field is the login", strings.Replace(base, "Subject", "Sender: alice@pec-a.test\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, 0},
		{"resent-from", strings.Replace(base, "Subject", "Resent-From: eve@pec-a.test\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, ReasonSenderField},
		{"two subjects", strings.Replace(base, "Subject: s", "Subject: s\r\nSubject: t", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"two to", strings.Replace(base, "To: bruno@pec-b.test", "To: bruno@pec-b.test\r\nTo: bruno@pec-b.test", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"two message-ids", strings.Replace(base, "Subject", "Message-ID: <a@b>\r\nMessage-ID: <c@d>\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"no date", strings.Replace(base, "Date: Sun, 22 Nov 2026 10:00:00 +0100\r\n", "", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"nul", strings.Replace(base, "body", "bo\x00dy", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"utf-8 header", strings.Replace(base, "Subject: s", "Subject: caff\xc3\xa8", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"malformed message-id", strings.Replace(base, "Subject", "Message-ID: not an id\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, ReasonMalformed},
		{"message-id with literal", strings.Replace(base, "Subject", "Message-ID: <a.b@[127.0.0.1]>\r\nSubject", 1), env, "alice@pec-a.test", Limits{}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := ParseOriginal([]byte(c.msg))
			if err != nil {
				t.Fatal(err)
			}
			fe := CheckSubmission(o, c.env, c.login, c.lim)
			switch {
			case c.want == 0 && fe != nil:
				t.Fatalf("unexpected %v", fe)
			case c.want != 0 && (fe == nil || fe.Reason != c.want):
				t.Fatalf("got %v, want %s", fe, c.want)
			case fe != nil && (fe.Text() == "" || strings.ContainsAny(fe.Text(), "\r\n")):
				t.Fatalf("text %q not one line", fe.Text())
			}
		})
	}
	if _, err := ParseOriginal([]byte("no colon here\r\n\r\n")); err == nil {
		t.Fatal("malformed header accepted")
	}
}

func TestBreveHashesEncodedBody(t *testing.T) {
	f := newFix(t, time.Now())
	pc := PostacertEML(f.orig, f.tx.ID)
	out := Breve(pc)
	att := "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K" // the part body, encoded, without the CRLF before the delimiter
	sum := sha1.Sum([]byte(att))
	want := "Content-Type: text/plain; charset=us-ascii; name=fattura.pdf.hash\r\nContent-Disposition: attachment; filename=fattura.pdf.hash\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + hex.EncodeToString(sum[:]) + "\r\n--b1--"
	if !bytes.Contains(out, []byte(want)) {
		t.Fatalf("breve:\n%s", out)
	}
	if !bytes.Contains(out, []byte("Testo con accenti")) || bytes.Contains(out, []byte(att)) {
		t.Fatal("text part must stay, attachment must go")
	}
	// Everything before the replaced part is byte-identical.
	i := bytes.Index(pc, []byte("Content-Type: application/pdf"))
	if !bytes.Equal(out[:i], pc[:i]) {
		t.Fatal("prefix changed")
	}
	// A forwarded message is replaced as a whole, attachments inside included.
	fwd := "Content-Type: multipart/mixed; boundary=\"f\"\r\n\r\n--f\r\nContent-Type: text/plain\r\n\r\nvedi sotto\r\n--f\r\n" +
		"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"g\"\r\n\r\n--g\r\n" +
		"Content-Type: application/pdf; name=\"x.pdf\"\r\n\r\nPDF\r\n--g--\r\n--f--\r\n"
	inner := "Subject: inner\r\nContent-Type: multipart/mixed; boundary=\"g\"\r\n\r\n--g\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\n\r\nPDF\r\n--g--"
	isum := sha1.Sum([]byte(inner))
	gotF := string(Breve([]byte(fwd)))
	if !strings.Contains(gotF, "messaggio.eml.hash\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"+hex.EncodeToString(isum[:])+"\r\n--f--") || strings.Contains(gotF, "x.pdf") {
		t.Fatalf("forwarded message:\n%s", gotF)
	}
	// Opaque S/MIME: unchanged.
	opaque := []byte("Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n")
	if !bytes.Equal(Breve(opaque), opaque) {
		t.Fatal("pkcs7-mime changed")
	}
	// multipart/signed: attachments of the first part replaced, signature kept.
	signed := "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"s\"\r\n\r\n--s\r\n" +
		"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nciao\r\n--m\r\n" +
		"Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--m--\r\n" +
		"\r\n--s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\r\nSIG\r\n--s--\r\n"
	got := string(Breve([]byte(signed)))
	if !strings.Contains(got, "a.bin.hash") || !strings.Contains(got, "name=\"smime.p7s\"\r\n\r\nSIG\r\n--s--") {
		t.Fatalf("multipart/signed breve:\n%s", got)
	}
}

// Every daticert.xml our builders write is valid against the DTD (xmllint).
func TestBuiltDaticertDTDValid(t *testing.T) {
	f := newFix(t, time.Now())
	dir := t.TempDir()
	for _, k := range Kinds() {
		if !k.Info().Daticert {
			continue
		}
		c := Classify(f.build(t, k, Options{}), ClassifyOptions{})
		if c.DaticertRaw == nil {
			t.Fatalf("%s: no daticert", k)
		}
		p := filepath.Join(dir, k.String()+".xml")
		if err := os.WriteFile(p, c.DaticertRaw, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("xmllint", "--noout", "--dtdvalid", corpus.DTD(), p).CombinedOutput(); err != nil {
			t.Errorf("%s: xmllint: %v\n%s\n%s", k, err, out, c.DaticertRaw)
		}
	}
}

func TestConsegnaToCcRule(t *testing.T) {
	for _, c := range []struct {
		req  daticert.ReceiptType
		inTo bool
		want daticert.ReceiptType
	}{
		{daticert.Completa, true, daticert.Completa}, {daticert.Completa, false, daticert.Sintetica},
		{daticert.Breve, true, daticert.Breve}, {daticert.Breve, false, daticert.Sintetica},
		{daticert.Sintetica, true, daticert.Sintetica}, {daticert.Sintetica, false, daticert.Sintetica},
	} {
		if got := ReceiptFor(c.req, c.inTo); got != c.want {
			t.Errorf("ReceiptFor(%s, %v) = %s, want %s", c.req, c.inTo, got, c.want)
		}
	}
	// A Cc recipient of a completa request: sintetica content, daticert still says completa.
	f := newFix(t, time.Now())
	tx := *f.tx
	tx.Receipt = daticert.Completa
	m, err := (&Builder{ID: f.p, Keys: f.kr}).Consegna(f.ref, &tx, "bianca@pec-b.test", false, PostacertEML(f.orig, tx.ID))
	if err != nil || m.Kind != KindConsegnaSintetica {
		t.Fatalf("%v %v", m, err)
	}
	c := Classify(m.Bytes(), ClassifyOptions{})
	if c.Kind != KindConsegnaSintetica || c.Daticert.Dati.Ricevuta != daticert.Completa || !c.Conforms() {
		t.Fatalf("%s %+v", c.Kind, c.Deviations)
	}
}

func TestNoHeaderInjection(t *testing.T) {
	f := field("To", "a@b\r\nBcc: victim@x")
	if strings.Count(string(f.Raw), "\r\n") != 1 || !strings.HasSuffix(string(f.Raw), "\r\n") {
		t.Fatalf("%q", f.Raw)
	}
	h, _, err := SplitHeader(append(f.Raw, "\r\n"...))
	if err != nil || len(h) != 1 {
		t.Fatalf("%v %d", err, len(h))
	}
}

func TestRecipientInTo(t *testing.T) {
	pc := []byte("To: a@x, b@x\r\nCc: c@x, b@x\r\n\r\n")
	for rcpt, want := range map[string]bool{"a@x": true, "b@x": true, "c@x": false, "d@x": true, "C@X": true} {
		if got := RecipientInTo(pc, rcpt); got != want {
			t.Errorf("%s: %v, want %v", rcpt, got, want)
		}
	}
}

// RFC 2047 words in any IANA charset decode (issue 12 item 8): a valid address with an
// ISO-8859-2 display name is not "invalid", the euro of ISO-8859-15 is a euro (it used to be
// read as Latin-1), Windows-1252 and KOI8-R decode.
func TestCharsets(t *testing.T) {
	for _, c := range []struct{ header, want string }{
		{"From: =?iso-8859-2?Q?Zbigniew_Brz=EAczyszczykiewicz?= <zb@pec-a.test>", "Zbigniew Brzęczyszczykiewicz"},
		{"Subject: =?ISO-8859-15?Q?prezzo_100_=A4?=", "prezzo 100 €"},
		{"Subject: =?windows-1252?B?k3ByZXZlbnRpdm+U?=", "“preventivo”"},
		{"Subject: =?koi8-r?B?8NLJ18XU?=", "Привет"},
	} {
		o, err := ParseOriginal([]byte(c.header + "\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\n\r\nx\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		got := o.Subject
		if strings.HasPrefix(c.header, "From:") {
			if o.FromErr != nil || len(o.From) != 1 {
				t.Fatalf("%s: %v", c.header, o.FromErr)
			}
			got = o.From[0].Name
		}
		if got != c.want {
			t.Errorf("%s: %q, want %q", c.header, got, c.want)
		}
	}
}

// TestSplitParts: the header of a message in parts is read from the first part, or from the
// parts joined when it runs past it; the body reads on across the parts either way.
func TestSplitParts(t *testing.T) {
	msg := "Subject: prova\r\nX-Lunga: uno\r\n due\r\n\r\ncorpo\r\naltro\r\n"
	for _, cut := range [][]int{{len(msg)}, {20, 40}, {33, 38}, {40, 41, 42}, {5, 10}} {
		var parts [][]byte
		prev := 0
		for _, c := range cut {
			parts = append(parts, []byte(msg[prev:c]))
			prev = c
		}
		if prev < len(msg) {
			parts = append(parts, []byte(msg[prev:]))
		}
		h, body, err := SplitParts(parts)
		if err != nil {
			t.Fatalf("%v: %v", cut, err)
		}
		b, _ := io.ReadAll(body)
		if len(h) != 2 || string(h[1].Raw) != "X-Lunga: uno\r\n due\r\n" || string(b) != "corpo\r\naltro\r\n" {
			t.Errorf("%v: header %q, body %q", cut, h, b)
		}
	}
	if _, _, err := SplitParts(nil); err == nil {
		t.Error("no parts: no error")
	}
}
