//go:build integration

package integration

// The sweeper's durability and its lease (issue 15, pec-spec.md §6.3): rows a test inserts by
// the hundred into a private pec-milter's store, due for the 12 h notice, whose notices go to
// an address of A routed to Postfix's discard transport.

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
	"gopkg.in/yaml.v3"
)

// insertDue commits n tracking rows of sender (token in their subject and identificativo)
// whose 12 h notice is due now, and returns their identificativi.
func insertDue(t *testing.T, st store.Store, a *lab.Provider, sender, token string, n int) []string {
	t.Helper()
	d := &daticert.Postacert{Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno}
	d.Intestazione.Mittente, d.Intestazione.Risposte = sender, sender
	d.Intestazione.Oggetto = daticert.Subject(token)
	now := time.Now()
	b := &store.Batch{}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s.%04d@%s", strings.ToLower(token), i, a.Domain)
		rcpt := fmt.Sprintf("r%04d@pec-b.test", i)
		d.Intestazione.Destinatari = []daticert.Destinatario{{Tipo: daticert.Certificato, Addr: rcpt}}
		d.Dati = daticert.Dati{GestoreEmittente: a.Name, Data: daticert.Data{Zona: "+0100", Giorno: now.Format("02/01/2006"), Ora: now.Format("15:04:05")},
			Identificativo: id, Msgid: "<" + token + "@client.example>", Ricevuta: daticert.Completa}
		b.Track(store.TrackInsert{Identificativo: id, Recipient: rcpt, SentAt: now.Add(-time.Minute), Sender: sender, Subject: token,
			Data: daticert.Marshal(d), Deadlines: store.Deadlines{First: time.Second, FinalFrom: time.Hour, Final: 2 * time.Hour}})
		ids = append(ids, id)
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return ids
}

