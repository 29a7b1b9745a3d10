package pec_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/smime"
	"github.com/gestore-pec/gestore/pec/store"
)

// rxVerify checks a message we emitted: signature with the chain to the fixture CA, kind,
// conformance.
func (fx *rxFix) rxVerify(t *testing.T, raw []byte, want pec.Kind) *pec.Classified {
	t.Helper()
	c := pec.Classify(raw, pec.ClassifyOptions{})
	if _, err := smime.Verify(raw, smime.VerifyOptions{Roots: fx.ca.Pool()}); err != nil {
		t.Fatalf("chain: %v", err)
	}
	if c.Kind != want || !c.Conforms() {
		t.Fatalf("kind %v (want %v), deviations %+v", c.Kind, want, c.Deviations)
	}
	return c
}

func kinds(evs []*store.Event) string {
	var k []string
	for _, e := range evs {
		k = append(k, string(e.Kind))
	}
	return strings.Join(k, ",")
}

// A valid busta for two of our users (and one of another provider, relayed by the sender's
// MTA in another transaction): one presa in carico listing our two recipients, to A's
// mailReceipt, held until Postfix confirms; the sending MTA's retry gets the same
// confirmation, then a discard; nothing twice.
func TestReceiveBustaTakesChargeOnce(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	raw, tx := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test", "bianca@pec-b.test", "oscar@posta.test")
	rcpts := []string{"bruno@pec-b.test", "bianca@pec-b.test"}
	res, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", rcpts...)
	if err != nil {
		t.Fatal(err)
	}
	if res.Class != pec.ClassBusta || res.Outcome != pec.OutcomeAccepted || res.Identificativo != tx.ID ||
		res.Confirm == "" || res.Discard || res.Replace != nil || strings.Join(res.Local, ",") != strings.Join(rcpts, ",") {
		t.Fatalf("result %+v", res)
	}
	if res.Timings.Verify <= 0 || res.Timings.Scan <= 0 || res.Timings.Commit <= 0 {
		t.Errorf("timings %+v", res.Timings)
	}
	if n := len(fx.outbox(t)); n != 0 || len(fx.events(t)) != 0 {
		t.Fatalf("presa in carico released before Postfix queued the busta: %d items, events %s", n, kinds(fx.events(t)))
	}
	// The sending MTA lost our reply and retries: same confirmation, nothing new.
	again, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", rcpts...)
	if err != nil || again.Confirm != res.Confirm || !again.Retry || again.Discard {
		t.Fatalf("retry before confirmation: %+v %v", again, err)
	}
	if _, err := fx.eng.Confirm(context.Background(), res.Confirm); err != nil {
		t.Fatal(err)
	}
	items := fx.outbox(t)
	if len(items) != 1 {
		t.Fatalf("outbox: %d items", len(items))
	}
	it := items[0]
	if it.Kind != "presa-in-carico" || strings.Join(it.Rcpts, ",") != "ricevute@pec-a.test" || it.From != "posta-certificata@pec-b.test" {
		t.Errorf("outbox item %+v", it)
	}
	c := fx.rxVerify(t, it.Raw, pec.KindPresaInCarico)
	if c.Daticert.Dati.Identificativo != tx.ID || strings.Join(c.Daticert.Dati.Ricezione, ",") != strings.Join(rcpts, ",") ||
		c.Daticert.Dati.GestoreEmittente != "Provider B S.p.A." || c.Daticert.Intestazione.Mittente != "alice@pec-a.test" {
		t.Errorf("daticert %+v", c.Daticert)
	}
	if to, _ := c.Header.Get("To"); to != "ricevute@pec-a.test" {
		t.Errorf("To %q", to)
	}
	if k := kinds(fx.events(t)); k != "ricezione-busta,presa-in-carico" {
		t.Errorf("events %s", k)
	}
	// Once Postfix holds the first copy, a retry is discarded: each mailbox gets it once.
	for range 2 {
		dup, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", rcpts...)
		if err != nil || !dup.Discard || dup.Outcome != pec.OutcomeDuplicate || dup.Confirm != "" {
			t.Fatalf("retry after confirmation: %+v %v", dup, err)
		}
	}
	if n := len(fx.outbox(t)); n != 1 || len(fx.events(t)) != 2 {
		t.Errorf("after the retries: %d outbox items, events %s", n, kinds(fx.events(t)))
	}
	if res.Flags != "" {
		t.Errorf("flags %q on a busta without any", res.Flags)
	}
	// Another SMTP transaction of the same busta for another of our recipients: its own
	// presa in carico (one per transaction, RFC 6109 §3.2.1).
	other, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", "bianca@pec-b.test")
	if err != nil || other.Discard || other.Confirm == "" || other.Confirm == res.Confirm {
		t.Fatalf("second transaction: %+v %v", other, err)
	}
}

