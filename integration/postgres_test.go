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
	primary, err := pgtest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Stop() }) //nolint:errcheck
	standby, err := primary.Standby()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() }) //nolint:errcheck
	primary.Exec(t, primary.DSN, `ALTER SYSTEM SET synchronous_standby_names = '*'`)
	primary.Exec(t, primary.DSN, `SELECT pg_reload_conf()`)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2",
		primary.Port, standby.Port)
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

	// Confirmations refused during the switch are retried by Postfix (lab backoff up to 60 s).
	re := regexp.MustCompile(regexp.QuoteMeta(run) + `-\d{3}`)
	count := func(mb mailtest.Mailbox) map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		msgs, _ := mb.WaitFor(ctx, run, 0)
		out := map[string]int{}
		for _, m := range msgs {
			out[re.FindString(string(m))]++
		}
		return out
	}
	deadline := time.Now().Add(4 * time.Minute)
	var accs, bustas map[string]int
	for {
		accs, bustas = count(mailbox(a, alice)), count(mailbox(o, oscar))
		if len(accs) >= n && len(bustas) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	time.Sleep(5 * time.Second)
	accs, bustas = count(mailbox(a, alice)), count(mailbox(o, oscar))

	st, err := postgres.Open(context.Background(), standby.DSN, postgres.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events := map[string]map[store.EventKind]int{}
	var seqs []int64
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
