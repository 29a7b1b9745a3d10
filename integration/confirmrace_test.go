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

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// TestReceiptsBeforeConfirmation holds back, in the real Postfix, the confirmation of a busta
// between two users of A (a private access point on A's own store, whose confirmation domain
// is routed to Postfix's retry transport while the test wants it): the busta goes through the
// pec-loop, A's reception point takes it in charge and the delivery point stores it in anna's
// mailbox, but the presa in carico and the consegna overtake the confirmation that inserts the
// tracking rows. They are refused for now (store.Transition.Await), nothing is attested, and
// once the confirmation goes through Postfix's retries bring them: alice gets one accettazione
// and one consegna, anna one busta, ricevute@A one presa in carico, and the tracking row is
// delivered. Before the fix the receipts were taken at once, moved nothing, and the row stayed
// "sent" until a false preavviso.
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
	time.Sleep(5 * time.Second) // the receipts, were they taken, would be in by now
	if rows, _ := st.Tracking(context.Background(), id); len(rows) != 0 {
		t.Fatalf("tracking rows before the confirmation: %+v", rows)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if got, _ := mailbox(a, alice).WaitFor(ctx2, token, 0); len(got) != 0 {
		t.Fatalf("alice got %d messages before the confirmation (accettazione or consegna)", len(got))
	}

	release()
	classify(t, l, waitOne(t, mailbox(a, alice), "ACCETTAZIONE: PEC "+token), pec.KindAccettazione)
	classify(t, l, waitOne(t, mailbox(a, alice), "CONSEGNA: PEC "+token), pec.KindConsegnaCompleta)
	waitOne(t, mailbox(a, anna), token)
	waitOne(t, mailbox(a, ricevute), token)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, _ := st.Tracking(context.Background(), id)
		if len(rows) == 1 && rows[0].State == store.StateDelivered && !rows[0].TakenAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tracking of %s: %+v, want one row delivered with its presa in carico", id, rows)
		}
		time.Sleep(time.Second)
	}
}