// A held presa in carico whose busta Postfix never queued expires with a log event and nothing
// attested. The sending MTA's retry after that (through our other MX node, say) gets the same
// confirmation: the first copy may be in a Postfix that was down past the expiry, and the
// busta must get one presa in carico whichever copy is confirmed, however late.
func TestReceiveBustaNeverQueued(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	raw, _ := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	res, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", "bruno@pec-b.test")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := fx.st.ExpireHeld(context.Background(), time.Now().Add(2*time.Hour), 10); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
	if k := kinds(fx.events(t)); k != "non-accodato" || len(fx.outbox(t)) != 0 {
		t.Fatalf("events %s", k)
	}
	again, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", "bruno@pec-b.test")
	if err != nil || !again.Retry || again.Confirm != res.Confirm || again.Discard {
		t.Fatalf("after expiry: %+v %v (first %s)", again, err, res.Confirm)
	}
	for _, c := range []string{again.Confirm, res.Confirm} { // the retry's copy, then the late first one
		if _, err := fx.eng.Confirm(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	if items := fx.outbox(t); len(items) != 1 || items[0].Kind != "presa-in-carico" {
		t.Fatalf("outbox after both confirmations: %+v, want one presa in carico", items)
	}
	if k := kinds(fx.events(t)); strings.Count(k, "presa-in-carico") != 1 || !strings.HasPrefix(k, "non-accodato") {
		t.Fatalf("events %s", k)
	}
	if third, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", "bruno@pec-b.test"); err != nil || !third.Discard {
		t.Fatalf("retry once released: %+v %v", third, err)
	}
}

// An EICAR inside a valid busta: not delivered (discard), one rilevazione virus per local
// recipient to A's mailReceipt, the busta in quarantine, all committed before the answer; the
// retry changes nothing.
func TestReceiveBustaVirus(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	tx, _ := fx.tx(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test", "bianca@pec-b.test")
	orig, _ := pec.ParseOriginal(rxMsg("From: alice@pec-a.test", "To: bruno@pec-b.test, bianca@pec-b.test", "Subject: fattura", "X-Payload: "+clamdtest.EICAR))
	m, err := fx.a.bd.Busta(ref(), tx, orig)
	if err != nil {
		t.Fatal(err)
	}
	rcpts := []string{"bruno@pec-b.test", "bianca@pec-b.test"}
	for i := range 2 {
		res, err := fx.receive(t, fx.eng, m.Bytes(), "alice@pec-a.test", rcpts...)
		if err != nil || !res.Discard || res.Confirm != "" || res.Virus != clamdtest.EICARName {
			t.Fatalf("attempt %d: %+v %v", i, res, err)
		}
		if (i == 0) != (res.Outcome == pec.OutcomeVirus) || (i == 1) != res.Retry {
			t.Errorf("attempt %d: outcome %s retry %v", i, res.Outcome, res.Retry)
		}
	}
	items := fx.outbox(t)
	if len(items) != 2 {
		t.Fatalf("%d outbox items", len(items))
	}
	seen := map[string]bool{}
	for _, it := range items {
		c := fx.rxVerify(t, it.Raw, pec.KindRilevazioneVirus)
		seen[c.Daticert.Dati.Consegna] = true
		if strings.Join(it.Rcpts, ",") != "ricevute@pec-a.test" || c.Daticert.Errore != daticert.ErroreVirus ||
			!strings.Contains(c.Daticert.Dati.ErroreEsteso, clamdtest.EICARName) || c.Postacert != nil {
			t.Errorf("rilevazione %+v", c.Daticert)
		}
		if x, _ := c.Header.Get("X-Mittente"); x != "alice@pec-a.test" {
			t.Errorf("X-Mittente %q", x)
		}
	}
	if !seen["bruno@pec-b.test"] || !seen["bianca@pec-b.test"] {
		t.Errorf("rilevazioni about %v", seen)
	}
	q, err := fx.st.Quarantined(context.Background(), tx.ID)
	if err != nil || len(q) != 1 || q[0].Virus != clamdtest.EICARName || string(q[0].Raw) != string(m.Bytes()) {
		t.Fatalf("quarantine %d %v", len(q), err)
	}
	if k := kinds(fx.events(t)); k != "ricezione-busta,rilevazione-virus,rilevazione-virus" {
		t.Errorf("events %s", k)
	}
}

// Anything that is not a valid PEC message becomes a busta di anomalia signed by B, with the
// original inside and its reason in the log; no receipt to anyone.
func TestReceiveAnomalies(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	valid, _ := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	tampered := []byte(strings.Replace(string(valid), "Testo della PEC.", "Testo della PEX.", 1))
	forged, _ := fx.busta(t, fx.f, "alice@pec-a.test", "bruno@pec-b.test")
	revoked, _ := fx.busta(t, fx.r, "rita@pec-r.test", "bruno@pec-b.test")
	spoofed, _ := fx.busta(t, fx.a, "mallory@pec-b.test", "bruno@pec-b.test")
	// A presa in carico signed by A about a recipient of B's domain: A does not manage it.
	ptx, _ := fx.tx(t, fx.b, "bruno@pec-b.test", "carla@pec-c.test")
	pic, err := fx.a.bd.PresaInCarico(ref(), ptx, "ricevute@pec-b.test", []string{"carla@pec-c.test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, reason string
		class        string
		msg          []byte
	}{
		{"ordinary", "ordinary", pec.ClassOrdinary, rxMsg("From: oscar@posta.test", "To: bruno@pec-b.test", "Subject: ciao", "Message-ID: <o1@posta.test>")},
		{"dsn", "dsn", pec.ClassOrdinary, rxMsg("From: MAILER-DAEMON@posta.test", "To: bruno@pec-b.test", "Subject: Undelivered Mail Returned to Sender",
			"MIME-Version: 1.0", "Content-Type: multipart/report; report-type=delivery-status; boundary=\"x\"")},
		{"x-ricevuta unsigned", "pec-headers-unsigned", pec.ClassInvalid, rxMsg("From: posta-certificata@pec-a.test", "To: bruno@pec-b.test",
			"Subject: CONSEGNA: prova", "X-Ricevuta: avvenuta-consegna")},
		{"tampered", "signature", pec.ClassInvalid, tampered},
		{"signer not listed", "signer-unlisted", pec.ClassInvalid, forged},
		{"revoked", "revoked", pec.ClassInvalid, revoked},
		{"from not managed", "mittente-domain-unmanaged", pec.ClassInvalid, spoofed},
		{"receipt about another's user", "recipient-domain-unmanaged", pec.ClassInvalid, pic.Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fx.events(t))
			res, err := fx.receive(t, fx.eng, tc.msg, "sender@posta.test", "bruno@pec-b.test")
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != pec.OutcomeAnomaly || res.Reason != tc.reason || res.Class != tc.class || res.Confirm != "" || res.Detail == "" {
				t.Fatalf("result %+v", res)
			}
			c := fx.rxVerify(t, bytes.Join(res.Replace, nil), pec.KindAnomalia)
			if string(c.Postacert) != string(tc.msg) {
				t.Error("the anomaly does not carry the message as received")
			}
			if s, _ := c.Header.Get("Subject"); !strings.HasPrefix(s, "ANOMALIA MESSAGGIO: ") {
				t.Errorf("Subject %q", s)
			}
			evs := fx.events(t)[before:]
			if len(evs) != 1 || evs[0].Kind != store.KindBustaAnomalia || !strings.HasPrefix(evs[0].ErrorDetail, tc.reason+": ") {
				t.Fatalf("events %+v", evs)
			}
		})
	}
	if n := len(fx.outbox(t)); n != 0 {
		t.Errorf("%d messages in the outbox: no receipt may go to an ordinary sender", n)
	}
}

// policy.ordinary_mail reject: refused at SMTP (550 with the reason), logged; infected
// ordinary mail is refused under either policy (554).
func TestReceiveRejectPolicyAndVirus(t *testing.T) {
	for _, policy := range []string{pec.PolicyReject, pec.PolicyAnomaly} {
		fx := newRxFix(t, policy)
		msg := rxMsg("From: oscar@posta.test", "To: bruno@pec-b.test", "Subject: ciao")
		_, err := fx.receive(t, fx.eng, msg, "oscar@posta.test", "bruno@pec-b.test")
		var rej *pec.Rejected
		r := pec.Reply(err)
		switch {
		case policy == pec.PolicyReject:
			if !errors.As(err, &rej) || r.Code != 550 || r.Enhanced != "5.7.1" || !strings.Contains(r.Text, "ordinary") || r.Outcome != pec.OutcomeRejected {
				t.Fatalf("reject policy: %v %+v", err, r)
			}
			evs := fx.events(t)
			if len(evs) != 1 || evs[0].Kind != store.KindAnomalia || !strings.HasPrefix(evs[0].ErrorDetail, "ordinary: ") {
				t.Errorf("events %+v", evs)
			}
		case err != nil:
			t.Fatalf("anomaly policy: %v", err)
		}
		virus := rxMsg("From: oscar@posta.test", "To: bruno@pec-b.test", "Subject: ciao", "X-V: "+clamdtest.EICAR)
		_, err = fx.receive(t, fx.eng, virus, "oscar@posta.test", "bruno@pec-b.test")
		r = pec.Reply(err)
		if policy == pec.PolicyAnomaly && (!errors.As(err, &rej) || rej.Virus != clamdtest.EICARName || r.Code != 554 || r.Outcome != pec.OutcomeVirus) {
			t.Errorf("infected ordinary mail: %v %+v", err, r)
		}
		if len(fx.outbox(t)) != 0 {
			t.Error("a notice was sent to an ordinary sender")
		}
	}
}

// Receipts for our transactions are delivered unchanged and move the tracking of the recipient
// they are about; presa in carico and rilevazione virus go to our service mailbox only; a
// rilevazione virus yields one avviso di mancata consegna per virus to our sender.
func TestReceiveReceipts(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	// Provider A's engine receives B's receipts about alice's busta to bruno and bianca.
	ea := fx.engine(t, fx.a, fx.a.bd.Keys, pec.PolicyAnomaly, nil)
	raw, tx := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test", "bianca@pec-b.test")
	c := pec.Classify(raw, pec.ClassifyOptions{})
	data := daticert.Marshal(c.Daticert)
	b := &store.Batch{}
	for _, r := range []string{"bruno@pec-b.test", "bianca@pec-b.test"} {
		b.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: r, SentAt: time.Now(), Sender: tx.Sender, Data: data})
	}
	if err := fx.st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	state := func(rcpt string) store.State {
		rows, _ := fx.st.Tracking(context.Background(), tx.ID)
		for _, r := range rows {
			if r.Recipient == rcpt {
				return r.State
			}
		}
		return ""
	}
	pic, _ := fx.b.bd.PresaInCarico(ref(), tx, "ricevute@pec-a.test", []string{"bruno@pec-b.test", "bianca@pec-b.test"})
	res, err := fx.receive(t, ea, pic.Bytes(), "posta-certificata@pec-b.test", "ricevute@pec-a.test")
	if err != nil || res.Class != pec.ClassReceipt || res.Kind != pec.KindPresaInCarico || res.Replace != nil || res.Discard || res.Redirect != "" {
		t.Fatalf("presa in carico: %+v %v", res, err)
	}
	if state("bruno@pec-b.test") != store.StateTaken || state("bianca@pec-b.test") != store.StateTaken {
		t.Errorf("after presa in carico: %s %s", state("bruno@pec-b.test"), state("bianca@pec-b.test"))
	}
	// Addressed to a user: redirected to the service mailbox.
	res, err = fx.receive(t, ea, pic.Bytes(), "posta-certificata@pec-b.test", "alice@pec-a.test")
	if err != nil || res.Redirect != "ricevute@pec-a.test" || strings.Join(res.Drop, ",") != "alice@pec-a.test" {
		t.Fatalf("presa in carico to a user: %+v %v", res, err)
	}
	cons, _ := fx.b.bd.Consegna(ref(), tx, "bruno@pec-b.test", true, c.Postacert)
	if res, err = fx.receive(t, ea, cons.Bytes(), "posta-certificata@pec-b.test", "alice@pec-a.test"); err != nil || res.Kind != pec.KindConsegnaCompleta || res.Redirect != "" {
		t.Fatalf("consegna: %+v %v", res, err)
	}
	if state("bruno@pec-b.test") != store.StateDelivered {
		t.Errorf("after consegna: %s", state("bruno@pec-b.test"))
	}
	rv, _ := fx.b.bd.RilevazioneVirus(ref(), tx, "ricevute@pec-a.test", "bianca@pec-b.test", "Win.Test.EICAR")
	for range 2 {
		if res, err = fx.receive(t, ea, rv.Bytes(), "posta-certificata@pec-b.test", "ricevute@pec-a.test"); err != nil || res.Kind != pec.KindRilevazioneVirus {
			t.Fatalf("rilevazione virus: %+v %v", res, err)
		}
	}
	if state("bianca@pec-b.test") != store.StateFailed {
		t.Errorf("after rilevazione virus: %s", state("bianca@pec-b.test"))
	}
	items := fx.outbox(t)
	if len(items) != 1 || strings.Join(items[0].Rcpts, ",") != "alice@pec-a.test" {
		t.Fatalf("outbox %+v", items)
	}
	mcv := fx.rxVerify(t, items[0].Raw, pec.KindMancataConsegnaVirus)
	if mcv.Daticert.Dati.Consegna != "bianca@pec-b.test" || mcv.Daticert.Dati.ErroreEsteso != "virus informatico rilevato: Win.Test.EICAR" ||
		mcv.Daticert.Dati.Identificativo != tx.ID {
		t.Errorf("mancata consegna per virus %+v", mcv.Daticert.Dati)
	}
	if k := kinds(fx.events(t)); k != "ricezione-ricevuta,ricezione-ricevuta,ricezione-ricevuta,ricezione-ricevuta,mancata-consegna-virus,ricezione-ricevuta" {
		t.Errorf("events %s", k)
	}
}

