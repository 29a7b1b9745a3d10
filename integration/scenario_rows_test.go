//go:build integration

package integration

// The rows of pec-spec.md §7.4 (condition → message → values) that run on the shared lab.

import (
	"context"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/store"
)

// virusBody is a multipart body with the EICAR test file attached.
const virusBody = "--b0\nContent-Type: text/plain\n\nfattura\n--b0\nContent-Type: application/octet-stream; name=\"f.com\"\n" +
	"Content-Disposition: attachment; filename=\"f.com\"\n\n" + clamdtest.EICAR + "\n--b0--\n"

var virusHeader = []string{"MIME-Version: 1.0", "Content-Type: multipart/mixed; boundary=\"b0\""}

// (Long on purpose: one entry per row of the table.)
func rowScenarios() []scenario {
	return []scenario{
		{name: "From differs from MAIL FROM", rule: "§7.4 non-accettazione (§7.1 3)", send: func(s *scen) {
			s.formal(550, "diverso dal mittente", []string{s.addr("bruno")}, "From: "+s.addr("anna"), "To: "+s.addr("bruno"))
		}},
		{name: "missing From", rule: "§7.4 non-accettazione (§7.1 1)", send: func(s *scen) {
			s.formal(550, "campo From", []string{s.addr("bruno")}, "To: "+s.addr("bruno"))
		}},
		{name: "missing To", rule: "§7.4 non-accettazione (§7.1 2)", send: func(s *scen) {
			s.formal(550, "campo To", []string{s.addr("bruno")}, "From: "+s.addr("alice"), "Cc: "+s.addr("bruno"))
		}},
		{name: "RCPT not in To/Cc", rule: "§7.4 non-accettazione (§7.1 4)", send: func(s *scen) {
			s.formal(550, "non compare nei campi To o Cc", []string{s.addr("bruno"), s.addr("bianca")},
				"From: "+s.addr("alice"), "To: "+s.addr("bruno"))
		}},
		{name: "Bcc not empty", rule: "§7.4 non-accettazione (§7.1 5)", send: func(s *scen) {
			s.formal(550, "copia nascosta (Bcc)", []string{s.addr("bruno"), s.addr("bianca")},
				"From: "+s.addr("alice"), "To: "+s.addr("bruno"), "Bcc: "+s.addr("bianca"))
		}},
		{name: "size x recipients over the limit", rule: "§7.4 non-accettazione (§7.1 6, 30 MB)", send: func(s *scen) {
			// 15 MB to two recipients: 30 MB and a little more, the lab's (the law's) limit.
			body := strings.Repeat(strings.Repeat("z", 76)+"\n", 30_000_000/2/78+100)
			s.formalBody(550, "supera il limite", body, []string{s.addr("bruno"), s.addr("bianca")},
				"From: "+s.addr("alice"), "To: "+s.addr("bruno")+", "+s.addr("bianca"))
		}},
		{name: "far over the size limit", rule: "§7.4 SMTP 552 only", send: (*scen).farOverSize, early: 1},
		{name: "virus at submission", rule: "§7.4 non-accettazione virus", send: func(s *scen) {
			bruno := s.addr("bruno")
			msg := raw(virusBody, append([]string{"From: " + s.addr("alice"), "To: " + bruno, "Subject: PEC " + s.token}, virusHeader...)...)
			s.refused(s.submit("alice", []string{bruno}, msg), 554, "virus")
			s.expect(s.addr("alice"), label(pec.KindNonAccettazioneVirus, ""))
			s.logged(s.a.ConfigFile, store.KindNonAccettazioneVirus)
			s.quarantined(s.a.ConfigFile)
		}},
		{name: "valid busta: presa in carico", rule: "§7.4 presa in carico (one per provider per transaction)", send: func(s *scen) {
			bruno, bianca := s.addr("bruno"), s.addr("bianca")
			s.mustSubmit("alice", []string{bruno, bianca}, s.original("alice", []string{bruno, bianca}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindConsegnaCompleta, bruno), label(pec.KindConsegnaCompleta, bianca))
			s.expect(bruno, label(pec.KindBusta, ""))
			s.expect(bianca, label(pec.KindBusta, ""))
			s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
			s.logged(s.b.ConfigFile, store.KindRicezioneBusta, store.KindPresaInCarico)
			s.tracked(s.a.ConfigFile, map[string]store.State{bruno: store.StateDelivered, bianca: store.StateDelivered})
		}},
		{name: "virus inside a valid busta", rule: "§7.4 rilevazione virus + mancata consegna per virus", send: (*scen).virusInBusta},
		{name: "unsigned PEC message", rule: "§7.4 anomaly (unsigned)", send: func(s *scen) {
			s.anomalyAt(s.b, "pec-headers-unsigned", s.a.ServiceAddress, raw("consegnato\n", "From: "+s.a.ServiceAddress, "To: "+s.addr("bianca"),
				"Subject: POSTA CERTIFICATA: PEC "+s.token, "X-Trasporto: posta-certificata"))
		}},
		{name: "signer not in the index", rule: "§7.4 anomaly (forged: signed by someone not listed)", send: func(s *scen) {
			m, _ := bustaOf(s.t, signerBuilder(s.t, s.l, "f"), s.addr("alice"), []string{s.addr("bianca")}, s.token, "falso\n")
			s.anomalyAt(s.b, "signer-unlisted", s.addr("alice"), m.Bytes())
		}},
		{name: "signer revoked", rule: "§7.4 anomaly (forged: certificate revoked)", send: func(s *scen) {
			m, _ := bustaOf(s.t, signerBuilder(s.t, s.l, "r"), "rita@pec-r.test", []string{s.addr("bianca")}, s.token, "revocato\n")
			s.anomalyAt(s.b, "revoked", "rita@pec-r.test", m.Bytes())
		}},
		{name: "malformed busta", rule: "§7.4 anomaly (signed by a listed provider, not formally valid)", send: func(s *scen) {
			m, _ := bustaOf(s.t, providerBuilder(s.t, s.l, s.a), s.addr("alice"), []string{s.addr("bianca")}, s.token, "malformata\n")
			// The header says receipt, the signed daticert says busta (pec-spec.md §7.2 5): the
			// first check to fail is the subject prefix of the kind the header claims.
			s.anomalyAt(s.b, "subject-prefix", s.addr("alice"), []byte(strings.Replace(string(m.Bytes()), "X-Trasporto: posta-certificata", "X-Ricevuta: accettazione", 1)))
		}},
		{name: "tampered busta", rule: "§7.4 anomaly (one byte changed after signing)", send: func(s *scen) {
			m, _ := bustaOf(s.t, providerBuilder(s.t, s.l, s.a), s.addr("alice"), []string{s.addr("bianca")}, s.token, "Testo genuino.\n")
			raw := []byte(string(m.Bytes()))
			i := strings.Index(string(raw), "Testo genuino.")
			raw[i+6] = 'G'
			s.anomalyAt(s.b, "signature", s.addr("alice"), raw)
		}},
		{name: "forged receipt", rule: "§7.4 anomaly (unsigned X-Ricevuta to a sender)", send: func(s *scen) {
			s.anomalyAt(s.a, "pec-headers-unsigned", s.b.ServiceAddress, raw("consegnato\n", "From: "+s.b.ServiceAddress, "To: "+s.addr("alice"),
				"Subject: CONSEGNA: PEC "+s.token, "X-Ricevuta: avvenuta-consegna"))
		}},
		{name: "receipt signed for another provider's domain", rule: "§7.4 anomaly (forged: From not managed by the signer, RFC 6109 §7)", send: func(s *scen) {
			_, tx := bustaOf(s.t, providerBuilder(s.t, s.l, s.a), s.addr("alice"), []string{s.addr("bruno")}, s.token, "x\n")
			m, err := providerBuilder(s.t, s.l, s.b).Accettazione(pec.NewTimeRef(time.Now(), pec.Rome()), tx)
			if err != nil {
				s.t.Fatal(err)
			}
			// B's genuine signature on an accettazione claiming to come from A's service address
			// (the From is outside the signed entity).
			s.anomalyAt(s.a, "from-domain-unmanaged", s.a.ServiceAddress, withField(m.Bytes(), "From", s.a.ServiceAddress))
		}},
		{name: "unknown mailbox", rule: "§7.4 mancata consegna no-dest", send: func(s *scen) {
			s.failedDelivery("nessuno-"+strings.ToLower(s.token[len(s.token)-8:])+"@"+s.b.Domain, "no-dest")
		}},
		{name: "unknown domain", rule: "§7.4 mancata consegna no-dominio", send: (*scen).unknownDomain, early: 1},
		{name: "mailbox full", rule: "§7.4 mancata consegna altro", send: func(s *scen) { s.failedDelivery(s.addr("piena"), "altro") }},
		{name: "delivered", rule: "§7.4 avvenuta consegna", send: func(s *scen) {
			bianca := s.addr("bianca")
			s.mustSubmit("alice", []string{bianca}, s.original("alice", []string{bianca}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindConsegnaCompleta, bianca))
			s.expect(bianca, label(pec.KindBusta, ""))
			s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
			s.logged(s.b.ConfigFile, store.KindConsegna)
			s.logged(s.a.ConfigFile, store.KindRicezioneRicevuta, store.KindConsegnaRicevuta)
			s.tracked(s.a.ConfigFile, map[string]store.State{bianca: store.StateDelivered})
		}},
		{name: "12 h and 24 h notices", rule: "§7.4 preavviso 12 h, avviso 24 h (short deadlines)", send: (*scen).notices, early: 2},
		{name: "DSN in", rule: "§7.4 anomaly (DSN from a non-PEC MTA)", send: func(s *scen) {
			s.anomalyAt(s.b, "dsn", "", raw("--r\nContent-Type: text/plain\n\nDelivery failed.\n--r\nContent-Type: message/delivery-status\n\n"+
				"Reporting-MTA: dns; mx.posta.test\n\nFinal-Recipient: rfc822; nobody@posta.test\nAction: failed\nStatus: 5.1.1\n--r--\n",
				"From: MAILER-DAEMON@posta.test", "To: "+s.addr("bianca"), "Subject: Undelivered Mail Returned to Sender "+s.token,
				"MIME-Version: 1.0", "Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\""))
		}},
	}
}

