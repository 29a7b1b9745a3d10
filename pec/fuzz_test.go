package pec

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
)

// FuzzClassify feeds arbitrary messages to the classifier (and so to the MIME walker,
// daticert parser and checks the verifier runs). Seeds: the real corpus and our golden
// files. Invariants: no panic, Conforms agrees with the deviations, an ordinary message has
// no daticert.
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
	f.Fuzz(func(t *testing.T, msg []byte) {
		tm := time.AfterFunc(3*time.Second, func() { panic("WATCHDOG: Classify hangs") })
		defer tm.Stop()
		c := Classify(msg, ClassifyOptions{})
		errs := 0
		for _, d := range c.Deviations {
			if d.Severity == Error {
				errs++
			}
			if d.Code == "" || d.Message == "" {
				t.Fatalf("empty deviation %+v", d)
			}
		}
		if c.Conforms() != (errs == 0) {
			t.Fatal("Conforms disagrees with deviations")
		}
		if c.Kind != KindOrdinary && c.Signed && c.Verified == nil && c.SigErr == nil {
			t.Fatal("signed message neither verified nor failed")
		}
		if c.Postacert != nil {
			Breve(ToCRLF(c.Postacert))
		}
	})
}

// FuzzParseOriginal covers the header splitter and the formal checks.
func FuzzParseOriginal(f *testing.F) {
	f.Add([]byte(origMsg))
	f.Add([]byte("From: a@b\nTo: c@d\n\nbody"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		o, err := ParseOriginal(msg)
		if err != nil {
			return
		}
		if fe := CheckSubmission(o, Envelope{MailFrom: o.Sender(), Rcpts: []string{"c@d"}}, o.Sender(), Limits{MaxRecipients: 10}); fe != nil {
			_ = fe.Text()
		}
		_ = PostacertEML(o, "x@y")
		_ = Breve(o.Raw)
	})
}