// Every dependency failure is temporary (4xx), commits nothing, and the same message is
// accepted once the dependency is back (the sending MTA retries).
func TestReceiveTemporaryFailures(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	unknownCRL := fx.engine(t, fx.b, fx.signer, pec.PolicyAnomaly, []string{"http://127.0.0.1:1/ca.crl"})
	forged, _ := fx.busta(t, fx.f, "alice@pec-a.test", "bruno@pec-b.test")
	ordinary := rxMsg("From: oscar@posta.test", "To: bruno@pec-b.test", "Subject: ciao")
	for _, tc := range []struct {
		name, op   string
		msg        func() []byte
		eng        *pec.Engine
		brk, heal  func()
		wantAfter  string
		healEngine *pec.Engine
	}{
		{"clamd", "scan", nil, fx.eng, func() { fx.clamd.SetMode(clamdtest.Error) }, func() { fx.clamd.SetMode(clamdtest.Normal) }, pec.OutcomeAccepted, nil},
		{"hsm", "presa-in-carico", nil, fx.eng, func() { fx.signer.mu.Lock(); fx.signer.broken = true; fx.signer.mu.Unlock() },
			func() { fx.signer.mu.Lock(); fx.signer.broken = false; fx.signer.mu.Unlock() }, pec.OutcomeAccepted, nil},
		{"hsm anomaly", "anomalia", func() []byte { return ordinary }, fx.eng, func() { fx.signer.mu.Lock(); fx.signer.broken = true; fx.signer.mu.Unlock() },
			func() { fx.signer.mu.Lock(); fx.signer.broken = false; fx.signer.mu.Unlock() }, pec.OutcomeAnomaly, nil},
		{"store", "commit", nil, fx.eng, func() { fx.st.broken = true }, func() { fx.st.broken = false }, pec.OutcomeAccepted, nil},
		{"stale index", "index", func() []byte { return forged }, fx.eng, func() { fx.idx.stale.Store(true) }, func() { fx.idx.stale.Store(false) }, pec.OutcomeAnomaly, nil},
		{"crl unknown", "revocation", nil, unknownCRL, func() {}, func() {}, pec.OutcomeAccepted, fx.eng},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := func() []byte { raw, _ := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test"); return raw }
			if tc.msg != nil {
				msg = tc.msg
			}
			raw := msg()
			items, evs := len(fx.outbox(t)), len(fx.events(t))
			tc.brk()
			_, err := fx.receive(t, tc.eng, raw, "alice@pec-a.test", "bruno@pec-b.test")
			tc.heal()
			var tmp *pec.Temporary
			if r := pec.Reply(err); !errors.As(err, &tmp) || tmp.Op != tc.op || r.Code != 451 || r.Outcome != pec.OutcomeTempfail {
				t.Fatalf("broken %s: %v (%+v)", tc.name, err, r)
			}
			if len(fx.outbox(t)) != items || len(fx.events(t)) != evs {
				t.Fatal("something was committed by a failed transaction")
			}
			e := tc.eng
			if tc.healEngine != nil {
				e = tc.healEngine
			}
			res, err := fx.receive(t, e, raw, "alice@pec-a.test", "bruno@pec-b.test")
			if err != nil || res.Outcome != tc.wantAfter {
				t.Fatalf("after %s came back: %+v %v", tc.name, res, err)
			}
		})
	}
}

