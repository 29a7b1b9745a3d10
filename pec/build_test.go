package pec

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/daticert"
)

type fix struct {
	p    Identity
	kr   *hsmtest.Keyring
	ref  TimeRef
	orig *Original
	env  Envelope
	tx   *Transaction
}

const origMsg = "Received: from client (client [192.0.2.1])\r\n\tby mx.pec-a.test with ESMTPSA id ABC\r\n\tfor <bruno@pec-b.test>; Sat, 22 Nov 2025 10:00:00 +0100\r\n" +
	"Date: Sat, 22 Nov 2025 10:00:00 +0100\r\n" +
	"From: Alice <alice@pec-a.test>\r\n" +
	"To: Bruno <bruno@pec-b.test>, oscar@posta.test\r\n" +
	"Cc: bianca@pec-b.test\r\n" +
	"Subject: =?utf-8?q?Fattura_n=2E_1_=E2=80=93_perch=C3=A8?=\r\n" +
	"Message-ID: <orig.1@client.example>\r\n" +
	"X-TipoRicevuta: breve\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b1\"\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Testo con accenti: perch\xc3\xa8 cos\xc3\xac.\r\n" +
	"--b1\r\n" +
	"Content-Type: application/pdf; name=\"fattura.pdf\"\r\n" +
	"Content-Disposition: attachment; filename=\"fattura.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n" +
	"--b1--\r\n"

func newFix(t testing.TB, now time.Time) *fix {
	t.Helper()
	kr := hsmtest.New(t, "Provider A S.p.A.", "pec-a.test")
	f := &fix{
		p:   Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test", ReceiptAddress: "ricevute@pec-a.test"},
		kr:  kr,
		ref: NewTimeRef(now, nil),
		env: Envelope{MailFrom: "alice@pec-a.test", Rcpts: []string{"bruno@pec-b.test", "oscar@posta.test", "bianca@pec-b.test"}},
	}
	var err error
	f.orig, err = ParseOriginal([]byte(origMsg))
	if err != nil {
		t.Fatal(err)
	}
	typeOf := func(a string) daticert.RecipientType {
		if strings.HasSuffix(a, "@posta.test") {
			return daticert.Esterno
		}
		return daticert.Certificato
	}
	f.tx = NewSubmissionTransaction("20251122090000.n1.abcdefghijklmnop@pec-a.test", f.orig, f.env, typeOf)
	return f
}

// buildKind builds one message of each kind with fix data.
func (f *fix) build(t testing.TB, k Kind, o Options) []byte {
	t.Helper()
	var (
		m   *Message
		err error
	)
	bd := &Builder{ID: f.p, Keys: f.kr, Opt: o}
	switch k {
	case KindBusta:
		m, err = bd.Busta(f.ref, f.tx, f.orig)
	case KindAnomalia:
		m, err = bd.Anomalia(f.ref, f.orig, f.env, "il messaggio non ha una firma di un gestore di posta certificata")
	case KindAccettazione:
		m, err = bd.Accettazione(f.ref, f.tx)
	case KindNonAccettazione:
		m, err = bd.NonAccettazione(f.ref, f.tx, &FormalError{Reason: ReasonBcc})
	case KindNonAccettazioneVirus:
		m, err = bd.NonAccettazioneVirus(f.ref, f.tx, "Eicar-Signature")
	case KindPresaInCarico:
		m, err = bd.PresaInCarico(f.ref, f.tx, "ricevute@pec-b.test", []string{"bruno@pec-b.test", "bianca@pec-b.test"})
	case KindRilevazioneVirus:
		m, err = bd.RilevazioneVirus(f.ref, f.tx, "ricevute@pec-b.test", "bruno@pec-b.test", "Eicar-Signature")
	case KindMancataConsegnaVirus:
		m, err = bd.MancataConsegnaVirus(f.ref, f.tx, "bruno@pec-b.test", "Eicar-Signature")
	case KindConsegnaCompleta, KindConsegnaBreve, KindConsegnaSintetica:
		tx := *f.tx
		tx.Receipt = map[Kind]daticert.ReceiptType{KindConsegnaCompleta: daticert.Completa, KindConsegnaBreve: daticert.Breve, KindConsegnaSintetica: daticert.Sintetica}[k]
		m, err = bd.Consegna(f.ref, &tx, "bruno@pec-b.test", true, PostacertEML(f.orig, f.tx.ID))
		if err == nil && m.Kind != k {
			t.Fatalf("BuildConsegna built %s, want %s", m.Kind, k)
		}
	case KindMancataConsegna:
		m, err = bd.MancataConsegna(f.ref, f.tx, "nessuno@pec-b.test", daticert.ErroreNoDest, DeliveryErrorText("5.1.1", f.p.Name, "indirizzo non valido"))
	case KindPreavviso12h:
		m, err = bd.Preavviso(f.ref, f.tx, "bruno@pec-b.test", 12)
	case KindPreavviso24h:
		m, err = bd.Preavviso(f.ref, f.tx, "bruno@pec-b.test", 24)
	default:
		t.Fatalf("no builder for %s", k)
	}
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return m.Bytes()
}

