//go:build integration

package integration

// The scenarios: the flows of pec-spec.md §2 and the rows of the table in §7.4. Each send
// function sends through the lab's real listeners and declares, for every mailbox that must
// receive something of the scenario, the kinds it must receive (any other watched mailbox
// must receive nothing), and the legal log events of the providers involved.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// scenarios lists the suite, flows first, then the rows of §7.4 in the table's order.
func scenarios() []scenario {
	return append(flowScenarios(), rowScenarios()...)
}

// Events of a PEC sent from A and delivered, as each side's log tells them.
var (
	senderDelivered = []store.EventKind{store.KindAccettazione, store.KindBustaTrasporto, store.KindRicezioneRicevuta, store.KindConsegnaRicevuta}
	receiverTook    = []store.EventKind{store.KindRicezioneBusta, store.KindPresaInCarico, store.KindConsegna}
)

// (Long on purpose: one entry per flow, each its own small story.)
func flowScenarios() []scenario {
	return []scenario{
		{name: "A to B", rule: "§2.2", send: func(s *scen) {
			bruno := s.addr("bruno")
			s.mustSubmit("alice", []string{bruno}, s.original("alice", []string{bruno}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindConsegnaCompleta, bruno))
			s.expect(bruno, label(pec.KindBusta, ""))
			s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
			s.logged(s.a.ConfigFile, senderDelivered...)
			s.logged(s.b.ConfigFile, receiverTook...)
			s.tracked(s.a.ConfigFile, map[string]store.State{bruno: store.StateDelivered})
		}},
		{name: "same provider", rule: "§2.3", send: func(s *scen) {
			anna := s.addr("anna")
			s.mustSubmit("alice", []string{anna}, s.original("alice", []string{anna}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindConsegnaCompleta, anna))
			s.expect(anna, label(pec.KindBusta, ""))
			s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""))
			s.logged(s.a.ConfigFile, append(senderDelivered, receiverTook...)...)
			s.tracked(s.a.ConfigFile, map[string]store.State{anna: store.StateDelivered})
		}},
		{name: "PEC to ordinary", rule: "§2.4", send: func(s *scen) {
			oscar := s.addr("oscar")
			s.mustSubmit("alice", []string{oscar}, s.original("alice", []string{oscar}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""))
			s.expect(oscar, label(pec.KindBusta, ""))
			s.logged(s.a.ConfigFile, store.KindAccettazione, store.KindBustaTrasporto)
			s.tracked(s.a.ConfigFile, map[string]store.State{oscar: "esterno"})
		}},
		{name: "PEC to ordinary, bounced", rule: "§2.4 (the external MTA's DSN comes back as an anomaly)", send: func(s *scen) {
			nobody := "nessuno-" + strings.ToLower(s.token[len(s.token)-8:]) + "@" + s.o.Domain
			s.mustSubmit("alice", []string{nobody}, s.original("alice", []string{nobody}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindAnomalia, ""))
			s.logged(s.a.ConfigFile, store.KindAccettazione, store.KindBustaTrasporto)
			s.tracked(s.a.ConfigFile, map[string]store.State{nobody: "esterno"})
		}},
		{name: "PEC bounced by our own Postfix", rule: "§2.4 (the DSN our Postfix makes comes as an anomaly too)", send: func(s *scen) {
			// An ordinary MTA refuses the recipient at RCPT, so A's Postfix makes the DSN
			// itself (as for a domain that does not resolve): its bounce(8) reaches alice past
			// every smtpd, and the delivery point wraps it in a busta di anomalia.
			nowhere := "nessuno@" + strings.ToLower(s.token[len(s.token)-8:]) + ".nowhere.test"
			if err := routesOf(s.a).add(s.a, nowhere, refusingMX(s.t)); err != nil {
				s.fail("route to the error transport: %v", err)
				return
			}
			s.t.Cleanup(func() {
				if err := routesOf(s.a).remove(s.a, nowhere); err != nil {
					s.t.Errorf("restoring transport_maps: %v", err)
				}
			})
			s.mustSubmit("alice", []string{nowhere}, s.original("alice", []string{nowhere}, nil))
			s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(pec.KindAnomalia, ""))
			s.logged(s.a.ConfigFile, store.KindAccettazione, store.KindBustaTrasporto)
			s.tracked(s.a.ConfigFile, map[string]store.State{nowhere: "esterno"})
		}},
		{name: "ordinary mail in, anomaly policy", rule: "§2.5", send: func(s *scen) {
			oscar, bruno := s.user("oscar"), s.addr("bruno")
			msg := mailtest.Message(oscar.Address, []string{bruno}, "ciao "+s.token, "Posta ordinaria.\n")
			if err := retryLost(s, func() error { return tlsSubmission(s.t, s.o, oscar).Send(oscar.Address, []string{bruno}, msg) }); err != nil {
				s.fail("O's submission: %v", err)
			}
			s.expect(bruno, label(pec.KindAnomalia, ""))
			s.loggedWhy(s.b.ConfigFile, store.KindBustaAnomalia, `"error_detail":"ordinary:`)
		}},
		{name: "ordinary mail in, refuse policy", rule: "§2.5 (policy reject)", send: (*scen).refusePolicy, early: 1},
		{name: "ordinary mail in with a virus", rule: "§2.5 (antivirus mandatory; refused as on the Internet)", send: func(s *scen) {
			oscar, bruno := s.user("oscar"), s.addr("bruno")
			msg := raw(virusBody, append([]string{"From: " + oscar.Address, "To: " + bruno, "Subject: ciao " + s.token}, virusHeader...)...)
			if err := retryLost(s, func() error { return tlsSubmission(s.t, s.o, oscar).Send(oscar.Address, []string{bruno}, msg) }); err != nil {
				s.fail("O's submission: %v", err)
			}
			// B refuses it at SMTP (554 5.7.1), so O's MTA returns it to its sender: the DSN
			// quotes the message's header, token included. No PEC notice to anybody.
			s.expect(oscar.Address, label(pec.KindOrdinary, ""))
			s.loggedWhy(s.b.ConfigFile, store.KindAnomalia, `"virus":"PEC.Test.EICAR`)
		}},
		{name: "mixed To/Cc, completa", rule: "§2.6", send: func(s *scen) { s.mixed("", pec.KindConsegnaCompleta, pec.KindConsegnaSintetica) }},
		{name: "mixed To/Cc, breve", rule: "§2.6, §4.3", send: func(s *scen) {
			s.mixed("breve", pec.KindConsegnaBreve, pec.KindConsegnaSintetica)
		}},
		{name: "mixed To/Cc, sintetica", rule: "§2.6", send: func(s *scen) {
			s.mixed("sintetica", pec.KindConsegnaSintetica, pec.KindConsegnaSintetica)
		}},
	}
}

