//go:build integration

package integration

// Sender-side tracking in the lab (issue 15, pec-spec.md §6.3): the 12 h and 24 h notices of a
// private pec-milter of A with deadlines of seconds, signed by A's key in SoftHSM2, reinjected
// into A's real Postfix and delivered by A's delivery point to the sender's Dovecot mailbox.
//
// A's recipients at B are routed, for these tests only, to a closed port (A's transport_maps):
// B is unreachable and A hears nothing. The receipts B would send are made with B's own key and
// injected at a temporary copy of A's MX listener that calls the private pec-milter, so they
// move its store, at the moment each case needs.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// trackingConfig gives the private pec-milter deadlines of seconds: 12 h -> 25 s, 22 h -> 40 s,
// 24 h -> 45 s, a sweep every 2 s.
func trackingConfig(y map[string]any) {
	y["tracking"] = map[string]any{"first": "25s", "final_from": "40s", "final": "45s", "sweep_every": "2s"}
}

// The deadlines of trackingConfig.
const (
	testFirst     = 25 * time.Second
	testFinalFrom = 40 * time.Second
	testFinal     = 45 * time.Second
)

// privateMX adds a temporary copy of A's MX listener whose milter is p's pec-milter (reception
// point, {daemon_name} pec-reception) and returns its address.
func privateMX(t *testing.T, a *lab.Provider, p *privateAP) string {
	t.Helper()
	addr, err := pflisten.FreePort(a.IP)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := pflisten.Add(a.Postfix.ConfigDir, addr, "smtp/inet",
		map[string]string{"smtpd_milters": "unix:" + p.sock, "syslog_name": "postfix/trackmx"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ln.Remove(); err != nil {
			t.Errorf("removing the temporary MX listener: %v", err)
		}
	})
	return addr
}

// unreachable routes addr through A's transport_maps to a closed port while the test runs (B
// unreachable for that recipient: Postfix defers the busta), and removes what is left of the
// test's messages for addr from A's queue at the end.
func unreachable(t *testing.T, a *lab.Provider, addr string) {
	t.Helper()
	if err := routesOf(a).add(a, addr, "smtp:[127.0.0.1]:9"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := routesOf(a).remove(a, addr); err != nil {
			t.Errorf("restoring transport_maps: %v", err)
		}
		dropQueued(t, a, addr)
	})
}

// discarded routes addr through A's transport_maps to Postfix's discard transport while the
// test runs: for the notices of rows a test inserts by the hundred.
func discarded(t *testing.T, a *lab.Provider, addr string) {
	t.Helper()
	if err := routesOf(a).add(a, addr, "discard:"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := routesOf(a).remove(a, addr); err != nil {
			t.Errorf("restoring transport_maps: %v", err)
		}
	})
}

// dropQueued deletes from A's queue the messages with a recipient addr (postqueue -j).
func dropQueued(t *testing.T, a *lab.Provider, addr string) {
	msgs, err := queued(a)
	if err != nil {
		t.Logf("postqueue -j: %v", err)
	}
	for _, q := range msgs {
		for _, r := range q.Recipients {
			if strings.EqualFold(r.Address, addr) {
				exec.Command("postsuper", "-c", a.Postfix.ConfigDir, "-d", q.QueueID).Run()
				break
			}
		}
	}
}

// queuedMsg is a message in Postfix's queue as postqueue -j lists it.
type queuedMsg struct {
	QueueID    string `json:"queue_id"`
	Recipients []struct {
		Address string `json:"address"`
	} `json:"recipients"`
}

// queued lists a's queue (postqueue -j).
func queued(a *lab.Provider) ([]queuedMsg, error) {
	out, err := exec.Command("postqueue", "-c", a.Postfix.ConfigDir, "-j").Output()
	if err != nil {
		return nil, err
	}
	var msgs []queuedMsg
	for _, line := range strings.Split(string(out), "\n") {
		var q queuedMsg
		if json.Unmarshal([]byte(line), &q) == nil {
			msgs = append(msgs, q)
		}
	}
	return msgs, nil
}

