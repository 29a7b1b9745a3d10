//go:build integration

package integration

// Issue 19: the notices the sender's provider sends its own user (the accettazione among
// them) reach the mailbox through Postfix's pec-deliver listener, in one queue pass; a receipt
// that another of our transactions needs recorded (a same-provider consegna) still goes
// through pec-reinject and then the pec-loop listener, where the reception point records it.

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

func TestOwnNoticesSkipTheLoop(t *testing.T) {
	t.Parallel()
	_, a, _, _ := pecLab(t)
	alice, anna := user(t, a, "alice"), user(t, a, "anna")
	token := mailtest.Token("direct")
	orig := raw("Prova.\n", "From: "+alice.Address, "To: "+anna.Address, "Subject: PEC "+token,
		"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{anna.Address}, orig); err != nil {
		t.Fatal(err)
	}
	mb := mailbox(a, alice)
	acc := byKind(t, mb, token, 1, pec.KindAccettazione)[0]
	cons := byKind(t, mb, token, 1, pec.KindConsegnaCompleta)[0]
	for _, c := range []struct {
		m    received
		want []string
	}{{acc, []string{"deliver"}}, {cons, []string{"reinject", "pec-loop"}}} {
		mid, _ := c.m.c.Header.Get("Message-ID")
		if got := queuedVia(t, a, strings.TrimSpace(mid)); !slices.Equal(got, c.want) {
			t.Errorf("%v %s entered A's Postfix through %v, want %v", c.m.c.Kind, strings.TrimSpace(mid), got, c.want)
		}
	}
	// The presa in carico and the consegna went through the reception point, which recorded
	// each (ricezione ricevuta); the accettazione needs no such record.
	id := acc.c.Daticert.Dati.Identificativo
	kinds := map[store.EventKind]int{}
	for _, e := range logEvents(t, a, id, "") {
		kinds[e.Kind]++
	}
	if kinds[store.KindAccettazione] != 1 || kinds[store.KindRicezioneRicevuta] != 2 || kinds[store.KindConsegna] != 1 {
		t.Errorf("log events of %s: %v, want one accettazione, one consegna and two ricezione ricevuta", id, kinds)
	}
}

var (
	smtpdQueued  = regexp.MustCompile(`postfix/([a-z-]+)/smtpd\[\d+\]: ([0-9A-Za-z]+): client=`)
	cleanupMsgID = regexp.MustCompile(`/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(<[^>]*>)`)
)

// queuedVia lists, in log order, the smtpd listeners (their syslog names: "deliver",
// "reinject", "pec-loop", "submission", "mx") through which a message with this Message-ID
// entered p's Postfix.
func queuedVia(t *testing.T, p *lab.Provider, msgID string) []string {
	t.Helper()
	data, err := os.ReadFile(p.Postfix.Maillog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	ids := map[string]bool{}
	for _, l := range lines {
		if m := cleanupMsgID.FindStringSubmatch(l); m != nil && m[2] == msgID {
			ids[m[1]] = true
		}
	}
	var via []string
	for _, l := range lines {
		if m := smtpdQueued.FindStringSubmatch(l); m != nil && ids[m[2]] {
			via = append(via, m[1])
		}
	}
	return via
}
