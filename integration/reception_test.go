//go:build integration

package integration

// End-to-end tests of the reception point (issue 13) against the lab in PEC wiring: real
// Postfix MX listeners with pec-milter, SoftHSM2, slapd, clamd, Dovecot. Messages other
// providers (or the Internet) would send are injected at B's MX over SMTP from another
// system's address; the tokens that find them again ride in the Subject or, for signed messages
// a test must not touch, in the EHLO name Postfix writes into its Received field.

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/store"
)

// A busta from A to two users of B and one of A: B takes charge once, with one presa in carico
// listing its two recipients, to A's mailReceipt; A's own reception point takes charge for its
// own user (same-provider mail takes the same path); A's tracking records all three.
func TestReceptionBustaTakenInCharge(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, anna, bruno, bianca, ricevuteA := user(t, a, "alice"), user(t, a, "anna"), user(t, b, "bruno"), user(t, b, "bianca"), user(t, a, "ricevute")
	token := mailtest.Token("rx")
	rcpts := []string{bruno.Address, bianca.Address, anna.Address}
	orig := raw("Buongiorno.\n", "From: "+alice.Address, "To: "+strings.Join(rcpts, ", "), "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>", "Date: "+time.Now().Format(time.RFC1123Z))
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, rcpts, orig); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, mb := range []mailtest.Mailbox{mailbox(b, bruno), mailbox(b, bianca), mailbox(a, anna)} {
		c := classify(t, l, waitOne(t, mb, token), pec.KindBusta)
		if id != "" && c.Daticert.Dati.Identificativo != id {
			t.Errorf("%s got busta %s, others %s", mb.User, c.Daticert.Dati.Identificativo, id)
		}
		id = c.Daticert.Dati.Identificativo
	}
	// A's service mailbox: exactly two prese in carico, B's for its two users, A's for anna.
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	if _, err := mailbox(a, ricevuteA).WaitFor(ctx, token, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a third would arrive right behind
	got, err := mailbox(a, ricevuteA).WaitFor(ctx, token, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("%d prese in carico at %s (%v), want 2", len(got), ricevuteA.Address, err)
	}
	byGestore := map[string][]string{}
	for _, m := range got {
		c := emitted(t, l, m, pec.KindPresaInCarico)
		if c.Daticert.Dati.Identificativo != id {
			t.Errorf("presa in carico for %s", c.Daticert.Dati.Identificativo)
		}
		r := slices.Clone(c.Daticert.Dati.Ricezione)
		slices.Sort(r)
		byGestore[c.Daticert.Dati.GestoreEmittente] = r
		if to, _ := c.Header.Get("To"); to != ricevuteA.Address {
			t.Errorf("presa in carico To %q", to)
		}
	}
	if strings.Join(byGestore[b.Name], ",") != bianca.Address+","+bruno.Address || strings.Join(byGestore[a.Name], ",") != anna.Address {
		t.Errorf("prese in carico by gestore: %v", byGestore)
	}
	// A's tracking: every recipient's presa in carico recorded.
	st := openStore(t, a.ConfigFile)
	deadline := time.Now().Add(deliveryDeadline)
	for {
		rows, err := st.Tracking(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		taken := 0
		for _, r := range rows {
			if !r.TakenAt.IsZero() {
				taken++
			}
		}
		if len(rows) == 3 && taken == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's tracking of %s: %+v", id, rows)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// B's log: the busta received and one presa in carico issued.
	kinds := map[store.EventKind]int{}
	for _, e := range logEvents(t, b, id, "") {
		kinds[e.Kind]++
	}
	if kinds[store.KindRicezioneBusta] != 1 || kinds[store.KindPresaInCarico] != 1 {
		t.Errorf("B's log for %s: %v", id, kinds)
	}
}

// The sending MTA retried a busta B had already queued: B discards the copy; each mailbox has
// it once and A's mailReceipt one presa in carico.
func TestReceptionSameBustaTwice(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno, ricevuteA := user(t, a, "alice"), user(t, b, "bruno"), user(t, a, "ricevute")
	token := mailtest.Token("twice")
	orig := raw("x\n", "From: "+alice.Address, "To: "+bruno.Address, "Subject: PEC "+token, "Message-ID: <"+token+"@client.example>")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig); err != nil {
		t.Fatal(err)
	}
	busta := asSent(waitOne(t, mailbox(b, bruno), token))
	id := classify(t, l, busta, pec.KindBusta).Daticert.Dati.Identificativo
	waitOne(t, mailbox(a, ricevuteA), token)
	// The same bytes again at B's MX, as A's Postfix would resend them after a lost reply.
	if err := inject(b.Postfix.MX, a, "mx."+a.Domain, alice.Address, []string{bruno.Address}, busta); err != nil {
		t.Fatalf("the retry was not accepted: %v", err)
	}
	time.Sleep(5 * time.Second)
	waitOne(t, mailbox(b, bruno), token)
	waitOne(t, mailbox(a, ricevuteA), token)
	kinds := map[store.EventKind]int{}
	for _, e := range logEvents(t, b, id, "") {
		kinds[e.Kind]++
	}
	if kinds[store.KindPresaInCarico] != 1 || kinds[store.KindRicezioneBusta] != 1 {
		t.Errorf("B's log for %s: %v", id, kinds)
	}
}

// An EICAR inside a busta signed by A (A's antivirus missed it): B delivers nothing, A's
// mailReceipt gets one avviso di rilevazione virus per recipient, B's quarantine holds the
// busta; A's reception point turns each rilevazione into one avviso di mancata consegna per
// virus to A's sender (RFC 6109 §3.2.4, issue 15 item 2) and closes that recipient's tracking.
// A's tracking rows are inserted as A's access point inserts them when Postfix queues a busta.
func TestReceptionVirusInBusta(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	// 300 KiB of text before the attachment: the reception point scans postacert.eml apart
	// from the rest of the busta from 256 KiB on (pec.Engine.scanReceived).
	for name, pad := range map[string]int{"small": 0, "large": 300 << 10} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			virusInBusta(t, l, a, b, pad)
		})
	}
}

