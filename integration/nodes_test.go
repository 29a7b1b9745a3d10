//go:build integration

package integration

// Issue 18: provider A on two nodes. The lab brought up with PEC_STORE=postgres
// PEC_A_NODES=2 (integration/scripts/lab-nodes.sh) gives A a second node, a2: its own Postfix
// instance, pec-milter (confirmation listener, outbox drainer) and pec-lmtpd on its own
// address, sharing A's PostgreSQL store, Dovecot, token and certificate. Both nodes take
// submissions and MX traffic: B's and O's Postfix route pec-a.test to node a first and
// pec-a2.test to node a2 first, each falling back to the other node (lab-nodes.sh mx_routes).
//
// The test: alice submits N PECs to bruno (To) and bianca (Cc) of B, split across A's two
// submission ports, while bruno of B sends N/6 PECs to alice and anna (pec-a.test) and N/6
// to arturo (pec-a2.test), so that B's mail enters A through both MX nodes. Mid-load one node of A (chosen by the seed) is killed: SIGKILL to
// its pec-milter and pec-lmtpd, `postfix abort` for its Postfix; clients retry through the
// other node, which carries on; lab-up.sh restarts the node. Then, over IMAP and in both
// legal logs, every submission answered 250 has one accettazione, one presa in carico, one
// outcome and one busta per recipient, no mailbox holds a message twice (checkFaultRun); both
// nodes took submissions and MX mail and delivered; and no outbox item was reinjected twice,
// except by a killed node resending what it had in flight (issue 11: at least once, and the
// delivery point stores it once).
//
// Short form (make test, PEC_NODES_N unset or -short): N=60, one kill. Long form
// (make nodes): PEC_NODES_N=300, each node killed once. PEC_NODES_SEED replays a run.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

func TestTwoNodesOfA(t *testing.T) {
	l, a, b, _ := pecLab(t)
	if l.Store != "postgres" || len(a.Nodes) < 2 {
		t.Fatalf("the lab runs provider A on %d node(s) with the %q store; this test needs "+
			"PEC_STORE=postgres PEC_A_NODES=2 bash integration/scripts/lab-up.sh", len(a.Nodes), l.Store)
	}
	n, seed, short := nodesParams(t)
	t.Logf("two nodes of A: N=%d, short=%v, seed %d (PEC_NODES_SEED=%d replays it)", n, short, seed, seed)
	rnd := rand.New(rand.NewPCG(seed, 0))
	t.Cleanup(func() { // whatever happened, A's nodes run again for the other tests
		var ids []string
		for _, nd := range a.Nodes {
			ids = append(ids, nd.ID)
		}
		if err := labNode(ids...); err != nil {
			t.Errorf("restoring A's nodes: %v", err)
		}
	})
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	toB := []string{bruno.Address, user(t, b, "bianca").Address}
	toA := []string{alice.Address, user(t, a, "anna").Address}
	toA2 := []string{user(t, a, "arturo@pec-a2.test").Address}
	var subsA []mailtest.Submission
	for _, nd := range a.Nodes {
		s := tlsSubmission(t, a, &alice)
		s.Addr = nd.Postfix.Submission
		conf, err := mailtest.TLSConfig(nd.Postfix.TLSCert, "mx."+a.Domain)
		if err != nil {
			t.Fatal(err)
		}
		s.TLS = conf
		subsA = append(subsA, s)
	}
	subsB := []mailtest.Submission{tlsSubmission(t, b, &bruno)}
	marks := maillogMarks(t, a.Nodes)
	runAB, runBA, runBA2 := mailtest.Token("nab"), mailtest.Token("nba"), mailtest.Token("nbz")
	window := time.Duration(n) * 400 * time.Millisecond
	victims := nodeVictims(a.Nodes, rnd, short)
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		killNodes(t, victims, rnd, window)
	}()
	var ansAB, ansBA, ansBA2 []bool
	var retAB, retBA, retBA2 int
	var wg sync.WaitGroup
	wg.Go(func() { ansAB, retAB = submitLoad(t, subsA, alice.Address, toB, runAB, n, window) })
	wg.Go(func() { ansBA, retBA = submitLoad(t, subsB, bruno.Address, toA, runBA, n/6, window) })
	wg.Go(func() { ansBA2, retBA2 = submitLoad(t, subsB, bruno.Address, toA2, runBA2, n/6, window) })
	wg.Wait()
	<-killed
	t.Logf("submissions and kills done in %s", time.Since(start).Round(time.Second))
	cAB := checkFaultRun(t, a, b, "alice", toB, runAB, ansAB, short)
	cAB.retried = retAB
	cBA := checkFaultRun(t, b, a, "bruno", toA, runBA, ansBA, short)
	cBA.retried = retBA
	cBA2 := checkFaultRun(t, b, a, "bruno", toA2, runBA2, ansBA2, short)
	cBA2.retried = retBA2
	stats := nodeStats(t, a.Nodes, marks, b.IP, victims)
	t.Logf("two nodes of A finished in %s (seed %d)\nA -> B (alice to bruno, bianca through both submission ports):\n%s"+
		"B -> A (bruno to alice, anna of pec-a.test: MX node a first):\n%s"+
		"B -> A (bruno to arturo of pec-a2.test: MX node a2 first):\n%s%s",
		time.Since(start).Round(time.Second), seed, cAB.table(n), cBA.table(n/6), cBA2.table(n/6), stats)
}

