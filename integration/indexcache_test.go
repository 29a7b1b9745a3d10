//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
)

// TestAccessPointIndexDown (issue 12 item 11b): a private access point reads the providers
// index from its own slapd and has no index.cache in its configuration: the local copy is on
// by default. slapd goes down, pec-milter restarts, becomes ready (its socket answers) from
// the copy, and certifies a PEC to B with bruno still known as certificato.
func TestAccessPointIndexDown(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	ldif, err := os.ReadFile(l.LDAP.LDIF)
	if err != nil {
		t.Fatal(err)
	}
	slapd := lab.PrivateSlapd(t, ldif)
	p := startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) {
		y["index"] = map[string]any{"source": slapd.URL + "/o=postacert", "refresh": "1h"}
	}})
	cache := filepath.Join(filepath.Dir(p.db), "providers-index.ldif")
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("no local copy of the index by default: %v", err)
	}

	slapd.Stop()
	p.milter.Process.Signal(syscall.SIGTERM)
	p.milter.Wait()
	p.startMilter(t) // waits for the milter socket: ready

	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	token := mailtest.Token("idxdown")
	if err := p.submission.Send(alice.Address, []string{bruno.Address}, raw("Indice giù.\n",
		"From: "+alice.Address, "To: "+bruno.Address, "Subject: PEC "+token,
		"Date: "+time.Now().Format(time.RFC1123Z))); err != nil {
		t.Fatalf("submission with slapd down: %v (last failure: %s)", err, p.lastFailure(t))
	}
	c := classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
	if d := c.Daticert.Intestazione.Destinatari; len(d) != 1 || d[0].Tipo != daticert.Certificato {
		t.Errorf("daticert destinatari = %+v, want bruno certificato (from the local copy)", d)
	}
	classify(t, l, waitOne(t, mailbox(a, alice), "ACCETTAZIONE: PEC "+token), pec.KindAccettazione)
}
