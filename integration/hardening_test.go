//go:build integration

package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// Issue 12 through the real Postfix: who may be certified and what may be signed.

// An ordinary mailbox that authenticates on A's submission listener (it lives on the same
// Dovecot, in a domain that is not one of A's PEC domains) gets a plain refusal: no busta,
// no avviso, nothing relayed.
func TestHardeningNonPECSenderRefused(t *testing.T) {
	t.Parallel()
	_, a, b, _ := pecLab(t)
	ord, bruno := user(t, a, "ordinario@posta-a.test"), user(t, b, "bruno")
	token := mailtest.Token("nonpec")
	m := raw("x\n", "From: "+ord.Address, "To: "+bruno.Address, "Subject: "+token, "Message-ID: <"+token+"@client.example>")
	err := tlsSubmission(t, a, &ord).Send(ord.Address, []string{bruno.Address}, m)
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Error(), "not a PEC mailbox") {
		t.Fatalf("err = %v, want 550 not a PEC mailbox", err)
	}
	none(t, mailbox(b, bruno), token)
}

// A Cc address that is not an envelope recipient would be certified "inoltrato" in the
// accettazione though nothing is sent to it: refused with the avviso naming it.
func TestHardeningHeaderOnlyRecipient(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno, bianca := user(t, a, "alice"), user(t, b, "bruno"), user(t, b, "bianca")
	token := mailtest.Token("hdronly")
	m := raw("x\n", "From: "+alice.Address, "To: "+bruno.Address, "Cc: "+bianca.Address, "Subject: "+token,
		"Message-ID: <"+token+"@client.example>")
	err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, m)
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Error(), bianca.Address) {
		t.Fatalf("err = %v, want 550 naming %s", err, bianca.Address)
	}
	c := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazione)
	if !strings.Contains(c.Daticert.Dati.ErroreEsteso, bianca.Address) {
		t.Errorf("errore-esteso %q", c.Daticert.Dati.ErroreEsteso)
	}
	none(t, mailbox(b, bruno), token)
}

// A display name in ISO-8859-2 is an ordinary sender, and an 8-bit body travels inside a
// busta whose every octet is 7-bit (quoted-printable, content unchanged), so that no relay's
// 8BITMIME downgrade (RFC 6152) can touch the signed bytes. Both pass openssl and pecctl.
func TestHardeningCharsetsAndSevenBit(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	token := mailtest.Token("charset")
	body := "Gentile cliente, perch\xe8 cos\xec? Pi\xf9 avanti.\n"
	m := raw(body, "From: =?iso-8859-2?Q?Ale=B9_Nov=E1k?= <"+alice.Address+">", "To: "+oscar.Address,
		"Subject: "+token, "Message-ID: <"+token+"@client.example>", "MIME-Version: 1.0",
		"Content-Type: text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: 8bit")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{oscar.Address}, m); err != nil {
		t.Fatal(err)
	}
	busta := waitOne(t, mailbox(o, oscar), token)
	for i, c := range busta {
		if c >= 0x80 {
			t.Fatalf("8-bit octet at %d of the busta", i)
		}
	}
	c := classify(t, l, busta, pec.KindBusta)
	p, err := pec.ParseEntity(c.Postacert)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Decoded()
	if err != nil || !bytes.Equal(got, []byte(strings.ReplaceAll(body, "\n", "\r\n"))) {
		t.Errorf("postacert body decodes to %q (%v)", got, err)
	}
	// pecctl verify --strict on the busta and the accettazione: no warning either.
	acc := waitOne(t, mailbox(a, alice), token)
	for name, msg := range map[string][]byte{"busta": busta, "accettazione": acc} {
		f := filepath.Join(t.TempDir(), name+".eml")
		os.WriteFile(f, msg, 0o600)
		if out, err := exec.Command(pecctl(t), "verify", "--strict", "--ca", l.CA.Cert, f).CombinedOutput(); err != nil {
			t.Errorf("pecctl verify --strict %s: %v\n%s", name, err, out)
		}
	}
}

// Postfix with pec-milter down answers 4xx (milter_default_action = tempfail): the only
// safeguard against relaying uncertified mail (issue 20 item 6). A copy of A's submission
// listener points to a milter socket nobody serves.
func TestHardeningMilterDownTempfails(t *testing.T) {
	t.Parallel()
	_, a, _, o := pecLab(t)
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	addr, err := pflisten.FreePort(a.IP)
	if err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(filepath.Dir(a.MilterSocket), "nobody-"+mailtest.Token("x")[2:10]+".sock")
	ln, err := pflisten.Add(a.Postfix.ConfigDir, addr, "submission/inet",
		map[string]string{"smtpd_milters": "unix:" + dead, "syslog_name": "postfix/deadmilter"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Remove() })
	sub := tlsSubmission(t, a, &alice)
	sub.Addr = addr
	token := mailtest.Token("deadmilter")
	m := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+token, "Message-ID: <"+token+"@client.example>")
	err = sub.Send(alice.Address, []string{oscar.Address}, m)
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Code < 400 || se.Code > 499 {
		t.Fatalf("err = %v, want a 4xx with the milter down", err)
	}
	none(t, mailbox(o, oscar), token)
}
