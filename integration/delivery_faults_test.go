//go:build integration

package integration

// Fault tests of the delivery point (issue 14) on a private Dovecot and pec-lmtpd of B
// (delivery_private_test.go), fed by the lab's real Postfix: Dovecot stopped during a load,
// and pec-lmtpd killed with SIGKILL during a load of 200 deliveries. After each, every
// recipient has exactly one copy of each busta and the sender exactly one avvenuta consegna
// per (busta, recipient).

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// faultDeadline bounds how long a loaded and disturbed delivery takes to complete: Postfix
// retries deferred mail after 10 to 60 s in the lab.
const faultDeadline = 4 * time.Minute

func TestDeliveryFaults(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice := user(t, a, "alice")
	tag := mailtest.Token("f")[2:10]
	bruno, bianca := user(t, b, "bruno"), user(t, b, "bianca")
	rcpts := []string{"bruno+" + tag + "@" + b.Domain, "bianca+" + tag + "@" + b.Domain}
	p := startPrivateDP(t, l, b, rcpts)
	boxes := []mailtest.Mailbox{{Addr: p.imap, User: bruno.Address, Pass: bruno.Password}, {Addr: p.imap, User: bianca.Address, Pass: bianca.Password}}
	load := func(token string, n int) *sync.WaitGroup {
		return sendLoad(t, a, alice, rcpts, token, n)
	}

	t.Run("DovecotStopped", func(t *testing.T) {
		token := mailtest.Token("dv")
		const n = 20
		base := p.Logged(`"msg":"delivery consegna"`)
		wg := load(token, n)
		waitFor(t, "4 deliveries before Dovecot stops", func() bool { return p.Logged(`"msg":"delivery consegna"`) >= base+4 })
		p.StopDovecot(t)
		tempfails := p.Logged(`"outcome":"tempfail"`)
		waitFor(t, "deliveries refused while Dovecot is down", func() bool { return p.Logged(`"outcome":"tempfail"`) >= tempfails+2 })
		time.Sleep(3 * time.Second)
		p.StartDovecot(t)
		wg.Wait()
		exactlyOnce(t, boxes, mailbox(a, alice), rcpts, token, n)
		t.Logf("%d recipients answered 4xx while Dovecot was down, %d recovered through doveadm afterwards",
			p.Logged(`"outcome":"tempfail"`)-tempfails, p.Logged(`"recovered":true`))
	})

	t.Run("LmtpdKilledUnderLoad", func(t *testing.T) {
		token := mailtest.Token("kl")
		const n = 100 // 200 deliveries: two recipients each
		base := p.Logged(`"msg":"delivery consegna"`)
		wg := load(token, n)
		waitFor(t, "40 deliveries before the kill", func() bool { return p.Logged(`"msg":"delivery consegna"`) >= base+40 })
		// Make sure the kill falls in the crash window (Dovecot stored, our commit not done):
		// freeze Dovecot so that deliveries pile up claimed and waiting for it; hold the store's
		// write lock, so that none of them can commit; thaw Dovecot, wait until it has stored
		// at least one of them; then SIGKILL.
		db, err := sql.Open("sqlite3", "file:"+p.db+"?_txlock=immediate&_busy_timeout=30000")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		p.SignalDovecot(t, syscall.SIGSTOP)
		time.Sleep(2 * time.Second)
		saved := dovecotSaved(p)
		tx, err := db.Begin()
		if err != nil {
			p.SignalDovecot(t, syscall.SIGCONT)
			t.Fatal(err)
		}
		p.SignalDovecot(t, syscall.SIGCONT)
		waitFor(t, "Dovecot storing a message while the commit is blocked", func() bool { return dovecotSaved(p) > saved })
		time.Sleep(500 * time.Millisecond)
		p.Kill()
		tx.Rollback() //nolint:errcheck
		t.Logf("pec-lmtpd killed with SIGKILL after %d deliveries of this load", p.Logged(`"msg":"delivery consegna"`)-base)
		p.Start(t)
		wg.Wait()
		exactlyOnce(t, boxes, mailbox(a, alice), rcpts, token, n)
		if r := p.Logged(`"recovered":true`); r == 0 {
			t.Error("no delivery was recovered through doveadm after the restart: the kill missed the crash window")
		} else {
			t.Logf("%d recipients recovered after the restart (Dovecot had stored them; not stored again)", r)
		}
	})
}