// noticesPerRow counts the 12 h notice events in st's log by identificativo, for the rows whose
// subject has token.
func noticesPerRow(t *testing.T, st store.Store, token string) map[string]int {
	t.Helper()
	got := map[string]int{}
	err := st.ScanLog(context.Background(), store.Query{Kinds: []store.EventKind{store.KindPreavviso12h}, Subject: token},
		func(e *store.Event) error { got[e.Identificativo]++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkOnce checks that every row of ids has exactly one 12 h notice in the log, is
// notified-12h, and has exactly one notice in the outbox (sent or pending: distinct
// Message-IDs, since an item may be sent between the reads of the two states).
func checkOnce(t *testing.T, st store.Store, token string, ids []string) {
	t.Helper()
	got := noticesPerRow(t, st, token)
	outbox := map[string]map[string]bool{}
	for _, state := range []store.OutboxState{store.OutboxPending, store.OutboxSent, store.OutboxParked} {
		items, err := st.ListOutbox(context.Background(), state, 1_000_000)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range items {
			if strings.HasPrefix(it.Identificativo, strings.ToLower(token)) {
				if outbox[it.Identificativo] == nil {
					outbox[it.Identificativo] = map[string]bool{}
				}
				outbox[it.Identificativo][it.MessageID] = true
			}
		}
	}
	bad := 0
	for _, id := range ids {
		rows, err := st.Tracking(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if got[id] != 1 || len(outbox[id]) != 1 || len(rows) != 1 || rows[0].State != store.StateNotified12 {
			if bad++; bad <= 5 {
				t.Errorf("%s: %d notice events, %d outbox items, rows %d (want 1, 1, one notified-12h)", id, got[id], len(outbox[id]), len(rows))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d rows without exactly one notice", bad, len(ids))
	}
}

// waitNotices waits until the rows with token have want notice events (at least) in st.
func waitNotices(t *testing.T, st store.Store, token string, want int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := len(noticesPerRow(t, st, token))
		if n >= want {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d notices after %v", n, want, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pec-milter killed (SIGKILL) in the middle of a sweep of 600 due rows and started again:
// every row ends with exactly one 12 h notice, in the log and in the outbox. Each signature is
// slowed down (testhooks build, sign-delay) so the sweep takes seconds and the kill lands in
// it; a page's notices are committed all or nothing.
func TestTrackingSweepKilled(t *testing.T) {
	t.Parallel()
	l, a, _, _ := pecLab(t)
	const n = 600
	token := mailtest.Token("swkill")
	sink := strings.ToLower(token) + "@" + a.Domain
	discarded(t, a, sink)
	p := startPrivateAPWith(t, l, a, apOptions{config: trackingConfig, hooks: true, noStart: true})
	p.hook(t, "sign-delay", "50ms") // a page of 256 takes over 1.5 s: the kill lands between two pages
	st := openStore(t, p.cfg)
	ids := insertDue(t, st, a, sink, token, n)
	p.startMilter(t)
	waitNotices(t, st, token, 1, 60*time.Second)
	p.killMilter()
	done := len(noticesPerRow(t, st, token))
	if done >= n {
		t.Fatalf("the sweep ended (%d notices) before the kill: the test proves nothing; slow the signer down", done)
	}
	t.Logf("killed with %d of %d notices committed", done, n)
	os.Remove(filepath.Join(p.hooks, "sign-delay"))
	p.startMilter(t)
	waitNotices(t, st, token, n, 90*time.Second)
	time.Sleep(5 * time.Second) // two more sweeps: nothing may follow
	checkOnce(t, st, token, ids)
}

// second starts another pec-milter on p's store (its own node name and sockets) and returns
// it with its log file; it is stopped at the end of the test.
func (p *privateAP) second(t *testing.T, node string) (*exec.Cmd, string) {
	t.Helper()
	raw, err := os.ReadFile(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(p.sock, ".sock") + "-" + node
	y["node"] = node
	y["milter"] = map[string]any{"listen": "unix:" + base + ".sock", "timeout": "45s"}
	c := y["confirm"].(map[string]any)
	c["listen"] = "unix:" + base + "-c.sock"
	out, _ := yaml.Marshal(y)
	cfg := filepath.Join(p.dir, "pec-"+node+".yaml")
	if err := os.WriteFile(cfg, out, 0o600); err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(p.dir, "pec-milter-"+node+".log")
	f, _ := os.Create(logf)
	cmd := exec.Command(p.bin, "-config", cfg)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
		f.Close()
		os.Remove(base + ".sock")
		os.Remove(base + "-c.sock")
		if t.Failed() {
			b, _ := os.ReadFile(logf)
			t.Logf("pec-milter %s log:\n%s", node, b)
		}
	})
	waitDial(t, "unix", base+".sock")
	return cmd, logf
}

// sweepOwner is the holder of the "sweep" lease in the SQLite store db.
func sweepOwner(t *testing.T, db string) string {
	t.Helper()
	c, err := sql.Open("sqlite3", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var owner string
	if err := c.QueryRow("SELECT owner FROM leases WHERE name = 'sweep'").Scan(&owner); err != nil {
		t.Fatal(err)
	}
	return owner
}

// sweptIn reports whether a pec-milter log shows a sweep that sent notices.
func sweptIn(t *testing.T, logf string) bool {
	t.Helper()
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), `"msg":"sweep"`)
}

// Two pec-milter processes on one SQLite store: one holds the "sweep" lease and sends every
// notice, the other sends none; stopped, the first hands over (its lease expires after two
// sweep intervals) and the second sends the notices due next. No notice is sent twice.
func TestTrackingSweepLease(t *testing.T) {
	t.Parallel()
	l, a, _, _ := pecLab(t)
	token := mailtest.Token("swlease")
	sink := strings.ToLower(token) + "@" + a.Domain
	discarded(t, a, sink)
	p := startPrivateAPWith(t, l, a, apOptions{config: func(y map[string]any) { trackingConfig(y); y["node"] = "n1" }})
	first := p.logf.Name()
	p2, second := p.second(t, "n2")
	st := openStore(t, p.cfg)
	ids := insertDue(t, st, a, sink, token+"x", 40)
	waitNotices(t, st, token+"x", 40, 60*time.Second)
	owner := sweepOwner(t, p.db)
	if s1, s2 := sweptIn(t, first), sweptIn(t, second); s1 == s2 || (owner == "pec-milter/n1") != s1 {
		t.Fatalf("lease owner %s; n1 swept %v, n2 swept %v: want exactly the owner", owner, s1, s2)
	}
	// Stop the one that swept; the other takes over.
	stopped, other := p.milter, "pec-milter/n2"
	if owner == "pec-milter/n2" {
		stopped, other = p2, "pec-milter/n1"
	}
	stopped.Process.Signal(syscall.SIGTERM)
	stopped.Wait()
	ids2 := insertDue(t, st, a, sink, token+"y", 40)
	waitNotices(t, st, token+"y", 40, 60*time.Second)
	if owner := sweepOwner(t, p.db); owner != other {
		t.Errorf("after the stop the lease is %s's, want %s", owner, other)
	}
	time.Sleep(5 * time.Second)
	checkOnce(t, st, token+"x", ids)
	checkOnce(t, st, token+"y", ids2)
}