func opensslVerify(t *testing.T, ca []byte, msg []byte) {
	t.Helper()
	dir := t.TempDir()
	caf, mf := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(caf, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mf, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "cms", "-verify", "-in", mf, "-CAfile", caf, "-purpose", "any", "-out", os.DevNull).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
}

func TestBuildersSignedAndOpenSSLVerifies(t *testing.T) {
	f := newFix(t, time.Now())
	for _, k := range Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			msg := f.build(t, k, Options{HTML: k == KindAccettazione})
			opensslVerify(t, f.kr.CA.PEM(), msg)
			info := k.Info()
			h, _, err := SplitHeader(msg)
			if err != nil {
				t.Fatal(err)
			}
			if v, _ := h.Get(info.Header); v != info.Value {
				t.Errorf("%s = %q, want %q", info.Header, v, info.Value)
			}
			if v, _ := h.Get("Subject"); !strings.HasPrefix(v, info.Prefix) {
				t.Errorf("Subject %q lacks prefix %q", v, info.Prefix)
			}
			if bytes.Contains(msg, []byte("\n")) && bytes.Count(msg, []byte("\n")) != bytes.Count(msg, []byte("\r\n")) {
				t.Error("bare LF in output")
			}
		})
	}
}

func TestBustaPostacertByteExact8bit(t *testing.T) {
	f := newFix(t, time.Now())
	msg := f.build(t, KindBusta, Options{})
	want := PostacertEML(f.orig, f.tx.ID)
	if !bytes.Contains(msg, want) {
		t.Fatal("postacert.eml not byte for byte in the busta")
	}
	if !bytes.Contains(want, []byte("perch\xc3\xa8 cos\xc3\xac")) {
		t.Fatal("8-bit body changed")
	}
	if !bytes.Contains(msg, []byte("Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\nContent-Transfer-Encoding: 8bit\r\n")) {
		t.Fatal("postacert part not 8bit")
	}
	// Only the Message-ID changed; X-Riferimento-Message-ID was added after it.
	exp := strings.Replace(origMsg, "Message-ID: <orig.1@client.example>\r\n", "Message-ID: <"+f.tx.ID+">\r\nX-Riferimento-Message-ID: <orig.1@client.example>\r\n", 1)
	if string(want) != exp {
		t.Fatalf("postacert:\n%q\nwant\n%q", want, exp)
	}
}

// TestBustaSharesOriginal (issue 19, P6): the busta of a large message holds the original's
// body where it is, not a copy (one part is the very slice), its parts joined are the message
// openssl verifies, and building it allocates a small fraction of the message.
func TestBustaSharesOriginal(t *testing.T) {
	f := newFix(t, time.Now())
	orig, err := ParseOriginal(benchOriginal(4 << 20))
	if err != nil {
		t.Fatal(err)
	}
	tx := NewTransaction(f.tx.ID, orig, []Recipient{{Addr: "bruno@pec-b.test"}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m, err := (&Builder{ID: f.p, Keys: f.kr}).Busta(f.ref, tx, orig)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	shared := false
	for _, p := range m.Parts {
		shared = shared || (len(p) == len(orig.Body) && &p[0] == &orig.Body[0])
	}
	if !shared {
		t.Errorf("no part of the busta is the original's body (%d parts)", len(m.Parts))
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > uint64(len(orig.Raw))/4 {
		t.Errorf("building the busta of a %d-byte message allocated %d bytes", len(orig.Raw), got)
	}
	if m.Len() != len(m.Bytes()) {
		t.Errorf("Len %d, Bytes %d", m.Len(), len(m.Bytes()))
	}
	opensslVerify(t, f.kr.CA.PEM(), m.Bytes())
}
