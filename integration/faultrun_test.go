//go:build integration

package integration

// Issue 17 item 3: fault runs. The core flow (alice of A to bruno of B in To and bianca of B
// in Cc, through A's submission port) with N messages in flight from 4 sessions, while lab
// components are killed with SIGKILL (or stopped abruptly, for Postfix and Dovecot, which the
// lab restarts by script) at random, seeded moments and restarted with lab-up.sh. At the end
// every submission answered 250 has exactly one accettazione (pec-spec.md §2.1), one presa in
// carico per receiving provider in A's service mailbox (§2.2) and one final outcome per
// certified recipient (§2.3, §2.4: avvenuta or mancata consegna); no mailbox holds a message
// twice (RFC 6109 §4: one receipt per event); the legal log has one event per step, in
// strictly increasing sequence.
//
// Short form (go test -short, or PEC_FAULTS_N unset): N=20, one kill each of pec-milter(A)
// and pec-lmtpd(B). Long form (make faults): PEC_FAULTS_N messages (200), every component.
// PEC_FAULTS_SEED replays a run.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

// faultTarget is one lab component the fault run breaks: kill stops it abruptly and returns
// once it is gone; lab-up.sh brings it back.
type faultTarget struct {
	name string
	kill func(t *testing.T)
}

// faultTargets lists the components of the run: in the short form pec-milter of A and
// pec-lmtpd of B, in the long form also the other PEC daemons and B's Postfix, Dovecot,
// slapd and clamd.
func faultTargets(l *lab.Lab, a, b *lab.Provider, short bool) []faultTarget {
	pecd := func(p *lab.Provider, name string) faultTarget {
		return faultTarget{name + "(" + strings.ToUpper(p.ID) + ")", func(t *testing.T) {
			killPIDFile(t, filepath.Join(l.Base, p.ID, "run", name+".pid"))
		}}
	}
	ts := []faultTarget{pecd(a, "pec-milter"), pecd(b, "pec-lmtpd")}
	if short {
		return ts
	}
	return append(ts, pecd(b, "pec-milter"), pecd(a, "pec-lmtpd"),
		faultTarget{"postfix(B)", func(t *testing.T) {
			// postfix abort: every Postfix process is signalled to stop at once.
			runQuiet(t, "postfix", "-c", b.Postfix.ConfigDir, "abort")
			waitGone(t, filepath.Join(b.Postfix.ConfigDir, "..", "spool", "pid", "master.pid"))
		}},
		faultTarget{"dovecot(B)", func(t *testing.T) {
			pid := filepath.Join(filepath.Dir(b.Dovecot.ConfigFile), "run", "master.pid")
			runQuiet(t, "dovecot", "-c", b.Dovecot.ConfigFile, "stop")
			waitGone(t, pid)
		}},
		faultTarget{"slapd", func(t *testing.T) { killPIDFile(t, l.LDAP.PIDFile) }},
		faultTarget{"clamd", func(t *testing.T) { killPIDFile(t, filepath.Join(filepath.Dir(l.Clamd.Log), "clamd.pid")) }},
	)
}

// pidOf reads a PID file; 0 when there is none.
func pidOf(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// killPIDFile sends SIGKILL to the process in file and waits until it is gone.
func killPIDFile(t *testing.T, file string) {
	pid := pidOf(file)
	if !alive(pid) {
		t.Errorf("%s: no running process to kill (pid %d)", file, pid)
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill %d: %v", pid, err)
	}
	waitGone(t, file)
}

// waitGone waits until the process of a PID file has exited (reaped by its parent, or a
// zombie of init that signal 0 still finds: /proc tells them apart).
func waitGone(t *testing.T, file string) {
	pid := pidOf(file)
	for range 300 {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if pid == 0 || err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s: process %d still running 15s after it was stopped", file, pid)
}

func runQuiet(t *testing.T, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Logf("%s %v: %v\n%s", name, args, err, out)
	}
}

// labUp runs lab-up.sh, which restarts whatever is not running (same PEC_LAB, same wiring,
// same store and number of A's nodes as lab.json says: not the test's environment, which may
// lack them).
func labUp(l *lab.Lab) error {
	cmd := exec.Command("bash", "scripts/lab-up.sh")
	cmd.Env = append(os.Environ(), "PEC_WIRING="+l.Wiring)
	if l.Store != "" {
		cmd.Env = append(cmd.Env, "PEC_STORE="+l.Store)
	}
	if l.ANodes > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("PEC_A_NODES=%d", l.ANodes))
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab-up.sh: %v\n%s", err, out)
	}
	return nil
}

// faultParams reads PEC_FAULTS_N and PEC_FAULTS_SEED: the short form without PEC_FAULTS_N or
// with -short.
func faultParams(t *testing.T) (n int, seed uint64, short bool) {
	n, short = 20, true
	if v := os.Getenv("PEC_FAULTS_N"); v != "" && !testing.Short() {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			t.Fatalf("PEC_FAULTS_N=%q: want a positive number", v)
		}
		n, short = k, false
	}
	seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("PEC_FAULTS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("PEC_FAULTS_SEED=%q: want a number", v)
		}
		seed = s
	}
	return n, seed, short
}

