//go:build integration

package integration

// The checks of the fault run (faultrun_test.go): what every mailbox holds, over IMAP, and
// what the legal logs of A and B recorded.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

var messageIDRe = regexp.MustCompile(`(?mi)^Message-ID:\s*(<[^>]+>)`)

// checkFaultRun waits until the mailboxes hold what the answered submissions should give,
// then counts and checks every message and log event of the run: sender (a local part of
// provider a) wrote to rcpts at provider b.
func checkFaultRun(t *testing.T, a, b *lab.Provider, sender string, rcpts []string, run string, answered []bool, short bool) *faultCounts {
	alice, ricevute := mailbox(a, user(t, a, sender)), mailbox(a, user(t, a, "ricevute"))
	boxes := map[string]mailtest.Mailbox{}
	for _, r := range rcpts {
		boxes[r] = mailbox(b, user(t, b, r))
	}
	c := &faultCounts{acc: map[string]int{}, presa: map[string]int{}, outcome: map[string]map[string]int{}, busta: map[string]map[string]int{}}
	for _, ok := range answered {
		if ok {
			c.answered++
		}
	}
	// Deferred mail is retried after 10 to 60 s in the lab (minimal/maximal_backoff_time).
	limit := 8 * time.Minute
	if short {
		limit = 2 * time.Minute
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		// The sender: an accettazione and an outcome per recipient of each message.
		done := countSubject(t, alice, run) >= (1+len(rcpts))*c.answered && countSubject(t, ricevute, run) >= c.answered
		for _, mb := range boxes {
			done = done && countSubject(t, mb, run) >= c.answered
		}
		if done {
			break
		}
		time.Sleep(3 * time.Second)
	}
	time.Sleep(5 * time.Second) // room for a late duplicate
	tokRe := regexp.MustCompile(regexp.QuoteMeta(run) + `-\d{3}`)
	c.dup += countMailbox(t, alice, run, tokRe, func(tok string, m *pec.Classified) {
		switch m.Kind {
		case pec.KindAccettazione:
			c.acc[tok]++
		case pec.KindConsegnaSintetica, pec.KindMancataConsegna:
			inc(c.outcome, tok, strings.ToLower(m.Daticert.Dati.Consegna))
			c.consegne++
		default:
			t.Errorf("%s holds a %v for %s", alice.User, m.Kind, tok)
		}
	})
	c.dup += countMailbox(t, ricevute, run, tokRe, func(tok string, m *pec.Classified) {
		if m.Kind != pec.KindPresaInCarico {
			t.Errorf("%s holds a %v for %s", ricevute.User, m.Kind, tok)
			return
		}
		c.presa[tok]++
	})
	for r, mb := range boxes {
		c.dup += countMailbox(t, mb, run, tokRe, func(tok string, m *pec.Classified) {
			if m.Kind != pec.KindBusta {
				t.Errorf("%s holds a %v for %s", r, m.Kind, tok)
				return
			}
			inc(c.busta, tok, r)
		})
	}
	c.judge(t, run, rcpts, answered)
	checkFaultLogs(t, a, b, run, tokRe, c, rcpts)
	return c
}

func inc(m map[string]map[string]int, k1, k2 string) {
	if m[k1] == nil {
		m[k1] = map[string]int{}
	}
	m[k1][k2]++
}

// countMailbox classifies each message of the run in mb and passes it on with its token; it
// returns how many messages repeat a Message-ID already seen in mb.
func countMailbox(t *testing.T, mb mailtest.Mailbox, run string, tokRe *regexp.Regexp, fn func(tok string, m *pec.Classified)) int {
	seen, dups := map[string]bool{}, 0
	for _, raw := range fetchRaw(t, mb, run) {
		m := pec.Classify(raw, pec.ClassifyOptions{})
		tok := tokRe.FindString(string(raw)) // the subject's token; the only one in the message
		if id := messageIDRe.FindSubmatch(raw); id != nil {
			if seen[string(id[1])] {
				dups++
				t.Errorf("%s holds %s twice", mb.User, id[1])
				continue
			}
			seen[string(id[1])] = true
		}
		if m.Verified == nil || m.Daticert == nil {
			t.Errorf("%s: a %v for %s with signature %v", mb.User, m.Kind, tok, m.SigErr)
			continue
		}
		fn(tok, m)
	}
	return dups
}

