//go:build integration

package integration

// End-to-end tests of the delivery point (issue 14) against the lab in PEC wiring: alice at
// A sends through A's access point; the busta crosses to B's MX and Postfix delivers it to
// B's pec-lmtpd, which hands it to B's Dovecot and emits the avvenuta consegna or the avviso
// di mancata consegna; the receipt comes back to alice through B's outbox, B's Postfix, A's
// MX and A's pec-lmtpd. Each test has its own subject token.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// withAttachments is an original with a text part and two named attachments (base64 and
// 7bit), so that a breve receipt has two .hash parts.
func withAttachments(token string, hdr ...string) []byte {
	h := append(hdr, "Subject: PEC "+token, "Message-ID: <"+token+"@client.example>",
		"Date: "+time.Now().Format(time.RFC1123Z), "MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="=_b1"`)
	body := "--=_b1\nContent-Type: text/plain; charset=utf-8\n\nIn allegato il contratto e le note.\n" +
		"--=_b1\nContent-Type: application/pdf; name=\"contratto.pdf\"\nContent-Disposition: attachment; filename=\"contratto.pdf\"\n" +
		"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCkJU\nCi9GMSAxMiBUZgplbmRzdHJlYW0KZW5kb2JqCg==\n" +
		"--=_b1\nContent-Type: text/plain; charset=us-ascii; name=\"note.txt\"\nContent-Disposition: attachment; filename=\"note.txt\"\n" +
		"Content-Transfer-Encoding: 7bit\n\nPrima riga delle note.\nSeconda riga.\n--=_b1--\n"
	return raw(body, h...)
}

// verifyEmitted checks a message we emitted the way the project requires of every one:
// pecctl verify and openssl smime -verify against the lab CA (classify), and its daticert.xml
// against the DTD with xmllint.
func verifyEmitted(t *testing.T, l *lab.Lab, msg []byte, want pec.Kind) *pec.Classified {
	t.Helper()
	c := classify(t, l, msg, want)
	f := filepath.Join(t.TempDir(), "daticert.xml")
	if err := os.WriteFile(f, c.DaticertRaw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xmllint", "--noout", "--dtdvalid", corpus.DTD(), f).CombinedOutput(); err != nil {
		t.Errorf("xmllint --dtdvalid: %v\n%s", err, out)
	}
	return c
}

// received is a message read back from a mailbox, with its classification.
type received struct {
	raw []byte
	c   *pec.Classified
}

// byKind waits until mb holds at least n messages with token whose kind is one of kinds, and
// returns those messages (any other message with token, the accettazione included, is left
// out).
func byKind(t *testing.T, mb mailtest.Mailbox, token string, n int, kinds ...pec.Kind) []received {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, err := mb.WaitFor(ctx, token, 0)
		cancel()
		var out []received
		for _, m := range msgs {
			c := pec.Classify(m, pec.ClassifyOptions{})
			for _, k := range kinds {
				if c.Kind == k {
					out = append(out, received{m, c})
				}
			}
		}
		if err == nil && len(out) >= n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d messages of kinds %v with %s after %v, want %d (last error %v)", mb.User, len(out), kinds, token, deliveryDeadline, n, err)
		}
		time.Sleep(time.Second)
	}
}

// settle waits a little and checks that the count of such messages did not grow: a
// duplicate would arrive right behind the first.
func settle(t *testing.T, mb mailtest.Mailbox, token string, n int, kinds ...pec.Kind) []received {
	t.Helper()
	time.Sleep(3 * time.Second)
	got := byKind(t, mb, token, n, kinds...)
	if len(got) != n {
		t.Fatalf("%s: %d messages of kinds %v with %s, want exactly %d", mb.User, len(got), kinds, token, n)
	}
	return got
}

// rawParts reads a multipart entity with the standard library (independently of package
// pec): the body octets of each named part as they appear between the part's header and the
// CRLF before the next delimiter, by name.
func rawParts(t *testing.T, entity []byte) map[string][]byte {
	t.Helper()
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(entity)))
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		t.Fatalf("not multipart: %q", hdr.Get("Content-Type"))
	}
	mr := multipart.NewReader(tp.R, params["boundary"])
	out := map[string][]byte{}
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		if name := p.FileName(); name != "" {
			out[name] = b
		}
	}
}

