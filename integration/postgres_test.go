//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
)

// Issue 18: the access point on PostgreSQL, through A's real Postfix, while the database
// fails over. A private access point (privateap_test.go) keeps its store in a private
// PostgreSQL primary with a synchronous streaming standby, both named in its DSN. Under load
// the primary is stopped and, after a while without any primary, the standby is promoted:
// submissions get temporary failures during the switch (the client retries), then succeed
// with no configuration change. Afterwards every submission that got its 250 has exactly one
// accettazione and one busta, its accettazione and busta events are in the log once, and
// the log's sequence numbers run 1..N without a gap across the switch.
func TestDurabilityPostgresFailover(t *testing.T) {
	l, a, _, o := pecLab(t)
	primary, standby, dsn := pgPair(t)
	p := startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) {
		y["store"] = map[string]any{"driver": "postgres", "dsn": dsn}
	}})

	n, workers := 150, 4
	if testing.Short() {
		n = 40
	}
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	run := mailtest.Token("pgfo")
	type outcome struct{ answered, retried bool }
	outcomes := make([]outcome, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	tempFailures := 0
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				tok := fmt.Sprintf("%s-%03d", run, i)
				m := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+tok, "Message-ID: <"+tok+"@client.example>")
				err := p.submission.Send(alice.Address, []string{oscar.Address}, m)
				oc := outcome{answered: err == nil}
				if err != nil {
					var se *mailtest.StepError
					mu.Lock()
					if errors.As(err, &se) && se.Code >= 500 {
						t.Errorf("%s: %v: a permanent refusal, not a temporary failure", tok, err)
					} else {
						tempFailures++
					}
					mu.Unlock()
					oc.retried = retrySend(p.submission, alice.Address, []string{oscar.Address}, m, 3*time.Minute) == nil
				}
				mu.Lock()
				outcomes[i] = oc
				mu.Unlock()
			}
		})
	}
	switched := make(chan struct{})
	go func() {
		defer close(switched)
		time.Sleep(4 * time.Second)
		if err := primary.Halt(); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(3 * time.Second) // no primary at all
		if err := standby.Promote(); err != nil {
			t.Error(err)
		}
	}()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	<-switched

	// Confirmations refused during the switch are retried by Postfix.
	accs, bustas, events, seqs := countRun(t, a, o, alice, oscar, run, n, dsn)
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("event %d has sequence number %d: the log has a gap across the switch", i, s)
		}
	}
	var answered, retried, lost int
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
		ev := events[tok]
		if (oc.answered || oc.retried) && (accs[tok] != 1 || bustas[tok] != 1 ||
			ev[store.KindAccettazione] != 1 || ev[store.KindBustaTrasporto] != 1) {
			t.Errorf("%s (answered %v, retried %v): %d accettazioni, %d buste received; log %v", tok, oc.answered,
				oc.retried, accs[tok], bustas[tok], ev)
		}
	}
	t.Logf("submissions %d: 250 at once %d, after retries %d, never %d; %d temporary failures during the switch; log 1..%d",
		n, answered, retried, lost, tempFailures, len(seqs))
	if lost > 0 {
		t.Errorf("%d submissions never accepted", lost)
	}
	if tempFailures == 0 {
		t.Error("no submission failed during the switch: the failover was not exercised")
	}
}

// pgPair starts a private PostgreSQL primary with a synchronous streaming standby and
// returns them with a store DSN naming both.
func pgPair(t *testing.T) (primary, standby *pgtest.Cluster, dsn string) {
	t.Helper()
	primary, err := pgtest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Stop() }) //nolint:errcheck
	standby, err = primary.Standby()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() }) //nolint:errcheck
	primary.Exec(t, primary.DSN, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	primary.Exec(t, primary.DSN, `SELECT pg_reload_conf()`)
	dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2",
		primary.Port, standby.Port)
	return primary, standby, dsn
}