// formal submits a message with the given header lines (the scenario's Subject added) that
// fails a formal check: refused at DATA with code and text, one avviso di non accettazione to
// the sender, nothing relayed (pec-spec.md §7.1).
func (s *scen) formal(code int, text string, rcpts []string, hdr ...string) {
	s.formalBody(code, text, "x\n", rcpts, hdr...)
}

func (s *scen) formalBody(code int, text, body string, rcpts []string, hdr ...string) {
	s.refused(s.submit("alice", rcpts, raw(body, append(hdr, "Subject: PEC "+s.token)...)), code, text)
	s.expect(s.addr("alice"), label(pec.KindNonAccettazione, ""))
	s.logged(s.a.ConfigFile, store.KindNonAccettazione)
}

// anomalyAt injects msg at provider p's MX from O (the Internet) with envelope sender from, to
// the To: of msg: it reaches that mailbox as a busta di anomalia signed by p (pec-spec.md §2.5,
// §7.2), logged by p with the reason (the code of the check that failed).
func (s *scen) anomalyAt(p *lab.Provider, reason, from string, msg []byte) {
	to := headerAddr(msg, "To")
	if err := retryLost(s, func() error { return inject(p.Postfix.MX, s.o, heloToken("scen"), from, []string{to}, msg) }); err != nil {
		s.fail("injection at %s's MX: %v", p.ID, err)
	}
	s.expect(to, label(pec.KindAnomalia, ""))
	s.loggedWhy(p.ConfigFile, store.KindBustaAnomalia, `"error_detail":"`+reason+`:`)
}