// sendLoad submits n bustas from alice to rcpts (sintetica receipts, to keep alice's
// mailbox small), from 4 SMTP clients; the subject carries token and the busta's number.
func sendLoad(t *testing.T, a *lab.Provider, alice lab.User, rcpts []string, token string, n int) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	sub := tlsSubmission(t, a, &alice)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				m := raw(fmt.Sprintf("Messaggio %d.\n", i), "From: "+alice.Address, "To: "+strings.Join(rcpts, ", "),
					fmt.Sprintf("Subject: PEC %s n.%d", token, i), fmt.Sprintf("Message-ID: <%s.%d@client.example>", token, i),
					"X-TipoRicevuta: sintetica")
				var err error
				for try := 0; try < 5; try++ {
					if err = sub.Send(alice.Address, rcpts, m); err == nil {
						break
					}
					time.Sleep(time.Second)
				}
				if err != nil {
					t.Errorf("submission %d: %v", i, err)
				}
			}
		})
	}
	return &wg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(faultDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dovecotSaved counts the messages the private Dovecot stored.
func dovecotSaved(p *privateDP) int {
	data, _ := os.ReadFile(p.dir + "/dovecot.log")
	return strings.Count(string(data), "saved mail to")
}

// exactlyOnce waits until each mailbox holds n bustas with token and alice n avvenuta
// consegna per recipient, lets a few seconds pass for duplicates, and checks: each busta once
// in each mailbox, one consegna per (identificativo, recipient), nothing else.
func exactlyOnce(t *testing.T, boxes []mailtest.Mailbox, sender mailtest.Mailbox, rcpts []string, token string, n int) {
	t.Helper()
	for _, mb := range boxes {
		waitFor(t, mb.User+" holding "+fmt.Sprint(n)+" bustas", func() bool { return countSubject(t, mb, token) >= n })
	}
	waitFor(t, "the sender holding the consegne", func() bool { return countSubject(t, sender, "CONSEGNA: PEC "+token) >= n*len(rcpts) })
	time.Sleep(5 * time.Second)
	ids := map[string]bool{}
	for _, mb := range boxes {
		copies := map[string]int{}
		for _, c := range fetchClassified(t, mb, token) {
			if c.Kind != pec.KindBusta {
				t.Errorf("%s: a %v with %s", mb.User, c.Kind, token)
				continue
			}
			copies[c.Daticert.Dati.Identificativo]++
			ids[c.Daticert.Dati.Identificativo] = true
		}
		for id, k := range copies {
			if k != 1 {
				t.Errorf("%s holds %d copies of %s", mb.User, k, id)
			}
		}
		if len(copies) != n {
			t.Errorf("%s holds %d distinct bustas, want %d", mb.User, len(copies), n)
		}
	}
	receipts := map[string]int{}
	for _, c := range fetchClassified(t, sender, "CONSEGNA: PEC "+token) {
		if c.Kind != pec.KindConsegnaSintetica || c.Verified == nil {
			t.Errorf("sender holds a %v (signature %v) with %s", c.Kind, c.SigErr, token)
			continue
		}
		receipts[c.Daticert.Dati.Identificativo+" "+strings.ToLower(c.Daticert.Dati.Consegna)]++
	}
	for id := range ids {
		for _, r := range rcpts {
			if k := receipts[id+" "+strings.ToLower(r)]; k != 1 {
				t.Errorf("the sender holds %d consegne of %s for %s, want 1", k, id, r)
			}
		}
	}
	if len(receipts) != n*len(rcpts) {
		t.Errorf("the sender holds consegne for %d (busta, recipient) pairs, want %d", len(receipts), n*len(rcpts))
	}
}

// countSubject counts the INBOX messages whose Subject contains s (-1 on an IMAP error).
func countSubject(t *testing.T, mb mailtest.Mailbox, s string) int {
	c, err := mailtest.DialIMAP(mb.Addr)
	if err != nil {
		return -1
	}
	defer c.Close()
	if c.Login(mb.User, mb.Pass) != nil {
		return -1
	}
	if _, err := c.Select("INBOX"); err != nil {
		return -1
	}
	uids, err := c.SearchHeader("Subject", s)
	if err != nil {
		return -1
	}
	return len(uids)
}

// fetchClassified fetches and classifies the INBOX messages whose Subject contains s.
func fetchClassified(t *testing.T, mb mailtest.Mailbox, s string) []*pec.Classified {
	t.Helper()
	var out []*pec.Classified
	for _, m := range fetchRaw(t, mb, s) {
		out = append(out, pec.Classify(m, pec.ClassifyOptions{}))
	}
	return out
}
