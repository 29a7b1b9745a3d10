//go:build integration

package integration

// The scenario suite (issue 17 item 2): one scenario per flow of pec-spec.md §2 and per row of
// the table in §7.4, through the lab's real Postfix, Dovecot, slapd, clamd and SoftHSM2. Each
// scenario sends what its flow or row needs and declares what must land in every watched
// mailbox (kinds per mailbox: the users', the providers' service mailboxes and the ordinary
// ones). The suite then reads every watched mailbox over IMAP, counts each scenario's messages
// by kind (exactly those, nothing extra anywhere), checks every system message with pecctl
// verify --strict, openssl smime -verify and xmllint --dtdvalid, checks the legal log with
// pecctl trace (pecctl log search for what is not a transaction), and prints the table.
//
// A scenario's messages are those containing its token (IMAP SEARCH TEXT over the messages
// that arrived since the suite started): the token rides in the Subject, which every system
// message repeats, and a DSN carries the returned message's header. Scenarios therefore share
// mailboxes without seeing each other's mail. The sends run one after the other on the test
// goroutine (a second or so each; private daemons need t.Cleanup); the waiting, most of the
// time, is shared: every scenario is collected in the same polling rounds, so the suite does
// not depend on -parallel (2 on a 2-core machine).

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// scenario is one row of the suite.
type scenario struct {
	name   string
	rule   string      // the flow or row of pec-spec.md it proves
	notRun string      // why it cannot be produced through the real stack ("" = it runs)
	early  int         // sent before the others, higher first: it starts private daemons, or waits for deadlines
	send   func(*scen) // sends and declares the expectations (s.expect, s.logged)
}

// scen is a scenario being run: what it expects and what was found.
type scen struct {
	*suite
	scenario
	token string
	want  map[string]map[string]int // mailbox -> label -> count
	logs  []logWant
	id    string   // the transaction's identificativo (from its messages, or set by send)
	after []func() // checks that need the messages (run on the test goroutine once collected)

	mu    sync.Mutex
	found map[string]map[string]int // mailbox -> label -> count
	seen  map[string]map[uint32]bool
	got   []*gotMsg
	errs  []string
}

// gotMsg is one message of a scenario read back from a mailbox.
type gotMsg struct {
	box   string
	label string
	raw   []byte
	c     *pec.Classified
}

// logWant is what one provider's legal log must show about the scenario.
type logWant struct {
	cfg       string            // pec.yaml of the provider (or private daemon) whose log is read
	kinds     []store.EventKind // events that must be there
	bySubject bool              // not a transaction (anomaly, refusal): pecctl log search -subject token
	none      bool              // with bySubject: no event at all
	match     string            // with bySubject: text one event's JSON line must hold (the reason, the virus)
	// states: recipient -> tracking state at the sender's provider (store.State), or
	// "esterno" for an ordinary recipient, never tracked (pec-spec.md §2.4).
	states map[string]store.State
}

// fail records a failure of the scenario (safe from any goroutine).
func (s *scen) fail(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf(format, a...))
}

// expect declares the messages mailbox box must receive (labels, see label), once each unless
// repeated.
func (s *scen) expect(box string, labels ...string) {
	if s.want[box] == nil {
		s.want[box] = map[string]int{}
	}
	for _, l := range labels {
		s.want[box][l]++
	}
}

// logged declares events cfg's legal log must hold about the scenario's transaction.
func (s *scen) logged(cfg string, kinds ...store.EventKind) {
	s.logs = append(s.logs, logWant{cfg: cfg, kinds: kinds})
}

// tracked declares the state of each recipient that pecctl trace of the scenario's
// transaction must show at the sender's provider (configuration cfg).
func (s *scen) tracked(cfg string, states map[string]store.State) {
	s.logs = append(s.logs, logWant{cfg: cfg, states: states})
}

// loggedWhy declares an event about a message that is not a PEC transaction (found by the
// scenario's token in the subject, with pecctl log search) whose JSON line must hold match:
// the reason (`"error_detail":"dsn:`) or the virus.
func (s *scen) loggedWhy(cfg string, kind store.EventKind, match string) {
	s.logs = append(s.logs, logWant{cfg: cfg, kinds: []store.EventKind{kind}, bySubject: true, match: match})
}

