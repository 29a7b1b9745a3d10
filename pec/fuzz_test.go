package pec

import (
	"bytes"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec/smime"
)

// FuzzClassify feeds arbitrary messages to the classifier (and so to the MIME walker,
// daticert parser and checks the verifier runs). Seeds: the real corpus (whose signatures
// verify, so mutations of their unsigned header keep a valid signature) and our golden files.
// Invariants, checked on every input: no panic and no hang; Conforms agrees with the Error
// deviations and every deviation says what and why; a message with a signed daticert.xml is
// never ordinary mail; and checkConforming's rules for any message that conforms.
func FuzzClassify(f *testing.F) {
	for _, pat := range []string{corpus.Path("real", "*.eml"), filepath.Join("testdata", "golden", "*.eml")} {
		files, _ := filepath.Glob(pat)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("X-Ricevuta: accettazione\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/xml; name=daticert.xml\r\n\r\n<postacert/>\r\n--x--\r\n"))
	// A real receipt without its type header (the kind comes from the signed daticert), and its
	// signed content unsigned (the entity as the whole body under the same header fields).
	raw, err := os.ReadFile(corpus.Path("real", "aruba-2021-mancata-consegna.eml"))
	if err != nil {
		f.Fatal(err)
	}
	raw = ToCRLF(raw)
	f.Add(bytes.Replace(raw, []byte("X-Ricevuta: errore-consegna\r\n"), nil, 1))
	h, _, err := SplitHeader(raw)
	if err != nil {
		f.Fatal(err)
	}
	var unsigned bytes.Buffer
	for _, fl := range h {
		if !strings.EqualFold(fl.Name, "Content-Type") {
			unsigned.Write(fl.Raw)
		}
	}
	v, err := smime.Verify(raw, smime.VerifyOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(unsigned.Bytes(), v.Entity...))
	f.Fuzz(func(t *testing.T, msg []byte) {
		tm := time.AfterFunc(3*time.Second, func() { panic("WATCHDOG: Classify hangs") })
		defer tm.Stop()
		c := Classify(msg, ClassifyOptions{})
		errs := 0
		for _, d := range c.Deviations {
			if d.Severity == Error {
				errs++
			}
			if d.Code == "" || d.Message == "" || (d.Severity != Error && d.Severity != Warning) {
				t.Fatalf("incomplete deviation %+v", d)
			}
		}
		if c.Conforms() != (errs == 0) {
			t.Fatal("Conforms disagrees with deviations")
		}
		if c.Kind != KindOrdinary && c.Signed && c.Verified == nil && c.SigErr == nil {
			t.Fatal("signed message neither verified nor failed")
		}
		if c.Signed && c.Daticert != nil && c.Kind == KindOrdinary {
			t.Fatalf("a signed message with daticert tipo=%s classified as ordinary mail", c.Daticert.Tipo)
		}
		if c.Kind != KindOrdinary && c.Conforms() {
			checkConforming(t, c)
		}
		if c.Postacert != nil {
			Breve(ToCRLF(c.Postacert))
		}
	})
}

// checkConforming: a message that conforms is one its provider signed, of exactly one kind:
// the signature verified and its signer is the From address; the type header is the kind's
// literal and the other family is absent; the Subject has the kind's prefix; daticert.xml is
// there (with the kind's tipo) exactly when the kind has one; postacert.eml as §4.2 says.
func checkConforming(t *testing.T, c *Classified) {
	info := c.Kind.Info()
	if c.Verified == nil || c.Signer == nil {
		t.Fatalf("%s conforms without a verified signature (%v)", c.Kind, c.SigErr)
	}
	other := map[string]string{"X-Trasporto": "X-Ricevuta", "X-Ricevuta": "X-Trasporto"}[info.Header]
	if v, _ := c.Header.Get(info.Header); c.Header.Count(info.Header) != 1 || strings.TrimSpace(v) != info.Value || c.Header.Count(other) != 0 {
		t.Fatalf("%s conforms with %s %q and %d %s fields", c.Kind, info.Header, v, c.Header.Count(other), other)
	}
	if v, _ := c.Header.Get("Subject"); !strings.HasPrefix(DecodeHeader(v), info.Prefix) && strings.TrimSpace(DecodeHeader(v)) != strings.TrimSpace(info.Prefix) {
		t.Fatalf("%s conforms with Subject %q", c.Kind, v)
	}
	if info.Daticert != (c.Daticert != nil) || (c.Daticert != nil && c.Daticert.Tipo != info.Tipo) {
		t.Fatalf("%s conforms with daticert %+v", c.Kind, c.Daticert)
	}
	if (info.Postacert == PostacertRequired && c.Postacert == nil) || (info.Postacert == PostacertMustNot && c.Postacert != nil) {
		t.Fatalf("%s conforms with postacert.eml present=%v", c.Kind, c.Postacert != nil)
	}
	from, _ := c.Header.Get("From")
	a, err := addrOf(from)
	if err != nil {
		t.Fatalf("%s conforms with From %q", c.Kind, from)
	}
	for _, e := range c.Signer.EmailAddresses {
		if strings.EqualFold(e, a.Address) {
			return
		}
	}
	t.Fatalf("%s conforms with From %s, signer %v", c.Kind, a.Address, c.Signer.EmailAddresses)
}

