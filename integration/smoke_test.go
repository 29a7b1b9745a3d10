//go:build integration

package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// deliveryDeadline bounds end-to-end delivery in the smoke tests. In PEC wiring each message
// is signed, indexed and scanned twice before it lands, still far below this.
const deliveryDeadline = 90 * time.Second

func provider(t *testing.T, l *lab.Lab, id string) *lab.Provider {
	t.Helper()
	p, err := l.Provider(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// user finds a lab user by local part (in the provider's main domain) or by full address.
func user(t *testing.T, p *lab.Provider, local string) lab.User {
	t.Helper()
	addr := local
	if !strings.Contains(local, "@") {
		addr = local + "@" + p.Domain
	}
	for _, u := range p.Users {
		if u.Address == addr {
			return u
		}
	}
	t.Fatalf("lab.json: provider %s has no user %s", p.ID, addr)
	return lab.User{}
}

func tlsSubmission(t *testing.T, p *lab.Provider, u *lab.User) mailtest.Submission {
	t.Helper()
	conf, err := mailtest.TLSConfig(p.Postfix.TLSCert, "mx."+p.Domain)
	if err != nil {
		t.Fatal(err)
	}
	s := mailtest.Submission{Addr: p.Postfix.Submission, TLS: conf}
	if u != nil {
		s.User, s.Pass = u.Address, u.Password
	}
	return s
}

func mailbox(p *lab.Provider, u lab.User) mailtest.Mailbox {
	return mailtest.Mailbox{Addr: p.Dovecot.IMAP, User: u.Address, Pass: u.Password}
}

func allSystems(t *testing.T, l *lab.Lab) []*lab.Provider {
	t.Helper()
	if len(l.Providers) != 2 || l.Ordinary == nil {
		t.Fatalf("lab.json: want 2 PEC providers and the ordinary system, got %d and %v", len(l.Providers), l.Ordinary)
	}
	return append(append([]*lab.Provider{}, l.Providers...), l.Ordinary)
}

// Submission without AUTH is refused, AUTH is only offered after STARTTLS, and MAIL before
// STARTTLS is refused.
func TestSubmissionRequiresTLSAndAuth(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	for _, p := range allSystems(t, l) {
		t.Run(p.ID, func(t *testing.T) {
			t.Parallel()
			rcpt := p.Users[0].Address // a local mailbox: only the missing AUTH can refuse it

			plain, err := mailtest.Submission{Addr: p.Postfix.Submission}.Dial()
			if err != nil {
				t.Fatal(err)
			}
			if ok, _ := plain.Extension("AUTH"); ok {
				t.Error("AUTH offered before STARTTLS")
			}
			if ok, _ := plain.Extension("STARTTLS"); !ok {
				t.Error("STARTTLS not offered on submission")
			}
			if err := plain.Mail(rcpt); err == nil {
				t.Error("MAIL accepted before STARTTLS")
			}
			plain.Close()

			s := tlsSubmission(t, p, nil)
			c, err := s.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ok, _ := c.Extension("AUTH"); !ok {
				t.Error("AUTH not offered after STARTTLS")
			}
			err = c.Mail(rcpt)
			if err == nil {
				err = c.Rcpt(rcpt)
			}
			if err == nil {
				t.Fatalf("%s accepted MAIL and RCPT without AUTH", p.Postfix.Submission)
			}
			if !strings.HasPrefix(err.Error(), "5") {
				t.Errorf("refusal without AUTH is %q, want a 5xx", err)
			}
		})
	}
}

// An authenticated user cannot send as someone else, and is told so the PEC way (pec-spec.md
// §7.1.3, issue 12 item 4): a MAIL FROM and From that are not the login are refused at DATA
// with 550 and the avviso di non accettazione, addressed to the login (alice), never to the
// forged sender; nothing is relayed. Postfix no longer refuses the sender itself (no
// reject_sender_login_mismatch), so the access point sees the message and issues the avviso.
func TestSubmissionSenderMustBeLogin(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, anna, bruno := user(t, a, "alice"), user(t, a, "anna"), user(t, b, "bruno")
	service := user(t, a, a.ServiceAddress)
	for _, tc := range []struct {
		forged lab.User
		home   *lab.Provider
	}{{anna, a}, {bruno, b}, {service, a}} {
		forged := tc.forged
		t.Run(forged.Address, func(t *testing.T) {
			t.Parallel()
			token := mailtest.Token("forged")
			err := tlsSubmission(t, a, &alice).Send(forged.Address, []string{bruno.Address},
				mailtest.Message(forged.Address, []string{bruno.Address}, "forged "+token, "x"))
			var se *mailtest.StepError
			if !errors.As(err, &se) || se.Step != "DATA" || se.Code != 550 ||
				!strings.Contains(se.Error(), "non corrisponde all'utente autenticato") {
				t.Fatalf("alice sending as %s: err = %v, want 550 at DATA: ... non corrisponde all'utente autenticato", forged.Address, err)
			}
			c := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazione)
			if !strings.Contains(c.Daticert.Dati.ErroreEsteso, forged.Address) {
				t.Errorf("errore-esteso %q does not name the forged sender", c.Daticert.Dati.ErroreEsteso)
			}
			none(t, mailbox(b, bruno), token)
			if forged != bruno { // the forged sender gets nothing either (bruno: checked above)
				none(t, mailbox(tc.home, forged), token)
			}
		})
	}
	// And as herself she may (the refusal above is about the sender, not a broken submission).
	c, err := tlsSubmission(t, a, &alice).Dial()
	if err != nil {
		t.Fatalf("alice cannot even log in: %v", err)
	}
	defer c.Close()
	if err := c.Mail(alice.Address); err != nil {
		t.Errorf("alice may not send as herself: %v", err)
	}
}

// A message from alice at A reaches bruno at B (and back), and reads back over IMAP.
func TestProviderToProvider(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	a, b := provider(t, l, "a"), provider(t, l, "b")
	for _, tc := range []struct {
		from, to *lab.Provider
		sender   string
		rcpt     string
	}{{a, b, "alice", "bruno"}, {b, a, "bianca", "anna"}} {
		t.Run(tc.sender+"->"+tc.rcpt, func(t *testing.T) {
			t.Parallel()
			sender, rcpt := user(t, tc.from, tc.sender), user(t, tc.to, tc.rcpt)
			sendAndRead(t, tc.from, sender, tc.to, rcpt)
		})
	}
}

// O's users mail each other on the plain path (no PEC anywhere).
func TestOrdinaryMail(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	o := provider(t, l, "o")
	sendAndRead(t, o, user(t, o, "oscar"), o, user(t, o, "olga"))
}

func sendAndRead(t *testing.T, from *lab.Provider, sender lab.User, to *lab.Provider, rcpt lab.User) {
	t.Helper()
	token := mailtest.Token("smoke")
	msg := mailtest.Message(sender.Address, []string{rcpt.Address}, "smoke test "+token, "Hello from the lab smoke test.\n")
	if err := tlsSubmission(t, from, &sender).Send(sender.Address, []string{rcpt.Address}, msg); err != nil {
		t.Fatalf("%s submitting to %s: %v", sender.Address, from.Postfix.Submission, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	got, err := mailbox(to, rcpt).WaitFor(ctx, token, 1)
	if err != nil {
		t.Fatalf("%v\n(see %s and %s)", err, from.Postfix.Maillog, to.Postfix.Maillog)
	}
	if len(got) != 1 {
		t.Errorf("%d messages with token %s, want 1", len(got), token)
	}
	if !strings.Contains(string(got[0]), "Hello from the lab smoke test.") {
		t.Errorf("delivered message lacks the body:\n%s", got[0])
	}
}

// The MX listener offers STARTTLS, does not offer AUTH, and is not an open relay for another
// mail system of the lab (for the host itself either: TestMXRelaysNothingForLocalClients).
func TestMXListener(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	systems := allSystems(t, l)
	for i, p := range systems {
		stranger := systems[(i+1)%len(systems)].IP
		t.Run(p.ID, func(t *testing.T) {
			t.Parallel()
			c, err := mailtest.Submission{Addr: p.Postfix.MX, LocalAddr: stranger}.Dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ok, _ := c.Extension("STARTTLS"); !ok {
				t.Error("MX does not offer STARTTLS")
			}
			if ok, _ := c.Extension("AUTH"); ok {
				t.Error("MX offers AUTH")
			}
			if err := c.Mail("someone@example.invalid"); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("victim@elsewhere.invalid"); err == nil {
				t.Error("MX relays to a foreign domain")
			}
		})
	}
}

// The reinjection listener, a unix socket, takes mail from root (as from our daemons) without
// AUTH and without a milter. Who else cannot: TestReinjectionOnlyForOurDaemons.
func TestReinjectionListener(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	a, b := provider(t, l, "a"), provider(t, l, "b")
	if a.Postfix.Reinject == "" {
		t.Fatal("lab.json: provider a has no reinjection listener")
	}
	bruno := user(t, b, "bruno")
	token := mailtest.Token("reinject")
	msg := mailtest.Message(a.ServiceAddress, []string{bruno.Address}, "reinjected "+token, "reinjected\n")
	s := mailtest.Submission{Addr: a.Postfix.Reinject}
	if err := s.Send(a.ServiceAddress, []string{bruno.Address}, msg); err != nil {
		t.Fatalf("reinjection through %s: %v", a.Postfix.Reinject, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	if _, err := mailbox(b, bruno).WaitFor(ctx, token, 1); err != nil {
		t.Fatal(err)
	}
}