// Recipients that are not ours (relaying from mynetworks) and confirmation recipients of the
// access point (a same-provider busta looped through the MX) are not taken in charge.
func TestReceiveLocalRecipients(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	raw, _ := fx.busta(t, fx.b, "bruno@pec-b.test", "bianca@pec-b.test", "alice@pec-a.test")
	res, err := fx.receive(t, fx.eng, raw, "bruno@pec-b.test", "alice@pec-a.test")
	if err != nil || res.Class != pec.ClassRelay || res.Outcome != pec.OutcomeRelayed || res.Confirm != "" || res.Replace != nil {
		t.Fatalf("relay: %+v %v", res, err)
	}
	// Nothing but a valid message we signed is passed on to other domains: not another
	// provider's busta, not ordinary mail, not even with one of our users among the recipients.
	theirs, _ := fx.busta(t, fx.a, "alice@pec-a.test", "carla@pec-c.test", "bianca@pec-b.test")
	plain := rxMsg("From: bruno@pec-b.test", "To: carla@pec-c.test", "Subject: hi")
	for _, tc := range []struct {
		name  string
		msg   []byte
		rcpts []string
	}{
		{"another provider's busta", theirs, []string{"carla@pec-c.test"}},
		{"another provider's busta, mixed", theirs, []string{"carla@pec-c.test", "bianca@pec-b.test"}},
		{"ordinary mail", plain, []string{"carla@pec-c.test"}},
		{"ordinary mail, mixed", plain, []string{"bianca@pec-b.test", "carla@pec-c.test"}},
	} {
		var rej *pec.Rejected
		res, err := fx.receive(t, fx.eng, tc.msg, "x@pec-b.test", tc.rcpts...)
		if !errors.As(err, &rej) || rej.Reason != "relay-not-ours" {
			t.Errorf("%s passed on to another domain: %v", tc.name, err)
			if res != nil {
				t.Logf("class %s, outcome %s", res.Class, res.Outcome)
			}
		}
	}
	res, err = fx.receive(t, fx.eng, raw, "bruno@pec-b.test", "alice@pec-a.test", "tok123@"+pec.DefaultConfirmDomain, "bianca@pec-b.test", "Bianca@pec-b.test")
	if err != nil || res.Class != pec.ClassBusta || strings.Join(res.Local, ",") != "bianca@pec-b.test" {
		t.Fatalf("looped same-provider busta: %+v %v", res, err)
	}
	if _, err := fx.eng.Confirm(context.Background(), res.Confirm); err != nil {
		t.Fatal(err)
	}
	items := fx.outbox(t)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	// B's own busta: the presa in carico goes to B's own mailReceipt.
	c := fx.rxVerify(t, items[0].Raw, pec.KindPresaInCarico)
	if strings.Join(items[0].Rcpts, ",") != "ricevute@pec-b.test" || strings.Join(c.Daticert.Dati.Ricezione, ",") != "bianca@pec-b.test" {
		t.Errorf("presa in carico to %v about %v", items[0].Rcpts, c.Daticert.Dati.Ricezione)
	}
}

