//go:build integration

package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// Issue 11: no accettazione unless Postfix holds the busta, and never two for one message.
// Each test runs a private access point (privateap_test.go) through A's real Postfix, so that
// it may break Postfix or pec-milter without disturbing the rest of the suite.

// privateEvents reads the private access point's legal log: the events whose subject
// contains token.
func privateEvents(t *testing.T, p *privateAP, token string) []*store.Event {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+p.db+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT kind, identificativo FROM events WHERE subject LIKE ? ORDER BY seq", "%"+token+"%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []*store.Event
	for rows.Next() {
		e := &store.Event{}
		if err := rows.Scan(&e.Kind, &e.Identificativo); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func countKinds(evs []*store.Event) map[store.EventKind]int {
	m := map[store.EventKind]int{}
	for _, e := range evs {
		m[e.Kind]++
	}
	return m
}

// A busta that would exceed what Postfix queues, from an original that does not: header
// recipients are repeated in daticert and in the text, so 900 To addresses make the busta
// several times the original. The client gets the refusal with the reason, alice the avviso
// di non accettazione, and no accettazione or busta-trasporto event ever appears.
func TestDurabilityBustaTooLargeForQueue(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	p := startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) {
		y["limits"] = map[string]any{"max_recipients": 1000, "max_size_times_recipients": 1 << 30,
			"hard_max_size": 150000, "queue_max_size": 200000}
	}})
	alice := user(t, a, "alice")
	token := mailtest.Token("toolarge")
	var rcpts []string
	for i := range 900 {
		rcpts = append(rcpts, fmt.Sprintf("destinatario-con-un-nome-lungo-%03d@%s", i, o.Domain))
	}
	orig := raw("x\n", "From: "+alice.Address, "To: "+strings.Join(rcpts, ",\n "), "Subject: "+token,
		"Message-ID: <"+token+"@client.example>")
	if len(orig) >= 150000 {
		t.Fatalf("the original is %d bytes: it must fit the limits; only its busta must not", len(orig))
	}
	err := p.submission.Send(alice.Address, rcpts, orig)
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Step != "DATA" || se.Code != 550 || !strings.Contains(se.Error(), "busta di trasporto supererebbe") {
		t.Fatalf("err = %v, want 550 at DATA naming the busta's size", err)
	}
	c := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazione)
	if !strings.Contains(c.Daticert.Dati.ErroreEsteso, "supererebbe") {
		t.Errorf("errore-esteso %q", c.Daticert.Dati.ErroreEsteso)
	}
	if k := countKinds(privateEvents(t, p, token)); k[store.KindAccettazione] != 0 || k[store.KindBustaTrasporto] != 0 || k[store.KindNonAccettazione] != 1 {
		t.Errorf("log events %v", k)
	}
}

// Postfix's smtpd and cleanup killed with SIGKILL after the milter decided, before its reply
// reaches Postfix: the busta is never queued, so no accettazione ever leaves; the client's
// retry of the same message gets exactly one accettazione and one busta.
func TestDurabilityPostfixKilledBeforeReply(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	p := startPrivateAPWith(t, l, a, apOptions{hooks: true, ownCleanup: true})
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	token := mailtest.Token("pfkill")
	orig := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+token, "Message-ID: <"+token+"@client.example>")
	p.hook(t, "after-eom", fmt.Sprintf("pkill -KILL -f -- '-n %s ' ; pkill -KILL -f -- '-n %s '",
		regexp.QuoteMeta(p.cleanup), regexp.QuoteMeta(p.listenAddr)))
	if err := p.submission.Send(alice.Address, []string{oscar.Address}, orig); err == nil {
		t.Fatal("the first attempt was answered 250 though Postfix was killed")
	}
	none(t, mailbox(a, alice), token)
	none(t, mailbox(o, oscar), token)
	if k := countKinds(privateEvents(t, p, token)); k[store.KindAccettazione] != 0 {
		t.Fatalf("accettazione logged for a busta Postfix never queued: %v", k)
	}
	if err := retrySend(p.submission, alice.Address, []string{oscar.Address}, orig, 60*time.Second); err != nil {
		t.Fatalf("retry: %v", err)
	}
	acc := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindAccettazione)
	busta := classify(t, l, waitOne(t, mailbox(o, oscar), token), pec.KindBusta)
	if acc.Daticert.Dati.Identificativo != busta.Daticert.Dati.Identificativo {
		t.Errorf("accettazione %s for busta %s", acc.Daticert.Dati.Identificativo, busta.Daticert.Dati.Identificativo)
	}
	if k := countKinds(privateEvents(t, p, token)); k[store.KindAccettazione] != 1 || k[store.KindBustaTrasporto] != 1 {
		t.Errorf("log events %v", k)
	}
}