// mixed sends one PEC to certified recipients at B (To and Cc) and at A (Cc) and an ordinary
// one (To), asking for receipts of type tipo ("" = the default, completa): one accettazione,
// one busta each, one presa in carico per receiving provider, one consegna per certified
// recipient, of type toKind for To and ccKind for Cc (RFC 6109 §3.3.2).
func (s *scen) mixed(tipo string, toKind, ccKind pec.Kind) {
	bruno, oscar, bianca, anna := s.addr("bruno"), s.addr("oscar"), s.addr("bianca"), s.addr("anna")
	var hdr []string
	if tipo != "" {
		hdr = append(hdr, "X-TipoRicevuta: "+tipo)
	}
	s.mustSubmit("alice", []string{bruno, oscar, bianca, anna}, s.original("alice", []string{bruno, oscar}, []string{bianca, anna}, hdr...))
	s.expect(s.addr("alice"), label(pec.KindAccettazione, ""), label(toKind, bruno), label(ccKind, bianca), label(ccKind, anna))
	for _, r := range []string{bruno, oscar, bianca, anna} {
		s.expect(r, label(pec.KindBusta, ""))
	}
	s.expect(s.addr("ricevute@A"), label(pec.KindPresaInCarico, ""), label(pec.KindPresaInCarico, "")) // B's and A's own
	s.logged(s.a.ConfigFile, append(senderDelivered, receiverTook...)...)
	s.logged(s.b.ConfigFile, receiverTook...)
	s.tracked(s.a.ConfigFile, map[string]store.State{bruno: store.StateDelivered, bianca: store.StateDelivered,
		anna: store.StateDelivered, oscar: "esterno"})
}

// original is a client's message from user name to to and cc, with the scenario's token in
// the Subject and Message-ID.
func (s *scen) original(from string, to, cc []string, hdr ...string) []byte {
	h := []string{"From: " + s.addr(from), "To: " + strings.Join(to, ", ")}
	if len(cc) > 0 {
		h = append(h, "Cc: "+strings.Join(cc, ", "))
	}
	h = append(h, "Subject: PEC "+s.token, "Message-ID: <"+s.token+"@client.example>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8")
	return raw("Buongiorno,\nscenario "+s.name+".\n", append(h, hdr...)...)
}

// submit sends msg as user name of A through A's real submission listener (STARTTLS, AUTH).
func (s *scen) submit(from string, rcpts []string, msg []byte) error {
	u := s.user(from)
	return retryLost(s, func() error { return tlsSubmission(s.t, s.a, u).Send(u.Address, rcpts, msg) })
}

// retryLost retries send once when the session was lost without a reply to DATA: a `postfix
// reload` by another test on the shared lab ends the smtpd waiting for the milter. Nothing
// was accepted then, and a real client retries too (the product must not attest twice).
func retryLost(s *scen, send func() error) error {
	err := send()
	var se *mailtest.StepError
	if errors.As(err, &se) && se.Step == "DATA" && se.Code == 0 {
		s.t.Logf("%s: session lost (%v); retrying once", s.name, err)
		err = send()
	}
	return err
}

func (s *scen) mustSubmit(from string, rcpts []string, msg []byte) {
	if err := s.submit(from, rcpts, msg); err != nil {
		s.fail("submission: %v", err)
	}
}

// refused checks that a send was refused at DATA with code and a reply naming text.
func (s *scen) refused(err error, code int, text string) {
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Step != "DATA" || se.Code != code || !strings.Contains(se.Error(), text) {
		s.fail("SMTP: %v; want DATA refused with %d naming %q", err, code, text)
	}
}

// refusingMX starts an SMTP server on 127.0.0.1 that refuses every recipient (550 5.1.1) and
// returns the transport_maps next hop that reaches it.
func refusingMX(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return refusingSession{}, nil }))
	srv.Domain = "mx.nowhere.test"
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	a := l.Addr().(*net.TCPAddr)
	return fmt.Sprintf("smtp:[%s]:%d", a.IP, a.Port)
}

type refusingSession struct{}

func (refusingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (refusingSession) Rcpt(string, *smtp.RcptOptions) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
}
func (refusingSession) Data(io.Reader) error { return errors.New("no recipients") }
func (refusingSession) Reset()               {}
func (refusingSession) Logout() error        { return nil }