// The content flags another provider's access point set on a busta (unsigned top-level header
// fields, so the signature still verifies) are kept, returned and logged with the reception
// (issue 16 item 4).
func TestReceiveContentFlags(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	raw, tx := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	raw = append([]byte("X-PEC-Macro: presente\r\nX-PEC-Non-Verificato: cifrato\r\n"), raw...)
	res, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", "bruno@pec-b.test")
	if err != nil || res.Class != pec.ClassBusta || res.Replace != nil {
		t.Fatalf("flagged busta: %+v %v", res, err)
	}
	if want := "X-PEC-Macro: presente; X-PEC-Non-Verificato: cifrato"; res.Flags != want {
		t.Errorf("flags %q, want %q", res.Flags, want)
	}
	if _, err := fx.eng.Confirm(context.Background(), res.Confirm); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range fx.events(t) {
		if e.Kind == store.KindContenuto && e.Identificativo == tx.ID && strings.Contains(e.ErrorDetail, "X-PEC-Macro: presente") {
			found = true
		}
	}
	if !found {
		t.Errorf("no contenuto-segnalato event: %s", kinds(fx.events(t)))
	}
}

// Our own 12 h notice, looped through our MX to our user (same-provider delivery goes through
// the reception point), is delivered and moves nothing: the sweep already committed its
// transition, and applying it again would be a conflict answered 4xx for ever. The same for a
// notice about a transaction this store does not track.
func TestReceiveOwnNoticeLooped(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	ea := fx.engine(t, fx.a, fx.a.bd.Keys, pec.PolicyAnomaly, nil)
	raw, tx := fx.busta(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	data := daticert.Marshal(pec.Classify(raw, pec.ClassifyOptions{}).Daticert)
	b := &store.Batch{}
	b.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: "bruno@pec-b.test", SentAt: time.Now().Add(-time.Hour), Sender: tx.Sender, Data: data,
		Deadlines: store.Deadlines{First: time.Minute, FinalFrom: 2 * time.Hour, Final: 3 * time.Hour}})
	if err := fx.st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if sw, err := ea.Sweep(context.Background()); err != nil || sw.Notice12 != 1 {
		t.Fatalf("sweep: %+v %v", sw, err)
	}
	items := fx.outbox(t)
	if len(items) != 1 {
		t.Fatalf("outbox %+v", items)
	}
	before := len(fx.events(t))
	untracked, _ := fx.tx(t, fx.a, "alice@pec-a.test", "bianca@pec-b.test")
	other, err := fx.a.bd.Preavviso(ref(), untracked, "bianca@pec-b.test", 24)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range [][]byte{items[0].Raw, items[0].Raw, other.Bytes()} {
		res, err := fx.receive(t, ea, m, "posta-certificata@pec-a.test", "alice@pec-a.test")
		if err != nil || res.Class != pec.ClassReceipt || res.Redirect != "" || res.Discard || len(res.Drop) != 0 {
			t.Fatalf("our notice looped through the MX: %+v %v", res, err)
		}
	}
	rows, _ := fx.st.Tracking(context.Background(), tx.ID)
	if len(rows) != 1 || rows[0].State != store.StateNotified12 {
		t.Errorf("tracking after the looped notice: %+v", rows)
	}
	if after := len(fx.events(t)); after != before {
		t.Errorf("the looped notices logged %d events; they are in the log as emitted", after-before)
	}
}