// retrySend retries a submission on temporary failures and lost sessions, as a client does.
func retrySend(s mailtest.Submission, from string, to []string, msg []byte, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := s.Send(from, to, msg)
		var se *mailtest.StepError
		if err == nil || (errors.As(err, &se) && se.Code >= 500) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}

// A signer that hangs past milter.timeout: the client gets 4xx at the deadline, and the late
// signature releases nothing: no accettazione, no busta, no log event attesting either.
func TestDurabilitySignerHangsPastDeadline(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	p := startPrivateAPWith(t, l, a, apOptions{hooks: true, config: func(y map[string]any) {
		y["milter"].(map[string]any)["timeout"] = "3s"
	}})
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	token := mailtest.Token("hang")
	orig := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+token, "Message-ID: <"+token+"@client.example>")
	p.hook(t, "sign-delay", "20s")
	start := time.Now()
	err := p.submission.Send(alice.Address, []string{oscar.Address}, orig)
	took := time.Since(start)
	os.Remove(filepath.Join(p.hooks, "sign-delay"))
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Code < 400 || se.Code > 499 {
		t.Fatalf("err = %v, want a 4xx", err)
	}
	if took > 15*time.Second { // the signature takes 20s; room for a loaded machine
		t.Errorf("answered after %s: the deadline is 3s", took)
	}
	// The late signature finishes at about 20s, after the milter gave up: its step is either
	// not committed at all (the engine's context was cancelled at the deadline) or held
	// waiting for a confirmation that cannot come, until it expires (confirm.expiry, 30s in
	// the private config) with a non-accodato event. Either way nothing is attested.
	time.Sleep(60 * time.Second)
	k := countKinds(privateEvents(t, p, token))
	t.Logf("log events of the late result: %v", k)
	if k[store.KindAccettazione] != 0 || k[store.KindBustaTrasporto] != 0 {
		t.Errorf("log events %v", k)
	}
	none(t, mailbox(a, alice), token)
	none(t, mailbox(o, oscar), token)
}

// The same message sent three times with the reply dropped (the client closes the connection
// right after the final dot, so Postfix queues the message but the client never learns it),
// then once normally: one accettazione, one busta at the recipient.
func TestDurabilityRetriesAfterDroppedReplies(t *testing.T) {
	t.Parallel()
	l, a, _, o := pecLab(t)
	p := startPrivateAP(t, l, a)
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	token := mailtest.Token("dropped")
	orig := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+token, "Message-ID: <"+token+"@client.example>")
	for i := range 3 {
		if err := p.submission.SendDroppingReply(alice.Address, []string{oscar.Address}, orig); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := retrySend(p.submission, alice.Address, []string{oscar.Address}, orig, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindAccettazione)
	classify(t, l, waitOne(t, mailbox(o, oscar), token), pec.KindBusta)
	if k := countKinds(privateEvents(t, p, token)); k[store.KindAccettazione] != 1 || k[store.KindBustaTrasporto] != 1 {
		t.Errorf("log events %v", k)
	}
}