// fetchRaw fetches the INBOX messages whose Subject contains s.
func fetchRaw(t *testing.T, mb mailtest.Mailbox, s string) [][]byte {
	t.Helper()
	c, err := mailtest.DialIMAP(mb.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(mb.User, mb.Pass); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	uids, err := c.SearchHeader("Subject", s)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, u := range uids {
		m, err := c.Fetch(u)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// judge checks every submission answered 250: one accettazione, one presa in carico (one
// receiving provider), one busta per recipient mailbox and one outcome per certified
// recipient. A token short of one is lost, one with more is duplicated.
func (c *faultCounts) judge(t *testing.T, run string, rcpts []string, answered []bool) {
	for i, ok := range answered {
		tok := fmt.Sprintf("%s-%03d", run, i)
		counts := []int{c.acc[tok], c.presa[tok]}
		for _, r := range rcpts {
			counts = append(counts, c.outcome[tok][r], c.busta[tok][r])
		}
		lost, dup := false, false
		for _, k := range counts {
			lost, dup = lost || k < 1, dup || k > 1
		}
		if !ok {
			if c.acc[tok] > 0 {
				t.Logf("%s was never answered 250 but has %d accettazioni (accettazione, presa, then outcome and busta per recipient: %v)", tok, c.acc[tok], counts)
			}
			continue
		}
		if lost {
			c.lost++
		}
		if dup {
			c.dup++
		}
		if lost || dup {
			t.Errorf("%s: accettazione, presa in carico, then outcome and busta for %v: %v, want 1 each", tok, rcpts, counts)
		}
	}
}

// checkFaultLogs checks the legal logs: in A one accettazione and one busta-trasporto per
// accettazione found, in B one presa in carico per busta and one outcome per recipient, and
// in each log the events of the run in strictly increasing sequence (pec-spec.md §6: the log
// is append-only).
func checkFaultLogs(t *testing.T, a, b *lab.Provider, run string, tokRe *regexp.Regexp, c *faultCounts, rcpts []string) {
	byKind := func(p *lab.Provider) map[store.EventKind]map[string]int {
		m := map[store.EventKind]map[string]int{}
		var last int64
		for _, e := range logEvents(t, p, "", run) {
			if e.Seq <= last {
				t.Errorf("%s log: seq %d after %d", p.ID, e.Seq, last)
			}
			last = e.Seq
			if m[e.Kind] == nil {
				m[e.Kind] = map[string]int{}
			}
			m[e.Kind][tokRe.FindString(e.Subject)]++
		}
		return m
	}
	evA, evB := byKind(a), byKind(b)
	for tok, k := range c.acc {
		if evA[store.KindAccettazione][tok] != k || evA[store.KindBustaTrasporto][tok] != 1 {
			t.Errorf("%s's log for %s: %d accettazione, %d busta-trasporto events; the sender holds %d accettazioni",
				a.ID, tok, evA[store.KindAccettazione][tok], evA[store.KindBustaTrasporto][tok], k)
		}
		if evB[store.KindPresaInCarico][tok] != 1 {
			t.Errorf("%s's log for %s: %d presa-in-carico events", b.ID, tok, evB[store.KindPresaInCarico][tok])
		}
		if o := evB[store.KindConsegna][tok] + evB[store.KindMancataConsegna][tok]; o != len(rcpts) {
			t.Errorf("%s's log for %s: %d outcome events, want %d", b.ID, tok, o, len(rcpts))
		}
	}
}
