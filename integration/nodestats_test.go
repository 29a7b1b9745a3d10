//go:build integration

package integration

// What each node of a provider did during a run, from its Postfix maillog (nodes_test.go).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

func asStepError(err error, se **mailtest.StepError) bool { return errors.As(err, se) }

// maillogMarks notes where each node's maillog ends now: nodeStats reads what follows.
func maillogMarks(t *testing.T, nodes []*lab.Node) map[string]int64 {
	m := map[string]int64{}
	for _, nd := range nodes {
		fi, err := os.Stat(nd.Postfix.Maillog)
		if err != nil {
			t.Fatal(err)
		}
		m[nd.ID] = fi.Size()
	}
	return m
}

// nodeCounts is one node's share of a run.
type nodeCounts struct {
	submissions int // messages its submission listener took
	mxFromPeer  int // messages its MX took from the peer provider
	delivered   int // deliveries to its pec-lmtpd (status=sent)
	reinjected  int // messages its drainer reinjected
}

var (
	qidField = `([0-9A-F]{6,}): `
	subRe    = regexp.MustCompile(`postfix/submission/smtpd\[\d+\]: ` + qidField + `client=`)
	mxRe     = regexp.MustCompile(`postfix/mx/smtpd\[\d+\]: ` + qidField + `client=\S*\[([0-9.]+)\]`)
	// Both reinjection listeners: pec-reinject, and pec-deliver for our own notices (the
	// accettazione among them).
	reinjRe    = regexp.MustCompile(`postfix/(?:reinject|deliver)/smtpd\[\d+\]: ` + qidField + `client=`)
	msgIDRe    = regexp.MustCompile(`/cleanup\[\d+\]: ` + qidField + `message-id=(<[^>]*>)`)
	lmtpSentRe = regexp.MustCompile(`postfix/lmtp\[\d+\]: [0-9A-F]+: to=<[^>]*>, relay=[^\[]*\[([^\]]+/lmtp\.sock)\].* status=sent`)
)

// nodeStats reads each node's maillog from its mark: what it took and delivered, and which
// outbox items (by Message-ID) it reinjected. It checks that every node took submissions and
// MX mail from the peer (at peerIP) and delivered, and that no Message-ID was reinjected twice
// unless every reinjection of it was by a node killed during the run (a drainer resends the
// item it had in flight when it died: at least once, issue 11). It returns a table.
func nodeStats(t *testing.T, nodes []*lab.Node, marks map[string]int64, peerIP string, killed []*lab.Node) string {
	counts := map[string]*nodeCounts{}
	by := map[string][]string{} // Message-ID -> the node of each reinjection
	for _, nd := range nodes {
		c := &nodeCounts{}
		counts[nd.ID] = c
		for _, id := range scanMaillog(t, nd, marks[nd.ID], peerIP, c) {
			by[id] = append(by[id], nd.ID)
		}
	}
	wasKilled := map[string]bool{}
	for _, nd := range killed {
		wasKilled[nd.ID] = true
	}
	resent := 0
	for id, ns := range by {
		if len(ns) < 2 {
			continue
		}
		resent++
		for _, n := range ns {
			if !wasKilled[n] {
				t.Errorf("outbox item %s reinjected %d times, by nodes %v: sent twice", id, len(ns), ns)
				break
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| node | submissions taken | MX messages from B | deliveries to its pec-lmtpd | reinjected |\n|---|---|---|---|---|\n")
	ids := make([]string, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := counts[id]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", id, c.submissions, c.mxFromPeer, c.delivered, c.reinjected)
		if c.submissions == 0 || c.mxFromPeer == 0 || c.delivered == 0 {
			t.Errorf("node %s took %d submissions, %d MX messages from the peer, delivered %d: both nodes must carry the load",
				id, c.submissions, c.mxFromPeer, c.delivered)
		}
	}
	fmt.Fprintf(&b, "outbox items reinjected: %d distinct, %d of them again by a killed node after its restart\n", len(by), resent)
	return b.String()
}

// scanMaillog counts into c what node nd's maillog shows after offset and returns the
// Message-ID of each message its reinjection listener queued (one entry per queueing).
func scanMaillog(t *testing.T, nd *lab.Node, offset int64, peerIP string, c *nodeCounts) []string {
	f, err := os.Open(nd.Postfix.Maillog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	reinjecting := map[string]bool{} // queue IDs of the reinjection listener awaiting cleanup's line
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if subRe.MatchString(line) {
			c.submissions++
		} else if m := mxRe.FindStringSubmatch(line); m != nil && m[2] == peerIP {
			c.mxFromPeer++
		} else if m := reinjRe.FindStringSubmatch(line); m != nil {
			reinjecting[m[1]] = true
		} else if m := msgIDRe.FindStringSubmatch(line); m != nil && reinjecting[m[1]] {
			delete(reinjecting, m[1])
			ids = append(ids, m[2])
			c.reinjected++
		} else if m := lmtpSentRe.FindStringSubmatch(line); m != nil && strings.HasPrefix(m[1], nd.RunDir+"/") {
			c.delivered++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}