// quarantined declares that provider cfg's store must keep the infected message of the
// scenario's transaction, with the virus named (RFC 6109 §2.2.4: kept 30 months).
func (s *scen) quarantined(cfg string) {
	s.after = append(s.after, func() {
		if s.id == "" {
			s.fail("quarantine: no identificativo")
			return
		}
		q, err := openStore(s.t, cfg).Quarantined(context.Background(), s.id)
		if err != nil || len(q) != 1 || !strings.Contains(q[0].Virus, "EICAR") {
			s.fail("quarantine of %s at %s: %d items (%v), want the message with its virus", s.id, filepath.Base(filepath.Dir(cfg)), len(q), err)
		}
	})
}

// noLog declares that cfg's legal log holds nothing with the scenario's token.
func (s *scen) noLog(cfg string) {
	s.logs = append(s.logs, logWant{cfg: cfg, bySubject: true, none: true})
}

// label names a message in the table: its kind (pec.Kind names), for a receipt or notice about
// one recipient that recipient, and for an avviso di mancata consegna its daticert errore
// (pec-spec.md §7.4: no-dest, no-dominio, altro).
func label(k pec.Kind, about string, errore ...string) string {
	l := k.Info().Name
	if about != "" {
		l += "(" + about + ")"
	}
	for _, e := range errore {
		l += " " + e
	}
	return l
}

func labelOf(c *pec.Classified) string {
	if c.Daticert == nil {
		return label(c.Kind, "")
	}
	if c.Kind == pec.KindMancataConsegna {
		return label(c.Kind, c.Daticert.Dati.Consegna, string(c.Daticert.Errore))
	}
	return label(c.Kind, c.Daticert.Dati.Consegna)
}

// complete reports whether every expected message has arrived.
func (s *scen) complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for box, labels := range s.want {
		for l, n := range labels {
			if s.found[box][l] < n {
				return false
			}
		}
	}
	return true
}

