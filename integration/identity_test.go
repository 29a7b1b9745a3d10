//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// Identity per domain (issue 10): provider A serves two PEC domains, pec-a.test and
// pec-a2.test, with one key and certificate each on its token. A user of the second domain
// gets a busta and an accettazione signed by that domain's key, from that domain's service
// address (the certificate's rfc822Name, RFC 6109 §2.1), with identificativi of that domain;
// the main domain keeps its own identity.
func TestTwoDomainsOneKeyEach(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	arturo, bruno := user(t, a, "arturo@pec-a2.test"), user(t, b, "bruno")
	token := mailtest.Token("a2")
	orig := raw("Saluti dal secondo dominio.\n",
		"From: "+arturo.Address, "To: "+bruno.Address, "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>", "Date: "+time.Now().Format(time.RFC1123Z))
	if err := tlsSubmission(t, a, &arturo).Send(arturo.Address, []string{bruno.Address}, orig); err != nil {
		t.Fatal(err)
	}
	busta := classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
	// The subject prefix leaves out the avvenuta consegna bruno's delivery point sends too.
	acc := classify(t, l, waitOne(t, mailbox(a, arturo), "ACCETTAZIONE: PEC "+token), pec.KindAccettazione)
	for name, c := range map[string]*pec.Classified{"busta": busta, "accettazione": acc} {
		if got := c.Signer.EmailAddresses; len(got) != 1 || got[0] != "posta-certificata@pec-a2.test" {
			t.Errorf("%s signed by %v, want the pec-a2.test certificate", name, got)
		}
		from, _ := c.Header.Get("From")
		if !strings.Contains(from, "<posta-certificata@pec-a2.test>") && strings.TrimSpace(from) != "posta-certificata@pec-a2.test" {
			t.Errorf("%s From = %q", name, from)
		}
		if !strings.HasSuffix(c.Daticert.Dati.Identificativo, "@pec-a2.test") {
			t.Errorf("%s identificativo %s", name, c.Daticert.Dati.Identificativo)
		}
		if c.Daticert.Dati.GestoreEmittente != a.Name {
			t.Errorf("%s gestore-emittente %q", name, c.Daticert.Dati.GestoreEmittente)
		}
	}
	// The main domain keeps its own key and service address.
	alice := user(t, a, "alice")
	tok2 := mailtest.Token("a1")
	orig = raw("x\n", "From: "+alice.Address, "To: "+bruno.Address, "Subject: PEC "+tok2,
		"Message-ID: <"+tok2+"@client.example>", "Date: "+time.Now().Format(time.RFC1123Z))
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, orig); err != nil {
		t.Fatal(err)
	}
	main := classify(t, l, waitOne(t, mailbox(b, bruno), tok2), pec.KindBusta)
	if main.Signer.Equal(busta.Signer) || len(main.Signer.EmailAddresses) != 1 || main.Signer.EmailAddresses[0] != a.ServiceAddress {
		t.Errorf("the main domain signs as %v, the second as %v: want one key each", main.Signer.EmailAddresses, busta.Signer.EmailAddresses)
	}
}