// nodesParams reads PEC_NODES_N and PEC_NODES_SEED: the short form without PEC_NODES_N or
// with -short.
func nodesParams(t *testing.T) (n int, seed uint64, short bool) {
	n, short = 60, true
	if v := os.Getenv("PEC_NODES_N"); v != "" && !testing.Short() {
		k, err := strconv.Atoi(v)
		if err != nil || k < 3 || k > 999 {
			t.Fatalf("PEC_NODES_N=%q: want a number from 3 to 999", v)
		}
		n, short = k, false
	}
	seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("PEC_NODES_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PEC_NODES_SEED=%q: want a number", v)
		}
		seed = s
	}
	return n, seed, short
}

// nodeVictims: one node at random in the short form, every node in a random order in the
// long one.
func nodeVictims(nodes []*lab.Node, rnd *rand.Rand, short bool) []*lab.Node {
	v := append([]*lab.Node(nil), nodes...)
	rnd.Shuffle(len(v), func(i, j int) { v[i], v[j] = v[j], v[i] })
	if short {
		return v[:1]
	}
	return v
}

// killNodes kills each victim at a random moment of its share of the load window, keeps it
// down a random while, and brings it back with lab-node.sh before the next.
func killNodes(t *testing.T, victims []*lab.Node, rnd *rand.Rand, window time.Duration) {
	share := window / time.Duration(len(victims))
	for _, nd := range victims {
		time.Sleep(share/4 + time.Duration(rnd.Int64N(int64(share/2))))
		t.Logf("%s: killing node %s (pec-milter, pec-lmtpd: SIGKILL; postfix abort)", time.Now().Format("15:04:05.000"), nd.ID)
		killNode(t, nd)
		time.Sleep(time.Duration(500+rnd.IntN(2500)) * time.Millisecond)
		t0 := time.Now()
		if err := labNode(nd.ID); err != nil {
			t.Errorf("restarting node %s: %v", nd.ID, err)
			return
		}
		t.Logf("%s: node %s back (lab-node.sh took %s)", time.Now().Format("15:04:05.000"), nd.ID, time.Since(t0).Round(100*time.Millisecond))
	}
}

// killNode stops a node abruptly: its PEC processes by SIGKILL, its Postfix by `postfix
// abort` (every Postfix process told to stop at once; the queue stays on disk).
func killNode(t *testing.T, nd *lab.Node) {
	killPIDFile(t, filepath.Join(nd.RunDir, "pec-milter.pid"))
	killPIDFile(t, filepath.Join(nd.RunDir, "pec-lmtpd.pid"))
	runQuiet(t, "postfix", "-c", nd.Postfix.ConfigDir, "abort")
	waitGone(t, filepath.Join(nd.Postfix.ConfigDir, "..", "spool", "pid", "master.pid"))
}

// labNode runs lab-node.sh start: the nodes' Postfix, pec-milter and pec-lmtpd, whichever
// is not running, from what lab-up.sh configured (same PEC_LAB).
func labNode(ids ...string) error {
	cmd := exec.Command("bash", append([]string{"scripts/lab-node.sh", "start"}, ids...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab-node.sh: %v\n%s", err, out)
	}
	return nil
}

// retryAcross retries a submission on temporary failures and lost sessions through each
// node in turn from subs[first], as a client given several submission addresses does.
func retryAcross(subs []mailtest.Submission, first int, from string, to []string, msg []byte, within time.Duration) error {
	deadline := time.Now().Add(within)
	for k := first; ; k++ {
		err := subs[k%len(subs)].Send(from, to, msg)
		var se *mailtest.StepError
		if err == nil || (asStepError(err, &se) && se.Code >= 500) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}
