//go:build integration

package integration

// The demo (make demo, integration/demo) against the lab, so that it cannot silently rot: every
// message it shows must be there, of its kind, in its mailbox, about the one transaction, and
// pass pecctl verify, openssl smime -verify and xmllint --dtdvalid again here (emitted), not
// only by the demo's own account; and its summary must still tell a newcomer the trace, the
// IMAP accounts and how to stop the lab.

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/demo"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
)

func TestDemo(t *testing.T) {
	t.Parallel()
	l, a, b, o := pecLab(t)
	alice, ricevute := user(t, a, "alice"), user(t, a, a.ReceiptAddress)
	bruno, bianca, oscar := user(t, b, "bruno"), user(t, b, "bianca"), user(t, o, "oscar")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := demo.Run(ctx, demo.Options{Lab: l, Out: &out, Dir: t.TempDir(), Pecctl: pecctl(t), Wait: deliveryDeadline})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	want := []struct {
		mailbox  string
		kind     pec.Kind
		consegna string // the recipient a consegna attests
	}{
		{alice.Address, pec.KindAccettazione, ""},
		{bruno.Address, pec.KindBusta, ""},
		{bianca.Address, pec.KindBusta, ""},
		{oscar.Address, pec.KindBusta, ""},
		{ricevute.Address, pec.KindPresaInCarico, ""},
		{alice.Address, pec.KindConsegnaCompleta, bruno.Address},
		{alice.Address, pec.KindConsegnaSintetica, bianca.Address},
		{alice.Address, pec.KindNonAccettazione, ""},
	}
	if len(res.Messages) != len(want) {
		t.Fatalf("the demo shows %d messages, want %d\n%s", len(res.Messages), len(want), out.String())
	}
	for i, w := range want {
		m := res.Messages[i]
		msg, err := os.ReadFile(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		c := emitted(t, l, msg, w.kind)
		if m.Mailbox != w.mailbox || m.Kind != w.kind || c.Daticert.Dati.Consegna != w.consegna {
			t.Errorf("message %d: %v in %s attesting %q, want %v in %s attesting %q", i, m.Kind, m.Mailbox, c.Daticert.Dati.Consegna, w.kind, w.mailbox, w.consegna)
		}
		if w.kind != pec.KindNonAccettazione && c.Daticert.Dati.Identificativo != res.Identificativo {
			t.Errorf("%v in %s is about %s, the demo's transaction is %s", w.kind, w.mailbox, c.Daticert.Dati.Identificativo, res.Identificativo)
		}
		if len(m.Checks) != 3 {
			t.Errorf("%v: %d checks, want pecctl verify, openssl and xmllint", w.kind, len(m.Checks))
		}
		for _, ch := range m.Checks {
			if !ch.OK {
				t.Errorf("%v: %s failed: %s", w.kind, ch.Name, ch.Output)
			}
		}
		if w.kind == pec.KindBusta {
			types := map[string]daticert.RecipientType{}
			for _, d := range c.Daticert.Intestazione.Destinatari {
				types[d.Addr] = d.Tipo
			}
			if types[bruno.Address] != daticert.Certificato || types[bianca.Address] != daticert.Certificato || types[oscar.Address] != daticert.Esterno {
				t.Errorf("busta destinatari %v", types)
			}
		}
	}
	summary := out.String()
	for _, s := range []string{
		"transaction " + res.Identificativo,       // pecctl trace ran
		"ricezione-busta",                         // at B too
		bruno.Address + " ", bianca.Address + " ", // in the trace and the accounts
		"imap://" + a.Dovecot.IMAP, alice.Password, // how to read the mailboxes
		ricevute.Address, "make lab-down", // the service mailbox; how to stop
	} {
		if !strings.Contains(summary, s) {
			t.Errorf("the summary does not say %q:\n%s", s, summary)
		}
	}
	if n := strings.Count(summary, "certificato  delivered"); n != 2 {
		t.Errorf("A's trace shows %d certified recipients delivered, want 2:\n%s", n, summary)
	}
}