// failedDelivery sends alice's PEC to rcpt at B, whose delivery point cannot store it: one
// avviso di mancata consegna about rcpt with errore, after the presa in carico (pec-spec.md
// §7.3).
func (s *scen) failedDelivery(rcpt, errore string) {
	s.mustSubmit("alice", []string{rcpt}, s.original("alice", []string{rcpt}, nil))
	s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindMancataConsegna, rcpt, errore))
	s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
	s.logged(s.b.ConfigFile, store.KindPresaInCarico, store.KindMancataConsegna)
	s.logged(s.a.ConfigFile, store.KindRicezioneRicevuta)
	s.tracked(s.a.ConfigFile, map[string]store.State{rcpt: store.StateFailed})
}

// virusInBusta: an EICAR inside a busta signed by A (made here: A's own antivirus would refuse
// it at submission), with A's tracking rows as A's access point inserts them when Postfix
// queues a busta, injected at B's MX from A. B delivers nothing and sends A's mailReceipt one
// rilevazione virus per recipient; A's reception point turns each into an avviso di mancata
// consegna per virus to the sender (RFC 6109 §3.2.3, §3.2.4).
func (s *scen) virusInBusta() {
	alice, bruno, bianca := s.addr("alice"), s.addr("bruno"), s.addr("bianca")
	rcpts := []string{bruno, bianca}
	m, tx := bustaOf(s.t, providerBuilder(s.t, s.l, s.a), alice, rcpts, s.token, virusBody, virusHeader...)
	tb := &store.Batch{}
	for _, r := range rcpts {
		tb.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: r, SentAt: time.Now(), Sender: alice,
			Subject: "PEC " + s.token, Data: pec.Classify(m.Bytes(), pec.ClassifyOptions{}).DaticertRaw})
	}
	if err := openStore(s.t, s.a.ConfigFile).Commit(context.Background(), tb); err != nil {
		s.t.Fatal(err)
	}
	if err := retryLost(s, func() error { return inject(s.b.Postfix.MX, s.a, "mx."+s.a.Domain, alice, rcpts, m.Bytes()) }); err != nil {
		s.fail("an infected busta is accepted and not delivered, not refused: %v", err)
	}
	s.id = tx.ID
	s.expect(s.addr("ricevute@A"), label(pec.KindRilevazioneVirus, bruno), label(pec.KindRilevazioneVirus, bianca))
	s.expect(alice, label(pec.KindMancataConsegnaVirus, bruno), label(pec.KindMancataConsegnaVirus, bianca))
	s.logged(s.b.ConfigFile, store.KindRilevazioneVirus)
	s.logged(s.a.ConfigFile, store.KindRicezioneRicevuta, store.KindMancataConsegnaVirus)
	s.quarantined(s.b.ConfigFile)
	s.tracked(s.a.ConfigFile, map[string]store.State{bruno: store.StateFailed, bianca: store.StateFailed})
}

// headerAddr is the first address of a header field of msg.
func headerAddr(msg []byte, field string) string {
	hdr, _, err := pec.SplitHeader(msg)
	if err != nil {
		return ""
	}
	for _, f := range hdr {
		if strings.EqualFold(f.Name, field) {
			return strings.TrimSpace(string(f.Raw[len(f.Name)+1:]))
		}
	}
	return ""
}

// withField replaces the value of the top-level header field name of msg.
func withField(msg []byte, name, value string) []byte {
	hdr, body, err := pec.SplitHeader(msg)
	if err != nil {
		return msg
	}
	var b strings.Builder
	for _, f := range hdr {
		if strings.EqualFold(f.Name, name) {
			b.WriteString(f.Name + ": " + value + "\r\n")
			continue
		}
		b.Write(f.Raw)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return []byte(b.String())
}