// virusInBusta is TestReceptionVirusInBusta with pad bytes of text before the attachment.
func virusInBusta(t *testing.T, l *lab.Lab, a, b *lab.Provider, pad int) {
	alice, bruno, bianca, ricevuteA := user(t, a, "alice"), user(t, b, "bruno"), user(t, b, "bianca"), user(t, a, "ricevute")
	token := mailtest.Token("virus")
	text := "fattura\n" + strings.Repeat("0123456789012345678901234567890123456789\n", pad/41)
	rcpts := []string{bruno.Address, bianca.Address}
	m, tx := bustaOf(t, providerBuilder(t, l, a), "alice@"+a.Domain, rcpts, token,
		"--b0\nContent-Type: text/plain\n\n"+text+"--b0\nContent-Type: application/octet-stream; name=\"f.com\"\n"+
			"Content-Disposition: attachment; filename=\"f.com\"\n\n"+clamdtest.EICAR+"\n--b0--\n",
		"MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"b0\"")
	ast := openStore(t, a.ConfigFile)
	tb := &store.Batch{}
	for _, r := range rcpts {
		tb.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: r, SentAt: time.Now(), Sender: alice.Address, Subject: "PEC " + token,
			Data: pec.Classify(m.Bytes(), pec.ClassifyOptions{}).DaticertRaw})
	}
	if err := ast.Commit(context.Background(), tb); err != nil {
		t.Fatal(err)
	}
	if err := inject(b.Postfix.MX, a, "mx."+a.Domain, "alice@"+a.Domain, rcpts, m.Bytes()); err != nil {
		t.Fatalf("an infected busta is accepted and discarded, not refused: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	got, err := mailbox(a, ricevuteA).WaitFor(ctx, token, 2)
	if err != nil {
		t.Fatal(err)
	}
	about := map[string]bool{}
	for _, msg := range got {
		c := emitted(t, l, msg, pec.KindRilevazioneVirus)
		about[c.Daticert.Dati.Consegna] = true
		if c.Daticert.Dati.Identificativo != tx.ID || !strings.Contains(c.Daticert.Dati.ErroreEsteso, "EICAR") || c.Postacert != nil {
			t.Errorf("rilevazione virus: %+v", c.Daticert.Dati)
		}
	}
	if len(got) != 2 || !about[bruno.Address] || !about[bianca.Address] {
		t.Errorf("%d rilevazioni about %v", len(got), about)
	}
	// A's sender: exactly one avviso di mancata consegna per virus per recipient.
	if _, err := mailbox(a, alice).WaitFor(ctx, token, 2); err != nil {
		t.Fatal(err)
	}
	none(t, mailbox(b, bruno), token) // also the settle time for a third avviso
	none(t, mailbox(b, bianca), token)
	avvisi, err := mailbox(a, alice).WaitFor(ctx, token, 2)
	if err != nil || len(avvisi) != 2 {
		t.Fatalf("%d messages for %s (%v), want 2 avvisi di mancata consegna per virus", len(avvisi), alice.Address, err)
	}
	for _, msg := range avvisi {
		c := emitted(t, l, msg, pec.KindMancataConsegnaVirus)
		if v, _ := c.Header.Get("X-VerificaSicurezza"); v != "errore" || c.Daticert.Dati.Identificativo != tx.ID {
			t.Errorf("avviso per virus: X-VerificaSicurezza %q, %+v", v, c.Daticert.Dati)
		}
		delete(about, c.Daticert.Dati.Consegna)
	}
	if len(about) != 0 {
		t.Errorf("no avviso per virus about %v", about)
	}
	rows, err := ast.Tracking(context.Background(), tx.ID)
	if err != nil || len(rows) != 2 || rows[0].State != store.StateFailed || rows[1].State != store.StateFailed {
		t.Errorf("A's tracking of %s: %+v %v", tx.ID, rows, err)
	}
	q, err := openStore(t, b.ConfigFile).Quarantined(context.Background(), tx.ID)
	if err != nil || len(q) != 1 || !strings.Contains(q[0].Virus, "EICAR") || !strings.Contains(string(q[0].Raw), string(m.Bytes()[len(m.Bytes())-200:])) {
		t.Fatalf("B's quarantine for %s: %d items, %v", tx.ID, len(q), err)
	}
}

// What is not a valid PEC message reaches the mailbox as a busta di anomalia signed by B, with
// the reason in B's log: ordinary mail from O, a DSN, a busta with one byte changed, a busta
// re-signed by a certificate not in the index, one signed by a revoked certificate, a receipt
// claiming a domain its signer does not manage, an unsigned message with X-Ricevuta.
func TestReceptionAnomalies(t *testing.T) {
	t.Parallel()
	l, a, b, o := pecLab(t)
	alice, bruno, bianca, oscar := user(t, a, "alice"), user(t, b, "bruno"), user(t, b, "bianca"), user(t, o, "oscar")
	// A genuine busta and accettazione of A, as delivered, to alter.
	gtok := mailtest.Token("genuine")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address},
		raw("Testo genuino.\n", "From: "+alice.Address, "To: "+bruno.Address, "Subject: PEC "+gtok, "Message-ID: <"+gtok+"@client.example>")); err != nil {
		t.Fatal(err)
	}
	genuine := asSent(waitOne(t, mailbox(b, bruno), gtok))
	acc := asSent(waitOne(t, mailbox(a, alice), "ACCETTAZIONE: PEC "+gtok))
	bst := openStore(t, b.ConfigFile)

	for _, tc := range []struct {
		name, reason string
		from         string // envelope sender
		msg          func(tok string) []byte
	}{
		{"one byte changed", "signature", alice.Address, func(tok string) []byte {
			i := strings.Index(string(genuine), "Testo genuino.")
			if i < 0 {
				t.Fatal("no text to change")
			}
			m := []byte(strings.Replace(string(genuine), "Subject: POSTA CERTIFICATA: PEC "+gtok, "Subject: POSTA CERTIFICATA: PEC "+tok, 1))
			i = strings.Index(string(m), "Testo genuino.")
			m[i+6] = 'G'
			return m
		}},
		{"re-signed by a certificate not in the index", "signer-unlisted", alice.Address, func(tok string) []byte {
			m, _ := bustaOf(t, signerBuilder(t, l, "f"), alice.Address, []string{bruno.Address}, tok, "falso\n")
			return m.Bytes()
		}},
		{"revoked certificate", "revoked", "rita@pec-r.test", func(tok string) []byte {
			m, _ := bustaOf(t, signerBuilder(t, l, "r"), "rita@pec-r.test", []string{bruno.Address}, tok, "revocato\n")
			return m.Bytes()
		}},
		{"receipt for a domain its signer does not manage", "from-domain-unmanaged", b.ServiceAddress, func(tok string) []byte {
			m := strings.Replace(string(acc), "From: "+a.ServiceAddress, "From: "+b.ServiceAddress, 1)
			return []byte(strings.Replace(m, "ACCETTAZIONE: PEC "+gtok, "ACCETTAZIONE: PEC "+tok, 1))
		}},
		{"unsigned with X-Ricevuta", "pec-headers-unsigned", a.ServiceAddress, func(tok string) []byte {
			return raw("consegnato\n", "From: "+a.ServiceAddress, "To: "+bruno.Address, "Subject: CONSEGNA: PEC "+tok, "X-Ricevuta: avvenuta-consegna")
		}},
		{"dsn", "dsn", "", func(tok string) []byte {
			return raw("--r\nContent-Type: text/plain\n\nDelivery failed.\n--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.posta.test\n\nFinal-Recipient: rfc822; nobody@posta.test\nAction: failed\nStatus: 5.1.1\n--r--\n",
				"From: MAILER-DAEMON@posta.test", "To: "+bruno.Address, "Subject: Undelivered Mail Returned to Sender "+tok,
				"MIME-Version: 1.0", "Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := mailtest.Token("anom")
			msg := tc.msg(tok)
			// To bianca: an anomaly keeps the Message-ID of what it wraps, the altered busta has
			// the genuine one's, and the delivery point stores a system message once per mailbox
			// (bruno already holds the genuine busta).
			if err := inject(b.Postfix.MX, o, heloToken("rx"), tc.from, []string{bianca.Address}, msg); err != nil {
				t.Fatalf("policy anomaly: accepted and wrapped, not refused: %v", err)
			}
			an := waitOne(t, mailbox(b, bianca), tok)
			c := anomalyOf(t, l, an, pec.ToCRLF(msg))
			if s, _ := c.Header.Get("Subject"); !strings.HasPrefix(s, "ANOMALIA MESSAGGIO: ") {
				t.Errorf("Subject %q", s)
			}
			ev := anomalyEvent(t, bst, store.KindBustaAnomalia, func(e *store.Event) bool { return strings.Contains(e.Subject, tok) })
			if !strings.HasPrefix(ev.ErrorDetail, tc.reason+": ") {
				t.Errorf("logged reason %q, want %s", ev.ErrorDetail, tc.reason)
			}
		})
	}

	// Ordinary mail from O through O's own Postfix: wrapped, and no receipt goes back to oscar.
	t.Run("ordinary mail from O", func(t *testing.T) {
		tok := mailtest.Token("ordinary")
		msg := mailtest.Message(oscar.Address, []string{bruno.Address}, "ciao "+tok, "Posta ordinaria.\n")
		if err := tlsSubmission(t, o, &oscar).Send(oscar.Address, []string{bruno.Address}, msg); err != nil {
			t.Fatal(err)
		}
		anomalyOf(t, l, waitOne(t, mailbox(b, bruno), tok), nil)
		ev := anomalyEvent(t, bst, store.KindBustaAnomalia, func(e *store.Event) bool { return strings.Contains(e.Subject, tok) })
		if !strings.HasPrefix(ev.ErrorDetail, "ordinary: ") || ev.Sender != oscar.Address {
			t.Errorf("event %+v", ev)
		}
		none(t, mailbox(o, oscar), tok)
	})
}