// FuzzParseOriginal covers the header splitter, the formal checks and PostacertEML, with two
// round trips. The fields and the body rebuild the message byte for byte (an mbox From_ line
// aside). PostacertEML of the parsed message parses again to the same message, but for the
// Message-ID (the identificativo) and X-Riferimento-Message-ID (the client's Message-ID): same
// other fields in the same order, same body, same From, To, Cc and Subject. Input is taken as
// SMTP DATA delivers it: ending with a line end.
func FuzzParseOriginal(f *testing.F) {
	f.Add([]byte(origMsg))
	f.Add([]byte("From: a@b\nTo: c@d\n\nbody"))
	f.Add([]byte("From a@b Sat Nov 22 2025\nFrom: a@b\nX-Riferimento-Message-ID: <forged@x>\nSubject: =?iso-8859-1?q?perch=E8?=\n\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > 0 && msg[len(msg)-1] != '\n' && msg[len(msg)-1] != '\r' {
			msg = append(msg[:len(msg):len(msg)], '\r', '\n')
		}
		o, err := ParseOriginal(msg)
		if err != nil {
			return
		}
		checkRebuild(t, o)
		if fe := CheckSubmission(o, Envelope{MailFrom: o.Sender(), Rcpts: []string{"c@d"}}, o.Sender(), Limits{MaxRecipients: 10}); fe != nil {
			_ = fe.Text()
		}
		const id = "20251122090000.n1.abcdefghijklmnop@pec-a.test"
		pc := PostacertEML(o, id)
		p, err := ParseOriginal(pc)
		if err != nil {
			t.Fatalf("postacert.eml does not parse: %v\n%q", err, pc)
		}
		if p.MessageID != "<"+id+">" || p.Header.Count("Message-ID") != 1 {
			t.Fatalf("postacert.eml Message-ID %q (%d fields)", p.MessageID, p.Header.Count("Message-ID"))
		}
		// A Message-ID that is not UTF-8 is not RFC 5322 (msg-id is ASCII): the reference keeps
		// U+FFFD for its bad bytes, as daticert msgid does; the formal checks judge such ids.
		ref, ok := p.Header.Get("X-Riferimento-Message-ID")
		if (o.MessageID != "") != ok || (utf8.ValidString(o.MessageID) && strings.TrimSpace(ref) != o.MessageID) || p.Header.Count("X-Riferimento-Message-ID") > 1 {
			t.Fatalf("postacert.eml X-Riferimento-Message-ID %q, original Message-ID %q", ref, o.MessageID)
		}
		if a, b := otherFields(o.Header), otherFields(p.Header); a != b {
			t.Fatalf("postacert.eml fields differ:\n%q\n%q", a, b)
		}
		if !bytes.Equal(p.Body, o.Body) || p.Subject != o.Subject || addrs(p.From) != addrs(o.From) || addrs(p.To) != addrs(o.To) || addrs(p.Cc) != addrs(o.Cc) {
			t.Fatal("postacert.eml body, Subject, From, To or Cc differ from the original's")
		}
		_ = Breve(o.Raw)
	})
}

// checkRebuild: the raw fields, the empty line and the body are the message.
func checkRebuild(t *testing.T, o *Original) {
	var b bytes.Buffer
	for _, fl := range o.Header {
		b.Write(fl.Raw)
	}
	if o.Body != nil {
		b.WriteString("\r\n")
		b.Write(o.Body)
	}
	rest, ok := bytes.CutSuffix(o.Raw, b.Bytes())
	if !ok || (len(rest) > 0 && !mboxLine(rest)) {
		t.Fatalf("fields and body do not rebuild the message:\n%q\n%q", o.Raw, b.Bytes())
	}
}

// mboxLine: b is one mbox "From " line (possibly folded), as SplitHeader skips it.
func mboxLine(b []byte) bool {
	if !bytes.HasPrefix(b, []byte("From ")) || !bytes.HasSuffix(b, []byte("\r\n")) {
		return false
	}
	lines := bytes.Split(b[:len(b)-2], []byte("\r\n"))
	for _, l := range lines[1:] {
		if len(l) == 0 || (l[0] != ' ' && l[0] != '\t') {
			return false
		}
	}
	return true
}

func otherFields(h Header) string {
	var b strings.Builder
	for _, fl := range h {
		if !strings.EqualFold(fl.Name, "Message-ID") && !strings.EqualFold(fl.Name, "X-Riferimento-Message-ID") {
			b.Write(fl.Raw)
		}
	}
	return b.String()
}

func addrs(l []*mail.Address) string {
	var s []string
	for _, a := range l {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}