// record adds a message read from box, once per UID.
func (s *scen) record(box string, uid uint32, raw []byte) {
	c := pec.Classify(raw, pec.ClassifyOptions{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[box] == nil {
		s.seen[box] = map[uint32]bool{}
		s.found[box] = map[string]int{}
	}
	if s.seen[box][uid] {
		return
	}
	s.seen[box][uid] = true
	l := labelOf(c)
	s.found[box][l]++
	s.got = append(s.got, &gotMsg{box: box, label: l, raw: raw, c: c})
	if s.id == "" && c.Daticert != nil {
		s.id = c.Daticert.Dati.Identificativo
	}
}

// judge compares what was found with what was expected, mailbox by mailbox and kind by kind
// (every watched mailbox: one that expects nothing must hold nothing of the scenario).
func (s *scen) judge() []tableRow {
	var rows []tableRow
	boxes := map[string]bool{}
	for b := range s.want {
		boxes[b] = true
	}
	for b := range s.found {
		boxes[b] = true
	}
	for _, b := range sortedKeys(boxes) {
		labels := map[string]bool{}
		for l := range s.want[b] {
			labels[l] = true
		}
		for l := range s.found[b] {
			labels[l] = true
		}
		for _, l := range sortedKeys(labels) {
			want, got := s.want[b][l], s.found[b][l]
			if want != got {
				s.fail("%s: %d × %s, want %d", b, got, l, want)
			}
			rows = append(rows, tableRow{scenario: s.name, mailbox: b, kind: l, want: strconv.Itoa(want), found: strconv.Itoa(got), ok: want == got})
		}
	}
	if len(rows) == 0 {
		rows = append(rows, tableRow{scenario: s.name, mailbox: "every watched mailbox", kind: "anything", want: "0", found: "0", ok: true})
	}
	return rows
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// suite is what every scenario shares: the lab, its people, the watched mailboxes.
type suite struct {
	t       *testing.T
	l       *lab.Lab
	a, b, o *lab.Provider
	users   map[string]lab.User // "alice", "ricevute@A", ... (see newSuite)
	boxes   []*watched
	pecctl  string
	ap      *privateAP // the private pec-milter of A, started by the first scenario that needs it
	mx      string     // its MX listener
}

// watched is a mailbox the suite reads, from the UID it had when the suite started.
type watched struct {
	addr  string
	mb    mailtest.Mailbox
	start uint32
}

// addr is the address of a lab user by local part ("alice"), or "ricevute@A" style for a
// provider's service mailboxes.
func (su *suite) addr(name string) string {
	u, ok := su.users[name]
	if !ok {
		su.t.Fatalf("scenario suite: no user %q", name)
	}
	return u.Address
}

func (su *suite) user(name string) *lab.User {
	u, ok := su.users[name]
	if !ok {
		su.t.Fatalf("scenario suite: no user %q", name)
	}
	return &u
}

// newSuite finds the people and marks where every watched mailbox starts.
func newSuite(t *testing.T) *suite {
	l, a, b, o := pecLab(t)
	su := &suite{t: t, l: l, a: a, b: b, o: o, users: map[string]lab.User{}, pecctl: pecctl(t)}
	add := func(p *lab.Provider, name, local string) {
		u := user(t, p, local)
		su.users[name] = u
		su.boxes = append(su.boxes, &watched{addr: u.Address, mb: mailbox(p, u)})
	}
	for _, n := range []string{"alice", "anna", "ordinario@posta-a.test"} {
		add(a, n, n)
	}
	add(a, "ricevute@A", a.ReceiptAddress)
	add(a, "servizio@A", a.ServiceAddress)
	for _, n := range []string{"bruno", "bianca", "piena"} {
		add(b, n, n)
	}
	add(b, "ricevute@B", b.ReceiptAddress)
	add(b, "servizio@B", b.ServiceAddress)
	for _, n := range []string{"oscar", "olga"} {
		add(o, n, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(su.boxes))
	for i, w := range su.boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.start, errs[i] = uidNext(w.mb)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return su
}

func uidNext(mb mailtest.Mailbox) (uint32, error) {
	c, err := mailtest.DialIMAP(mb.Addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.Login(mb.User, mb.Pass); err != nil {
		return 0, err
	}
	return c.UIDNext("INBOX")
}

// poll reads each watched mailbox once and records, for each scenario in scs, its messages
// that arrived since the suite started.
func (su *suite) poll(scs []*scen) {
	var wg sync.WaitGroup
	for _, w := range su.boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.read(scs); err != nil {
				su.t.Logf("reading %s: %v (retried next round)", w.addr, err)
			}
		}()
	}
	wg.Wait()
}

func (w *watched) read(scs []*scen) error {
	c, err := mailtest.DialIMAP(w.mb.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(w.mb.User, w.mb.Pass); err != nil {
		return err
	}
	if _, err := c.Select("INBOX"); err != nil {
		return err
	}
	for _, s := range scs {
		uids, err := c.UIDSearch(fmt.Sprintf("UID %d:* TEXT %s", w.start, mailtest.Quote(s.token)))
		if err != nil {
			return err
		}
		for _, u := range uids {
			if u < w.start { // "n:*" includes the last message even below n (RFC 3501 §6.4.8)
				continue
			}
			s.mu.Lock()
			done := s.seen[w.addr][u]
			s.mu.Unlock()
			if done {
				continue
			}
			raw, err := c.Fetch(u)
			if err != nil {
				return err
			}
			s.record(w.addr, u, raw)
		}
	}
	_ = c.Logout()
	return nil
}

// collect polls until every scenario has what it expects (or the deadline passes), waits for
// what would arrive right behind (a duplicate, a stray receipt), and reads everything once more.
func (su *suite) collect(scs []*scen, deadline time.Time, settle time.Duration) {
	for {
		var pending []*scen
		for _, s := range scs {
			if !s.complete() {
				pending = append(pending, s)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		su.poll(pending)
		time.Sleep(time.Second)
	}
	time.Sleep(settle)
	su.poll(scs)
}

// tableRow is one line of the final table: how many messages of one kind one mailbox was
// expected to receive in a scenario, and how many it did.
type tableRow struct {
	scenario, mailbox, kind, want, found string
	ok                                   bool
	notRun                               string // why the scenario did not run
}

// table formats the rows (the scenario and mailbox only on their first line).
func table(rows []tableRow) string {
	head := []string{"scenario", "mailbox", "message", "expected", "found", "result"}
	w := make([]int, len(head))
	for i, h := range head {
		w[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range []string{r.scenario, r.mailbox, r.kind, r.want, r.found} {
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	line := func(cols ...string) {
		for i, c := range cols[:5] {
			b.WriteString(c + strings.Repeat(" ", w[i]-utf8.RuneCountInString(c)+2))
		}
		b.WriteString(cols[5] + "\n")
	}
	line(head...)
	var lastS, lastM string
	for _, r := range rows {
		name, box := r.scenario, r.mailbox
		if name == lastS {
			name = ""
			if box == lastM {
				box = ""
			}
		}
		lastS, lastM = r.scenario, r.mailbox
		res := "PASS"
		switch {
		case r.notRun != "":
			res = "NOT RUN: " + r.notRun
		case !r.ok:
			res = "FAIL"
		}
		line(name, box, r.kind, r.want, r.found, res)
	}
	return b.String()
}
