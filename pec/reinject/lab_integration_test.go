//go:build integration

package reinject

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestLabReinjection sends an outbox item through provider A's real Postfix reinjection
// listener and checks that Postfix queued it under its Message-ID, that the item is marked
// sent, and that a second pass sends nothing.
func TestLabReinjection(t *testing.T) {
	l := lab.ForTest(t)
	p, err := l.Provider("a")
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.NewMemory()
	token := mailtest.Token("reinject")
	msgID := "<" + token + "@" + p.Domain + ">"
	// An ordinary recipient: mail for our own domains would pass the pec-loop listener too
	// (same provider, postfix-conf master.cf) and be queued a second time there, by design.
	rcpt := l.Ordinary.Users[0].Address
	raw := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n\r\nreinjection test\r\n",
		p.ServiceAddress, rcpt, token, time.Now().Format(time.RFC1123Z), msgID)
	if err := st.Commit(context.Background(), &store.Batch{Outbox: []store.OutboxItem{{MessageID: msgID, Kind: "test",
		From: p.ServiceAddress, Rcpts: []string{rcpt}, Raw: []byte(raw)}}}); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Addr: p.Postfix.Reinject, Helo: "reinject-test." + p.Domain}, Deps{Store: st, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.DrainOnce(context.Background()); n != 1 || err != nil {
		t.Fatalf("DrainOnce: %d %v", n, err)
	}
	sent, _ := st.ListOutbox(context.Background(), store.OutboxSent, 0)
	if len(sent) != 1 {
		t.Fatalf("not marked sent: %+v", sent)
	}
	if n, _ := d.DrainOnce(context.Background()); n != 0 {
		t.Fatalf("second pass claimed %d", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(p.Postfix.Maillog)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "message-id="+msgID); n == 1 {
			return
		} else if n > 1 {
			t.Fatalf("Postfix queued %s %d times", msgID, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appears in %s", msgID, p.Postfix.Maillog)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