// A receipt about one of our own transactions that overtakes Postfix's confirmation of the
// busta (its tracking rows are still held, confirm.go) proves that Postfix queued the busta:
// it releases the held step and moves the row it inserted, in one commit. The confirmation
// that follows commits nothing more. A receipt about one of our identificativi with nothing
// waiting is taken as before.
func TestReceiveReceiptBeforeConfirm(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	ea := fx.engine(t, fx.a, fx.a.bd.Keys, pec.PolicyAnomaly, nil)
	tx, _ := fx.tx(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	h := store.Held{Token: "tok-await", Key: "key-await", Identificativo: tx.ID, State: store.HeldWaiting,
		Created: time.Now(), Expires: time.Now().Add(time.Hour)}
	h.OnConfirm.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: "bruno@pec-b.test", SentAt: time.Now()})
	h.OnConfirm.Log(store.Event{Time: time.Now(), Identificativo: tx.ID, Kind: store.KindAccettazione})
	if err := fx.st.Commit(context.Background(), &store.Batch{Holds: []store.Held{h}}); err != nil {
		t.Fatal(err)
	}
	pic, _ := fx.b.bd.PresaInCarico(ref(), tx, "ricevute@pec-a.test", []string{"bruno@pec-b.test"})
	if _, err := fx.receive(t, ea, pic.Bytes(), "posta-certificata@pec-b.test", "ricevute@pec-a.test"); err != nil {
		t.Fatalf("presa in carico before the confirmation: %v", err)
	}
	if rows, _ := fx.st.Tracking(context.Background(), tx.ID); len(rows) != 1 || rows[0].State != store.StateTaken {
		t.Errorf("tracking after the presa in carico: %+v", rows)
	}
	if got, want := kinds(fx.events(t)), "accettazione,ricezione-ricevuta"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	// Postfix's confirmation comes: released already, nothing more.
	if c, err := fx.st.Confirm(context.Background(), h.Token, time.Now()); err != nil || c.State != store.HeldReleased {
		t.Fatalf("confirmation after the receipt: %+v %v", c, err)
	}
	if got, want := kinds(fx.events(t)), "accettazione,ricezione-ricevuta"; got != want {
		t.Errorf("events after the confirmation %q, want %q", got, want)
	}
	// Nothing waits for this one (a busta this store never held): delivered, moves nothing.
	other, _ := fx.tx(t, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	pic, _ = fx.b.bd.PresaInCarico(ref(), other, "ricevute@pec-a.test", []string{"bruno@pec-b.test"})
	if _, err := fx.receive(t, ea, pic.Bytes(), "posta-certificata@pec-b.test", "ricevute@pec-a.test"); err != nil {
		t.Fatalf("receipt about a transaction nothing waits for: %v", err)
	}
}