// Under load (300 submissions over 4 sessions) pec-milter is killed with SIGKILL three times
// and restarted. Every submission answered 250 has exactly one accettazione and one busta at
// the recipient; every other one has none, or exactly one after its retry.
func TestDurabilityMilterKilledUnderLoad(t *testing.T) {
	l, a, _, o := pecLab(t)
	p := startPrivateAP(t, l, a)
	n, workers := 300, 4
	if testing.Short() {
		n = 60
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 0))
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	run := mailtest.Token("load")
	type outcome struct{ answered, retried bool }
	outcomes := make([]outcome, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				tok := fmt.Sprintf("%s-%03d", run, i)
				m := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+tok, "Message-ID: <"+tok+"@client.example>")
				err := p.submission.Send(alice.Address, []string{oscar.Address}, m)
				o := outcome{answered: err == nil}
				if err != nil { // the client retries until it gets 250
					o.retried = retrySend(p.submission, alice.Address, []string{oscar.Address}, m, 3*time.Minute) == nil
				}
				mu.Lock()
				outcomes[i] = o
				mu.Unlock()
			}
		})
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for range 3 {
			time.Sleep(time.Duration(2000+rnd.IntN(6000)) * time.Millisecond)
			p.killMilter()
			time.Sleep(time.Duration(200+rnd.IntN(1500)) * time.Millisecond)
			p.startMilter(t)
		}
	}()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	<-killed

	// Confirmations deferred while pec-milter was down are retried by Postfix (lab backoff up
	// to 60s): wait until every submission has its accettazione and its busta, then a little
	// more for any duplicate. Messages are counted by token and by Message-ID: after a SIGKILL
	// the drainer may send its in-flight item again, with the same Message-ID, which the
	// delivery point stores once per mailbox (pec-lmtpd); without it in the lab the copy shows.
	re := regexp.MustCompile(regexp.QuoteMeta(run) + `-\d{3}`)
	idRe := regexp.MustCompile(`(?mi)^Message-ID:\s*(<[^>]+>)`)
	count := func(mb mailtest.Mailbox) (raw, ids map[string]int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		msgs, _ := mb.WaitFor(ctx, run, 0)
		raw, ids = map[string]int{}, map[string]int{}
		seen := map[string]bool{}
		for _, m := range msgs {
			tok := re.FindString(string(m))
			raw[tok]++
			if id := idRe.FindSubmatch(m); id != nil && !seen[tok+string(id[1])] {
				seen[tok+string(id[1])] = true
				ids[tok]++
			}
		}
		return raw, ids
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		_, a1 := count(mailbox(a, alice))
		_, b1 := count(mailbox(o, oscar))
		if len(a1) >= n && len(b1) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	time.Sleep(5 * time.Second)
	accRaw, accs := count(mailbox(a, alice))
	bustaRaw, bustas := count(mailbox(o, oscar))
	resent := 0
	for tok, k := range accRaw {
		resent += k - accs[tok]
	}
	for tok, k := range bustaRaw {
		resent += k - bustas[tok]
	}
	var answered, retried, lost, dupAcc, dupBusta, missing int
	for i, oc := range outcomes {
		tok := fmt.Sprintf("%s-%03d", run, i)
		switch {
		case oc.answered:
			answered++
		case oc.retried:
			retried++
		default:
			lost++
		}
		if accs[tok] > 1 {
			dupAcc++
		}
		if bustas[tok] > 1 {
			dupBusta++
		}
		if (oc.answered || oc.retried) && (accs[tok] != 1 || bustas[tok] != 1) {
			missing++
			t.Errorf("%s (answered %v, retried %v): %d accettazioni, %d buste", tok, oc.answered, oc.retried, accs[tok], bustas[tok])
		}
	}
	t.Logf("submissions %d: answered 250 at once %d, after retries %d, never %d; accettazioni %d, buste %d; missing %d, duplicated (two Message-IDs) accettazioni %d, buste %d; in-flight resends (same Message-ID) stored twice %d",
		n, answered, retried, lost, len(accs), len(bustas), missing, dupAcc, dupBusta, resent)
	if lost > 0 || dupAcc > 0 || dupBusta > 0 {
		t.Errorf("lost %d, duplicated %d accettazioni and %d buste", lost, dupAcc, dupBusta)
	}
	if resent > 3 {
		t.Errorf("%d resends after 3 kills: only the item in flight at each kill may go again", resent)
	}
	if a.LMTPD != "" && resent > 0 {
		t.Errorf("%d resends stored twice although the delivery point deduplicates by Message-ID", resent)
	}
}