func TestFaultRun(t *testing.T) {
	l, a, b, _ := pecLab(t)
	n, seed, short := faultParams(t)
	t.Logf("fault run: N=%d, short=%v, seed %d (PEC_FAULTS_SEED=%d replays it)", n, short, seed, seed)
	fmt.Printf("fault run seed %d\n", seed)
	rnd := rand.New(rand.NewPCG(seed, 0))
	targets := faultTargets(l, a, b, short)
	rnd.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	t.Cleanup(func() { // whatever happened, the shared lab is whole again for the other tests
		if err := labUp(l); err != nil {
			t.Errorf("restoring the lab: %v", err)
		}
	})
	alice := user(t, a, "alice")
	rcpts := []string{user(t, b, "bruno").Address, user(t, b, "bianca").Address}
	run := mailtest.Token("fr")
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		breakLab(t, l, rnd, targets, short)
	}()
	// The submissions are spread over the time the faults take (about 14 s each: a random
	// wait, the kill, a random downtime, lab-up.sh), so that messages are in flight at each.
	subs := []mailtest.Submission{tlsSubmission(t, a, &alice)}
	answered, retried := submitLoad(t, subs, alice.Address, rcpts, run, n, time.Duration(len(targets))*14*time.Second)
	<-killed
	t.Logf("submissions and faults done in %s", time.Since(start).Round(time.Second))
	c := checkFaultRun(t, a, b, "alice", rcpts, run, answered, short)
	c.retried = retried
	t.Logf("fault run finished in %s (seed %d)\n%s", time.Since(start).Round(time.Second), seed, c.table(n))
}

// breakLab kills each target once, at a random moment, keeps it down a random while, and
// brings it back with lab-up.sh before the next.
func breakLab(t *testing.T, l *lab.Lab, rnd *rand.Rand, targets []faultTarget, short bool) {
	spread := 4000
	if short {
		spread = 2500
	}
	for _, ft := range targets {
		time.Sleep(time.Duration(500+rnd.IntN(spread)) * time.Millisecond)
		t.Logf("%s: killing %s", time.Now().Format("15:04:05.000"), ft.name)
		ft.kill(t)
		time.Sleep(time.Duration(200+rnd.IntN(1800)) * time.Millisecond)
		t0 := time.Now()
		if err := labUp(l); err != nil {
			t.Errorf("restarting %s: %v", ft.name, err)
			return
		}
		t.Logf("%s: %s back (lab-up.sh took %s)", time.Now().Format("15:04:05.000"), ft.name, time.Since(t0).Round(100*time.Millisecond))
	}
}

// submitLoad submits n messages from sender to rcpts, one every window/n, from 4 sessions
// spread over subs (the submission ports of a provider's nodes), each retried as a client
// does (temporary failures and lost sessions), through the next node, until it is answered
// 250 or refused 5xx, for at most 3 minutes. It returns which were answered 250, and how many
// needed a retry.
func submitLoad(t *testing.T, subs []mailtest.Submission, sender string, rcpts []string, run string, n int, window time.Duration) ([]bool, int) {
	var retried atomic.Int64
	answered := make([]bool, n)
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range n {
			next <- i
			time.Sleep(window / time.Duration(n))
		}
	}()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range next {
				tok := fmt.Sprintf("%s-%03d", run, i)
				hdr := []string{"From: " + sender, "To: " + rcpts[0], "Subject: PEC " + tok,
					"Message-ID: <" + tok + "@client.example>", "X-TipoRicevuta: sintetica"}
				if len(rcpts) > 1 {
					hdr = append(hdr, "Cc: "+strings.Join(rcpts[1:], ", "))
				}
				m := raw(fmt.Sprintf("Messaggio %d.\n", i), hdr...)
				// By i alone: the paced sender hands i to the workers in turn (a channel serves
				// its waiting receivers first in, first out), so (w+i) kept one parity and sent
				// every message through one node when sends were quick.
				sub := subs[i%len(subs)]
				err := sub.Send(sender, rcpts, m)
				if err != nil { // a fault hit this submission: retry as a client does
					retried.Add(1)
					err = retryAcross(subs, (i+1)%len(subs), sender, rcpts, m, 3*time.Minute)
				}
				if err != nil {
					t.Logf("%s never answered 250: %v", tok, err)
				}
				answered[i] = err == nil
			}
		})
	}
	wg.Wait()
	return answered, int(retried.Load())
}

// faultCounts is what a fault run found, per token (run-NNN).
type faultCounts struct {
	answered   int
	retried    int                       // submissions whose first attempt failed (4xx or lost session)
	acc, presa map[string]int            // accettazioni at alice, prese in carico at ricevute@A
	outcome    map[string]map[string]int // token -> recipient -> avvenuta/mancata consegna at alice
	busta      map[string]map[string]int // token -> recipient -> buste in the recipient's mailbox
	consegne   int
	lost, dup  int
}

func (c *faultCounts) table(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| submitted | answered 250 | retried | accettazioni | prese in carico | consegne | lost | duplicated |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d | %d | %d |\n", n, c.answered, c.retried, sum(c.acc), sum(c.presa), c.consegne, c.lost, c.dup)
	return b.String()
}

func sum(m map[string]int) int {
	s := 0
	for _, k := range m {
		s += k
	}
	return s
}