// A large busta (postacert.eml past 256 KiB) is scanned as its message, then as the rest:
// clamd gets two streams, the larger exactly the message (so a real busta's postacert.eml is
// found in it as carried), and a virus at the message's very end is still found.
func TestReceiveLargeBustaScannedInTwo(t *testing.T) {
	fx := newRxFix(t, pec.PolicyAnomaly)
	rcpts := []string{"bruno@pec-b.test"}
	body := strings.Repeat("0123456789012345678901234567890123456789\r\n", 8<<10) // 336 KiB
	for _, tc := range []struct {
		name, tail string
		scans      int
	}{{"clean", "", 2}, {"virus at the end", clamdtest.EICAR, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			before, beforeMax := fx.clamd.Scans(), fx.clamd.MaxReceived()
			tx, _ := fx.tx(t, fx.a, "alice@pec-a.test", rcpts...)
			orig, err := pec.ParseOriginal([]byte("From: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\nSubject: grande\r\n\r\n" + body + tc.tail + "\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := fx.a.bd.Busta(ref(), tx, orig)
			if err != nil {
				t.Fatal(err)
			}
			raw := m.Bytes()
			post := pec.Classify(raw, pec.ClassifyOptions{SkipSignature: true}).Postacert
			res, err := fx.receive(t, fx.eng, raw, "alice@pec-a.test", rcpts...)
			if err != nil {
				t.Fatal(err)
			}
			if n := fx.clamd.Scans() - before; n != tc.scans || res.Timings.Scans != tc.scans {
				t.Errorf("%d scans (timings say %d), want %d", n, res.Timings.Scans, tc.scans)
			}
			if got := fx.clamd.MaxReceived(); got != max(beforeMax, int64(len(post))) || got >= int64(len(raw)) {
				t.Errorf("largest stream %d bytes; postacert.eml %d, busta %d", got, len(post), len(raw))
			}
			if tc.tail == "" && (res.Outcome != pec.OutcomeAccepted || res.Virus != "") {
				t.Errorf("clean: %+v", res)
			}
			if tc.tail != "" && (!res.Discard || res.Virus != clamdtest.EICARName) {
				t.Errorf("infected: %+v", res)
			}
		})
	}
}
