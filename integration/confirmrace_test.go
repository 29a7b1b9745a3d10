//go:build integration

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// TestReceiptsBeforeConfirmation holds back, in the real Postfix, the confirmation of a busta
// between two users of A (a private access point on A's own store, whose confirmation domain
// is routed to Postfix's retry transport while the test wants it): the busta goes through the
// pec-loop, A's reception point takes it in charge and the delivery point stores it in anna's
// mailbox. That delivery proves Postfix queued the busta (store.Transition.ProvesQueued): its
// commit releases the accettazione's held step, so alice gets her accettazione and consegna
// and the tracking row is delivered while the confirmation still waits in the queue. Once
// Postfix delivers the confirmation it finds the step released: still one accettazione in
// alice's mailbox and in the log. (Before, such receipts were refused until the
// confirmation came; before that, taken at once and lost to the tracking.)
func TestReceiptsBeforeConfirmation(t *testing.T) {
	t.Parallel()
	l, a, _, _ := pecLab(t)
	alice, anna, ricevute := user(t, a, "alice"), user(t, a, "anna"), user(t, a, "ricevute")
	var labCfg struct {
		Store map[string]any `yaml:"store"`
	}
	raw0, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw0, &labCfg); err != nil {
		t.Fatal(err)
	}
	p := startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) {
		y["store"] = labCfg.Store // A's store: the one the reception and delivery points use
		y["confirm"].(map[string]any)["expiry"] = "10m"
		y["node"] = "aprace" // its own owner name for the leases of the store it shares
	}})
	confirmSock := strings.TrimSuffix(p.sock, ".sock") + "-c.sock"
	confirmDomain := strings.TrimSuffix(filepath.Base(p.sock), ".sock") + ".confirm.invalid"
	if err := routesOf(a).add(a, confirmDomain, "retry:confirmation_held_back_by_the_test"); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		if err := routesOf(a).add(a, confirmDomain, "lmtp:unix:"+confirmSock); err != nil {
			t.Fatal(err)
		}
		exec.Command("postqueue", "-c", a.Postfix.ConfigDir, "-f").Run()
	}
	defer release()

	token := mailtest.Token("race")
	msg := raw("Buongiorno.\n", "From: "+alice.Address, "To: "+anna.Address, "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>")
	if err := p.submission.Send(alice.Address, []string{anna.Address}, msg); err != nil {
		t.Fatal(err)
	}
	// The busta reaches anna (stored by the delivery point, whose reply was 4xx) while the
	// confirmation waits in Postfix's queue.
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	got, err := mailbox(a, anna).WaitFor(ctx, token, 1)
	if err != nil {
		t.Fatal(err)
	}
	c := pec.Classify(got[0], pec.ClassifyOptions{})
	if c.Kind != pec.KindBusta || c.Daticert == nil {
		t.Fatalf("anna got a %s, want the busta", c.Kind)
	}
	id := c.Daticert.Dati.Identificativo
	st := openStore(t, a.ConfigFile)
	// The confirmation still waits in the queue; the consegna of anna's copy proved the busta
	// queued and released the accettazione's step, so the receipts come and the row moves.
	if n := queuedTo(t, a, confirmDomain); n != 1 {
		t.Fatalf("%d queued messages for the confirmation domain, want the held-back one", n)
	}
	classify(t, l, waitOne(t, mailbox(a, alice), "ACCETTAZIONE: PEC "+token), pec.KindAccettazione)
	classify(t, l, waitOne(t, mailbox(a, alice), "CONSEGNA: PEC "+token), pec.KindConsegnaCompleta)
	waitOne(t, mailbox(a, ricevute), token)
	waitRow(t, st, id, anna.Address, 30*time.Second, func(r *store.Tracking) bool {
		return r.State == store.StateDelivered && !r.TakenAt.IsZero()
	})

	// Postfix delivers the confirmation at last: it finds the step released, and nothing
	// is emitted or logged a second time.
	release()
	deadline := time.Now().Add(deliveryDeadline)
	for queuedTo(t, a, confirmDomain) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the confirmation is still queued")
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitOne(t, mailbox(a, alice), "ACCETTAZIONE: PEC "+token)
	waitOne(t, mailbox(a, anna), token)
	n := 0
	err = st.ScanLog(context.Background(), store.Query{Identificativo: id, Kinds: []store.EventKind{store.KindAccettazione}},
		func(*store.Event) error { n++; return nil })
	if err != nil || n != 1 {
		t.Errorf("accettazione events of %s: %d %v, want 1", id, n, err)
	}
}

// queuedTo is how many messages in a's queue have a recipient in domain.
func queuedTo(t *testing.T, a *lab.Provider, domain string) int {
	msgs, err := queued(a)
	if err != nil {
		t.Fatalf("postqueue -j: %v", err)
	}
	n := 0
	for _, q := range msgs {
		for _, r := range q.Recipients {
			if strings.HasSuffix(strings.ToLower(r.Address), "@"+strings.ToLower(domain)) {
				n++
				break
			}
		}
	}
	return n
}