// Issue 18: two access point nodes of A share one PostgreSQL store. Two private pec-milter
// processes (nodes a1 and a2, each behind its own submission listener of A's Postfix, with
// its own outbox drainer and confirmation listener) take 300 submissions split between them;
// node a1 is killed with SIGKILL twice mid-load and restarted while a2 carries on. Every
// submission that got its 250 has one accettazione and one busta, its events are in the log
// once, no message is accepted twice, and the log is numbered 1..N. (Two pec-milter nodes
// on one Postfix instance; TestTwoNodesOfA runs two whole nodes, each with its own Postfix.)
func TestTwoNodesSharePostgres(t *testing.T) {
	l, a, _, o := pecLab(t)
	_, _, dsn := pgPair(t)
	node := func(name string) *privateAP {
		return startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) {
			y["store"] = map[string]any{"driver": "postgres", "dsn": dsn}
			y["node"] = name
		}})
	}
	nodes := []*privateAP{node("a1"), node("a2")}
	n := 300
	if testing.Short() {
		n = 60
	}
	alice, oscar := user(t, a, "alice"), user(t, o, "oscar")
	run := mailtest.Token("2node")
	answered := make([]bool, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 4 {
		p := nodes[w%2]
		wg.Go(func() {
			for i := range jobs {
				tok := fmt.Sprintf("%s-%03d", run, i)
				m := raw("x\n", "From: "+alice.Address, "To: "+oscar.Address, "Subject: "+tok, "Message-ID: <"+tok+"@client.example>")
				err := p.submission.Send(alice.Address, []string{oscar.Address}, m)
				if err != nil { // the client retries, through the same node, until it gets 250
					err = retrySend(p.submission, alice.Address, []string{oscar.Address}, m, 3*time.Minute)
				}
				mu.Lock()
				answered[i] = err == nil
				mu.Unlock()
			}
		})
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for range 2 {
			time.Sleep(3 * time.Second)
			nodes[0].killMilter()
			time.Sleep(time.Second)
			nodes[0].startMilter(t)
		}
	}()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	<-killed
	accs, bustas, events, seqs := countRun(t, a, o, alice, oscar, run, n, dsn)
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("event %d has sequence number %d", i, s)
		}
	}
	lost := 0
	for i, ok := range answered {
		tok := fmt.Sprintf("%s-%03d", run, i)
		if !ok {
			lost++
		}
		ev := events[tok]
		if ok && (accs[tok] != 1 || bustas[tok] != 1 || ev[store.KindAccettazione] != 1 || ev[store.KindBustaTrasporto] != 1) {
			t.Errorf("%s: %d accettazioni, %d buste received; log %v", tok, accs[tok], bustas[tok], ev)
		}
	}
	t.Logf("submissions %d through two nodes, one killed twice: never accepted %d; accettazioni %d, buste %d; log 1..%d",
		n, lost, len(accs), len(bustas), len(seqs))
	if lost > 0 {
		t.Errorf("%d submissions never accepted", lost)
	}
}

// countRun waits until alice and oscar have received what a run of n submissions makes
// (Postfix retries deferred confirmations, lab backoff up to 60 s), then counts accettazioni
// and buste per token, and reads the store's log (at dsn): events per token and kind, and
// every sequence number in order.
func countRun(t *testing.T, a, o *lab.Provider, alice, oscar lab.User, run string, n int, dsn string) (accs, bustas map[string]int,
	events map[string]map[store.EventKind]int, seqs []int64) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(run) + `-\d{3}`)
	idRe := regexp.MustCompile(`(?mi)^Message-ID:\s*(<[^>]+>)`)
	// Counted by distinct Message-ID: after a SIGKILL the drainer may send its in-flight item
	// again with the same Message-ID (issue 11), which only the delivery point (pec-lmtpd)
	// stores once per mailbox; two different Message-IDs would be a real duplicate.
	count := func(mb mailtest.Mailbox) map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		msgs, _ := mb.WaitFor(ctx, run, 0)
		out, seen := map[string]int{}, map[string]bool{}
		for _, m := range msgs {
			tok := re.FindString(string(m))
			if id := idRe.FindSubmatch(m); id != nil && !seen[tok+string(id[1])] {
				seen[tok+string(id[1])] = true
				out[tok]++
			}
		}
		return out
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		accs, bustas = count(mailbox(a, alice)), count(mailbox(o, oscar))
		if len(accs) >= n && len(bustas) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	time.Sleep(5 * time.Second)
	accs, bustas = count(mailbox(a, alice)), count(mailbox(o, oscar))
	st, err := postgres.Open(context.Background(), dsn, postgres.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events = map[string]map[store.EventKind]int{}
	if err := st.ScanLog(context.Background(), store.Query{}, func(e *store.Event) error {
		seqs = append(seqs, e.Seq)
		if tok := re.FindString(e.Subject); tok != "" {
			if events[tok] == nil {
				events[tok] = map[store.EventKind]int{}
			}
			events[tok][e.Kind]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return accs, bustas, events, seqs
}