// Alice at A writes To bruno and Cc bianca at B asking for breve: each recipient has the busta
// once; alice finds one consegna per recipient, breve for the To recipient (its .hash parts
// are the SHA-1 of the attachments in the busta's postacert.eml, recomputed here) and
// sintetica for the Cc one; B's log has one avvenuta-consegna event each.
func TestDeliveryConsegnaBreveAndSintetica(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno, bianca := user(t, a, "alice"), user(t, b, "bruno"), user(t, b, "bianca")
	token := mailtest.Token("dp")
	orig := withAttachments(token, "From: Alice <"+alice.Address+">", "To: "+bruno.Address, "Cc: "+bianca.Address,
		"X-TipoRicevuta: breve")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address, bianca.Address}, orig); err != nil {
		t.Fatal(err)
	}
	var busta *pec.Classified
	for _, mb := range []mailtest.Mailbox{mailbox(b, bruno), mailbox(b, bianca)} {
		busta = classify(t, l, waitOne(t, mb, token), pec.KindBusta)
	}
	id := busta.Daticert.Dati.Identificativo
	got := settle(t, mailbox(a, alice), token, 2, pec.KindConsegnaBreve, pec.KindConsegnaSintetica, pec.KindConsegnaCompleta)
	want := map[string]pec.Kind{bruno.Address: pec.KindConsegnaBreve, bianca.Address: pec.KindConsegnaSintetica}
	for _, m := range got {
		rcpt := m.c.Daticert.Dati.Consegna
		c := verifyEmitted(t, l, m.raw, want[rcpt])
		if c.Daticert.Dati.Identificativo != id || c.Daticert.Dati.Ricevuta != daticert.Breve {
			t.Errorf("%s: consegna of %s, ricevuta %s; busta %s", rcpt, c.Daticert.Dati.Identificativo, c.Daticert.Dati.Ricevuta, id)
		}
		if from, _ := c.Header.Get("From"); from != b.ServiceAddress {
			t.Errorf("%s: From %q", rcpt, from)
		}
		if c.Kind != pec.KindConsegnaBreve {
			continue
		}
		hashes, orig := rawParts(t, c.Postacert), rawParts(t, busta.Postacert)
		if len(hashes) != 2 {
			t.Errorf("breve has parts %v, want contratto.pdf.hash and note.txt.hash", keys(hashes))
		}
		for _, name := range []string{"contratto.pdf", "note.txt"} {
			sum := sha1.Sum(orig[name])
			if len(orig[name]) == 0 || strings.TrimSpace(string(hashes[name+".hash"])) != hex.EncodeToString(sum[:]) {
				t.Errorf("%s.hash = %q, want SHA-1 %x of the %d encoded bytes in the busta", name, hashes[name+".hash"], sum, len(orig[name]))
			}
		}
	}
	events := map[string]int{}
	for _, e := range logEvents(t, b, id, "") {
		if e.Kind == store.KindConsegna {
			for _, r := range e.About {
				events[r]++
			}
		}
	}
	if events[bruno.Address] != 1 || events[bianca.Address] != 1 {
		t.Errorf("B's avvenuta-consegna events by recipient: %v", events)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Without X-TipoRicevuta the To recipient's consegna is completa: its postacert.eml is the
// busta's, byte for byte.
func TestDeliveryConsegnaCompleta(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	token := mailtest.Token("dc")
	orig := withAttachments(token, "From: "+alice.Address, "To: "+bruno.Address)
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig); err != nil {
		t.Fatal(err)
	}
	busta := classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
	got := settle(t, mailbox(a, alice), token, 1, pec.KindConsegnaCompleta, pec.KindConsegnaBreve, pec.KindConsegnaSintetica)
	c := verifyEmitted(t, l, got[0].raw, pec.KindConsegnaCompleta)
	if !bytes.Equal(c.Postacert, busta.Postacert) {
		t.Errorf("the completa's postacert.eml (%d bytes) differs from the busta's (%d bytes)", len(c.Postacert), len(busta.Postacert))
	}
}