// waitRow waits until the tracking row of (id, rcpt) in st satisfies ok and returns it.
func waitRow(t *testing.T, st store.Store, id, rcpt string, within time.Duration, ok func(*store.Tracking) bool) store.Tracking {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rows, err := st.Tracking(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if strings.EqualFold(r.Recipient, rcpt) && ok(&r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			var states []string
			for _, r := range rows {
				states = append(states, fmt.Sprintf("%s %s (sent %s, taken %s, delivered %s, 12h %s, 24h %s)", r.Recipient, r.State,
					r.SentAt.Format(time.TimeOnly), r.TakenAt.Format(time.TimeOnly), r.DeliveredAt.Format(time.TimeOnly),
					r.Notice12At.Format(time.TimeOnly), r.Notice24At.Format(time.TimeOnly)))
			}
			t.Fatalf("tracking of %s for %s at %s:\n%s", id, rcpt, time.Now().Format(time.TimeOnly), strings.Join(states, "\n"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// acceptedID waits for the accettazione event of the PEC with token in its subject in st and
// returns its identificativo (from the store: sooner than the mailbox).
func acceptedID(t *testing.T, st store.Store, token string) string {
	t.Helper()
	ev := anomalyEvent(t, st, store.KindAccettazione, func(e *store.Event) bool { return strings.Contains(e.Subject, token) })
	return ev.Identificativo
}

// trackedTx is the transaction as the private access point tracks it (the busta's daticert
// kept with the tracking row), for B's receipts about it.
func trackedTx(t *testing.T, st store.Store, id string) *pec.Transaction {
	t.Helper()
	rows, err := st.Tracking(context.Background(), id)
	if err != nil || len(rows) == 0 {
		t.Fatalf("no tracking of %s: %v", id, err)
	}
	d, err := daticert.Parse(rows[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return pec.TransactionFrom(d)
}

// One PEC from A's sender to three users of an unreachable B, and B's receipts injected at A's
// MX as the cases need (pec-spec.md §6.3):
//   - r1, nothing heard: the 12 h notice, then the 24 h notice;
//   - r2, presa in carico at once (sent twice: a peer's retry) and consegna only after the 24 h
//     notice (sent twice): only the 24 h notice; the late consegna is recorded and delivered
//     to the sender once, and no further notice follows;
//   - r3, consegna between 12 h and 24 h: only the 12 h notice.
//
// Each notice arrives exactly once, passes pecctl verify, openssl smime -verify with the lab
// CA and the DTD; the service mailbox has the presa in carico once; tracking moved once.
func TestTrackingNotices(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, ricevuteA := user(t, a, "alice"), user(t, a, "ricevute")
	p := startPrivateAPWith(t, l, a, apOptions{config: trackingConfig})
	mx := privateMX(t, a, p)
	token := mailtest.Token("track")
	lp := strings.ToLower(token)
	r1, r2, r3 := lp+"-1@"+b.Domain, lp+"-2@"+b.Domain, lp+"-3@"+b.Domain
	for _, r := range []string{r1, r2, r3} {
		unreachable(t, a, r)
	}
	orig := raw("Buongiorno.\n", "From: "+alice.Address, "To: "+r1+", "+r2+", "+r3, "Subject: PEC "+token,
		"Message-ID: <"+token+"@client.example>")
	bB := providerBuilder(t, l, b)
	st := openStore(t, p.cfg)
	if err := p.submission.Send(alice.Address, []string{r1, r2, r3}, orig); err != nil {
		t.Fatal(err)
	}
	id := acceptedID(t, st, token)
	for _, r := range []string{r1, r2, r3} {
		waitRow(t, st, id, r, 30*time.Second, func(*store.Tracking) bool { return true })
	}
	tx := trackedTx(t, st, id)
	alicebox := mailbox(a, alice)
	send := func(m *pec.Message, rcpt string) {
		t.Helper()
		for range 2 { // the peer's MTA retried after a lost reply: the same bytes twice
			if err := inject(mx, b, "mx."+b.Domain, b.ServiceAddress, []string{rcpt}, m.Bytes()); err != nil {
				t.Fatalf("receipt refused at A's MX: %v", err)
			}
		}
	}

	// r2: B takes charge at once.
	presa, err := bB.PresaInCarico(pec.NewTimeRef(time.Now(), pec.Rome()), tx, a.ReceiptAddress, []string{r2})
	if err != nil {
		t.Fatal(err)
	}
	send(presa, a.ReceiptAddress)
	taken := waitRow(t, st, id, r2, 30*time.Second, func(r *store.Tracking) bool { return r.State == store.StateTaken })

	// r3: consegna once its 12 h notice is out, before the 24 h one is due.
	waitRow(t, st, id, r3, 30*time.Second, func(r *store.Tracking) bool { return r.State == store.StateNotified12 })
	cons3, err := bB.Consegna(pec.NewTimeRef(time.Now(), pec.Rome()), tx, r3, true, orig)
	if err != nil {
		t.Fatal(err)
	}
	send(cons3, alice.Address)
	row3 := waitRow(t, st, id, r3, 30*time.Second, func(r *store.Tracking) bool { return r.State == store.StateDelivered })
	if time.Since(row3.SentAt) >= testFinalFrom {
		t.Fatalf("the consegna for r3 came %v after dispatch: too late for the case", time.Since(row3.SentAt))
	}

	// r1 and r2: the final notice; then r2's late consegna.
	waitRow(t, st, id, r1, testFinal, func(r *store.Tracking) bool { return r.State == store.StateNotified24 })
	waitRow(t, st, id, r2, testFinal, func(r *store.Tracking) bool { return r.State == store.StateNotified24 })
	cons2, err := bB.Consegna(pec.NewTimeRef(time.Now(), pec.Rome()), tx, r2, true, orig)
	if err != nil {
		t.Fatal(err)
	}
	send(cons2, alice.Address)
	row2 := waitRow(t, st, id, r2, 30*time.Second, func(r *store.Tracking) bool { return !r.DeliveredAt.IsZero() })
	if row2.State != store.StateNotified24 || !row2.TakenAt.Equal(taken.TakenAt) || !row2.Notice12At.IsZero() {
		t.Errorf("r2 after its late consegna: %+v (taken first at %v)", row2, taken.TakenAt)
	}

	// What the sender sees, once a further notice would have come (final + 2 sweeps).
	time.Sleep(time.Until(row2.SentAt.Add(testFinal + 6*time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	got, err := alicebox.WaitFor(ctx, token, 7)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range got {
		c := pec.Classify(m, pec.ClassifyOptions{})
		if c.Kind == pec.KindPreavviso12h || c.Kind == pec.KindPreavviso24h || c.Kind == pec.KindAccettazione {
			c = emitted(t, l, m, c.Kind)
		} else {
			c = classify(t, l, m, c.Kind)
		}
		about := ""
		if c.Daticert != nil {
			about = c.Daticert.Dati.Consegna
		}
		seen[c.Kind.Info().Name+" "+about]++
	}
	want := map[string]int{
		pec.KindAccettazione.Info().Name + " ":      1,
		pec.KindPreavviso12h.Info().Name + " " + r1: 1, pec.KindPreavviso24h.Info().Name + " " + r1: 1,
		pec.KindPreavviso24h.Info().Name + " " + r2: 1, pec.KindConsegnaCompleta.Info().Name + " " + r2: 1,
		pec.KindPreavviso12h.Info().Name + " " + r3: 1, pec.KindConsegnaCompleta.Info().Name + " " + r3: 1,
	}
	if len(seen) != len(want) {
		t.Errorf("the sender received %v, want %v", seen, want)
	}
	for k, n := range want {
		if seen[k] != n {
			t.Errorf("%q: %d messages, want %d (all: %v)", k, seen[k], n, seen)
		}
	}
	// The presa in carico, sent twice, is in the service mailbox once.
	waitOne(t, mailbox(a, ricevuteA), token)
	// The log: one notice event per notice.
	kinds := map[store.EventKind]int{}
	if err := st.ScanLog(context.Background(), store.Query{Identificativo: id}, func(e *store.Event) error {
		kinds[e.Kind]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if kinds[store.KindPreavviso12h] != 2 || kinds[store.KindMancataConsegna24h] != 2 {
		t.Errorf("private store's log of %s: %v", id, kinds)
	}
}