// A recipient Dovecot does not know and one whose mailbox is full: Postfix accepts both at
// B's MX (no RCPT-time refusal), Dovecot refuses them (550 5.1.1, 552 5.2.2) to pec-lmtpd,
// and alice gets one avviso di mancata consegna each with the right errore and errore-esteso,
// and no DSN; nothing is stored in the full mailbox.
func TestDeliveryMancataConsegna(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, piena := user(t, a, "alice"), user(t, b, "piena")
	nessuno := "nessuno-" + mailtest.Token("x")[2:10] + "@" + b.Domain
	token := mailtest.Token("dm")
	orig := raw("Prova.\n", "From: "+alice.Address, "To: "+nessuno+", "+piena.Address, "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{nessuno, piena.Address}, orig); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		errore daticert.Errore
		esteso string
	}{
		nessuno:       {daticert.ErroreNoDest, "5.1.1 - " + b.Name + " - indirizzo non valido"},
		piena.Address: {daticert.ErroreAltro, "5.2.2 - " + b.Name + " - casella piena"},
	}
	for _, m := range settle(t, mailbox(a, alice), token, 2, pec.KindMancataConsegna) {
		c := verifyEmitted(t, l, m.raw, pec.KindMancataConsegna)
		w, ok := want[c.Daticert.Dati.Consegna]
		if !ok || c.Daticert.Errore != w.errore || c.Daticert.Dati.ErroreEsteso != w.esteso {
			t.Errorf("avviso for %s: errore %s, errore-esteso %q; want %+v", c.Daticert.Dati.Consegna, c.Daticert.Errore, c.Daticert.Dati.ErroreEsteso, w)
		}
		delete(want, c.Daticert.Dati.Consegna)
	}
	if len(want) != 0 {
		t.Errorf("no avviso for %v", want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if msgs, err := mailbox(a, alice).WaitFor(ctx, "Undelivered", 0); err != nil || len(msgs) > 0 {
		for _, m := range msgs {
			if bytes.Contains(m, []byte(token)) {
				t.Errorf("alice got a DSN for %s", token)
			}
		}
	}
	if msgs, err := mailbox(b, piena).WaitFor(ctx, token, 0); err != nil || len(msgs) != 0 {
		t.Errorf("the full mailbox holds %d messages with %s (%v)", len(msgs), token, err)
	}
}

// The same receipt delivered twice to a mailbox shows once: the consegna alice got is sent to
// A's MX again, as B would resend it after a crash; A's delivery point acknowledges it and
// stores nothing.
func TestDeliverySameReceiptTwice(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	token := mailtest.Token("dr")
	orig := raw("Prova.\n", "From: "+alice.Address, "To: "+bruno.Address, "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>", "X-TipoRicevuta: sintetica")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig); err != nil {
		t.Fatal(err)
	}
	m := settle(t, mailbox(a, alice), token, 1, pec.KindConsegnaSintetica)[0]
	receipt := verifyEmitted(t, l, m.raw, pec.KindConsegnaSintetica)
	mid, _ := receipt.Header.Get("Message-ID")
	stored := m.raw
	// Dovecot added Return-Path and Delivered-To and its Received: resend what B sent.
	sent := stripDelivery(stored)
	mx := mailtest.Submission{Addr: a.Postfix.MX, LocalAddr: b.IP}
	if err := mx.Send(b.ServiceAddress, []string{alice.Address}, sent); err != nil {
		t.Fatal(err)
	}
	waitLog(t, a.Logs["pec-lmtpd"], strings.Trim(mid, "<>"), pec.DeliveredDuplicate)
	settle(t, mailbox(a, alice), token, 1, pec.KindConsegnaSintetica)
}

// stripDelivery removes the fields Dovecot adds on delivery (Return-Path, Delivered-To, and
// the Received fields above the message's own).
func stripDelivery(msg []byte) []byte {
	h, body, _ := pec.SplitHeader(msg)
	var b bytes.Buffer
	for _, f := range h {
		switch strings.ToLower(f.Name) {
		case "return-path", "delivered-to", "received":
			continue
		}
		b.Write(f.Raw)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// waitLog waits until a log line holds both strings.
func waitLog(t *testing.T, file, a, b string) {
	t.Helper()
	deadline := time.Now().Add(deliveryDeadline)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(file)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, a) && strings.Contains(line, `"`+b+`"`) {
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: no line with %s and %q within %v", file, a, b, deliveryDeadline)
}
