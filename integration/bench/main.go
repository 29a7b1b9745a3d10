// Command bench drives mail through the lab's real Postfix, with and without pec-milter, and
// prints messages per second and end-of-message latency (p50, p99) for 10 KB and 10 MB
// messages: submissions at the access point (-point access, the default), or bustas at the
// reception point (-point reception, reception.go).
//
//	go run ./integration/bench [-point access|reception] [-n10k 200] [-n10m 10] [-c 4] [-pace 150ms] [-timeout 5m]
//	go run ./integration/bench -point e2e [-n10k 200] [-n1m 20] [-rounds 3]   (e2e.go)
//
// With milter: provider A's submission listener (STARTTLS, SASL, pec-milter: formal checks,
// clamd, signing on SoftHSM2, one SQLite commit, busta replacing the message).
// With the null milter: a copy of that listener whose milter, served by this process,
// answers at once with a busta's modifications and does no work (nullmilter.go): the floor
// that the milter protocol and Postfix put under the access point's end-of-message latency.
// Without milter (baseline): a temporary copy of that listener, added for the run with
// integration/bench/pflisten and removed afterwards, identical but for smtpd_milters= (so
// TLS, SASL and the restrictions cost the same on both sides).
//
// Every message goes from alice@<A> to the first user of the ordinary system O, so provider
// B's reception point is not loaded. Each worker keeps one SMTP session and sends its
// messages in it. End-of-message latency is the time from the end of the DATA payload to
// Postfix's final reply: for the milter case it includes the whole Submit. Bounded by
// -timeout; the lab must be up in PEC wiring.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/bench/procstat"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
)

func main() {
	n10k := flag.Int("n10k", 200, "10 KB messages per configuration")
	n10m := flag.Int("n10m", 10, "10 MB messages per configuration")
	conc := flag.Int("c", 4, "concurrent SMTP sessions")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound on the whole run")
	n1m := flag.Int("n1m", 20, "1 MB transactions (-point e2e)")
	rounds := flag.Int("rounds", 1, "plain-then-PEC rounds per size, with the median of the ratios (-point e2e)")
	rssSize := flag.Int("rss-size", 100_000_000, "message size of -point rss")
	flag.DurationVar(&pace, "pace", 0, "pause of each session after each message (-point access): every listener then takes the same offered load, one the access point sustains, and the end-of-message latencies are compared at equal load instead of each at its own saturation")
	point := flag.String("point", "access", "access (submissions at A), reception (bustas at B's MX), e2e (P1: whole PEC transactions A to B against plain mail), rss (P6: peak memory of pec-milter for one message)")
	flag.Parse()
	run := run
	switch *point {
	case "access":
	case "reception":
		run = runReception
	case "e2e":
		run = func(n10k, _, conc int, timeout time.Duration) error {
			return runE2E(n10k, *n1m, conc, max(*rounds, 1), timeout)
		}
	case "rss":
		run = func(_, _, _ int, timeout time.Duration) error { return runRSS(*rssSize, timeout) }
	default:
		fmt.Fprintln(os.Stderr, "bench: -point must be access, reception, e2e or rss")
		os.Exit(2)
	}
	if err := run(*n10k, *n10m, *conc, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	size     int
	sent     int
	failed   int
	wall     time.Duration
	lat      []time.Duration
	firstErr error
}

func run(n10k, n10m, conc int, timeout time.Duration) error {
	l, err := lab.Load()
	if err != nil {
		return err
	}
	if l.Wiring != "pec" {
		return fmt.Errorf("the lab is in %q wiring; run it with PEC_WIRING=pec", l.Wiring)
	}
	a, err := l.Provider("a")
	if err != nil {
		return err
	}
	if l.Ordinary == nil || len(l.Ordinary.Users) == 0 || len(a.Users) == 0 {
		return fmt.Errorf("lab.json: no users")
	}
	alice, rcpt := a.Users[0], l.Ordinary.Users[0].Address
	scanner, err := clamd.New(clamd.Config{Addr: l.Clamd.Addr})
	if err != nil {
		return err
	}
	defer scanner.Close()
	ls, err := addListeners(a.Postfix.ConfigDir, strings.Split(a.Postfix.Submission, ":")[0], alice.Address, scanner)
	if err != nil {
		return err
	}
	defer ls.close()
	addr, nullAddr, alsoAddr, scanAddr := ls.plain.Addr, ls.null, ls.also, ls.scan
	tlsConf, err := mailtest.TLSConfig(a.Postfix.TLSCert, "mx."+a.Domain)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	fmt.Printf("bench: provider %s, %d sessions, alice -> %s; baseline listener %s (no milter), %s (null milter), %s (null milter, copy to alice), %s (null milter with clamd's scan)\n",
		a.ID, conc, rcpt, addr, nullAddr.addr, alsoAddr.addr, scanAddr.addr)
	for _, size := range []struct {
		bytes, n int
	}{{10 * 1024, n10k}, {10 * 1024 * 1024, n10m}} {
		if size.n <= 0 {
			continue
		}
		rs, cpus := []result{}, []procstat.Per{}
		for _, cfg := range []struct{ name, addr string }{{"no milter", addr}, {"null milter", nullAddr.addr},
			{"null+alice", alsoAddr.addr}, {"null+clamd", scanAddr.addr}, {"pec-milter", a.Postfix.Submission}} {
			sub := mailtest.Submission{Addr: cfg.addr, TLS: tlsConf, User: alice.Address, Pass: alice.Password}
			cpu := procstat.Start(l.Base)
			r := drive(ctx, sub, alice.Address, rcpt, size.bytes, size.n, conc)
			r.name = cfg.name
			report(r)
			settleLab(l) // the receipts of the last transactions
			cpus = append(cpus, reportCPU(cpu.Stop(), r.sent))
			rs = append(rs, r)
		}
		compare(rs[0], rs[4], rs[1:4]...)
		fmt.Println(procstat.Ceiling("P2 "+sizeLabel(size.bytes)+" throughput", 0.8, cpus[0], cpus[4]))
		if err := clamdAlone(ctx, l.Clamd.Addr, alice.Address, rcpt, size.bytes, size.n, conc, rs[0], rs[1], rs[3], rs[4]); err != nil {
			return err
		}
	}
	return nil
}

// pace is the pause of each session after each of its messages (-pace).
var pace time.Duration

// settle is how long, at least, the CPU of a configuration is still counted after its last
// message: the accettazione of the last transactions, the deliveries of the last messages.
const settle = 3 * time.Second

// settleLab waits settle, then until every Postfix queue of the lab is empty (two looks
// drainPoll apart, as our drainer may hand Postfix an accettazione between them), at most
// drainMax: a configuration's CPU then counts all the deliveries of its messages, and none
// of them lands on the next configuration's run. A burst of 300 plain messages is taken in
// about a second and delivered over several.
func settleLab(l *lab.Lab) {
	time.Sleep(settle)
	var dirs []string
	for _, p := range append(append([]*lab.Provider{}, l.Providers...), l.Ordinary) {
		if p == nil {
			continue
		}
		dirs = append(dirs, p.Postfix.ConfigDir)
		for _, n := range p.Nodes[min(1, len(p.Nodes)):] {
			dirs = append(dirs, n.Postfix.ConfigDir)
		}
	}
	empty := 0
	for deadline := time.Now().Add(drainMax); empty < 2; time.Sleep(drainPoll) {
		if time.Now().After(deadline) {
			fmt.Printf("       (Postfix queues not empty after %s)\n", drainMax+settle)
			return
		}
		if queued(dirs) {
			empty = 0
		} else {
			empty++
		}
	}
}

const (
	drainPoll = 300 * time.Millisecond
	drainMax  = 2 * time.Minute
)

// queued reports whether any of the Postfix instances has a message in its queue.
func queued(dirs []string) bool {
	for _, d := range dirs {
		out, err := exec.Command("postqueue", "-c", d, "-j").Output()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			return true
		}
	}
	return false
}

// reportCPU prints the CPU time of the lab's processes per message sent (procstat) and
// returns it in milliseconds per message, by group.
func reportCPU(cpu map[string]float64, sent int) procstat.Per {
	per := procstat.PerUnit(cpu, sent)
	if per != nil {
		fmt.Printf("       CPU ms/msg: %s\n", per)
	}
	return per
}

// compare prints P2: the milter's throughput and end-of-message p50 against the listener
// without it, and the null milters' (nullmilter.go) beside them.
func compare(plain, pec result, nulls ...result) {
	if plain.sent == 0 || pec.sent == 0 {
		return
	}
	rate := func(r result) float64 { return float64(r.sent) / r.wall.Seconds() }
	eom := func(r result) float64 { return float64(percentile(r.lat, .5)) / float64(percentile(plain.lat, .5)) }
	fmt.Printf("       P2 %s: throughput ratio %.2f (goal ≥ 0.8), end-of-message p50 %.1f× (goal ≤ 2)\n", sizeLabel(pec.size),
		rate(pec)/rate(plain), eom(pec))
	for _, r := range nulls {
		if r.sent > 0 {
			fmt.Printf("       %s (none of our work): throughput ratio %.2f, end-of-message p50 %.1f×\n", r.name, rate(r)/rate(plain), eom(r))
		}
	}
}

// listeners are the temporary submission listeners of a run: without milter, with the null
// milter, with the null milter and a copy to the sender, and with the null milter and
// clamd's scan.
type listeners struct {
	plain            *pflisten.Listener
	null, also, scan *nullAt
}

func addListeners(configDir, host, sender string, scanner pec.Scanner) (*listeners, error) {
	ls := &listeners{}
	addr, err := pflisten.FreePort(host)
	if err != nil {
		return nil, err
	}
	if ls.plain, err = pflisten.Add(configDir, addr, "submission/inet",
		map[string]string{"smtpd_milters": "", "syslog_name": "postfix/bench-nomilter"}); err != nil {
		return nil, err
	}
	if ls.null, err = nullListener(configDir, host, "", nil); err != nil {
		ls.close()
		return nil, err
	}
	// The accettazione goes to the sender's mailbox: a copy of the message to the sender
	// stands in for it.
	if ls.also, err = nullListener(configDir, host, sender, nil); err != nil {
		ls.close()
		return nil, err
	}
	if ls.scan, err = nullListener(configDir, host, "", scanner); err != nil {
		ls.close()
		return nil, err
	}
	return ls, nil
}

func (ls *listeners) close() {
	for _, n := range []*nullAt{ls.scan, ls.also, ls.null} {
		if n != nil {
			n.close()
		}
	}
	if ls.plain != nil {
		_ = ls.plain.Remove()
	}
}

// nullAt is a temporary submission listener whose milter is a null milter (nullmilter.go).
type nullAt struct {
	addr string
	m    *nullMilter
	l    *pflisten.Listener
}

func nullListener(configDir, host, also string, scanner pec.Scanner) (*nullAt, error) {
	m, err := startNullMilter(also, scanner)
	if err != nil {
		return nil, err
	}
	addr, err := pflisten.FreePort(host)
	if err != nil {
		m.Close()
		return nil, err
	}
	l, err := pflisten.Add(configDir, addr, "submission/inet",
		map[string]string{"smtpd_milters": "unix:" + m.sock, "syslog_name": "postfix/bench-nullmilter"})
	if err != nil {
		m.Close()
		return nil, err
	}
	return &nullAt{addr: addr, m: m, l: l}, nil
}

func (n *nullAt) close() {
	_ = n.l.Remove()
	n.m.Close()
}

func drive(ctx context.Context, sub mailtest.Submission, from, rcpt string, size, n, conc int) result {
	r := result{size: size}
	token := mailtest.Token("bench")
	// Every message its own attachment (payload), made before the clock starts: the null
	// milters run in this process, and making 10 MB of it per message meanwhile slowed them.
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = payload(size)
	}
	jobs := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := sub.Dial()
			if err != nil {
				mu.Lock()
				r.failed++
				if r.firstErr == nil {
					r.firstErr = err
				}
				mu.Unlock()
				for range jobs {
				}
				return
			}
			defer c.Close()
			for i := range jobs {
				msg := message(from, rcpt, fmt.Sprintf("bench %s %d", token, i), bodies[i])
				d, err := sendOne(c, from, rcpt, msg)
				mu.Lock()
				if err != nil {
					r.failed++
					if r.firstErr == nil {
						r.firstErr = err
					}
					_ = c.Reset()
				} else {
					r.sent++
					r.lat = append(r.lat, d)
				}
				mu.Unlock()
				time.Sleep(pace)
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	r.wall = time.Since(start)
	return r
}

// sendOne runs one transaction and returns the end-of-message latency: from the end of the
// payload to the final reply.
func sendOne(c *smtp.Client, from, rcpt string, msg []byte) (time.Duration, error) {
	if err := c.Mail(from); err != nil {
		return 0, err
	}
	if err := c.Rcpt(rcpt); err != nil {
		return 0, err
	}
	w, err := c.Data()
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(msg); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// payload is size bytes of base64 text in 76-character lines (7bit, like an attachment),
// random: every message of a run gets its own, because clamd caches the verdict of a
// decoded attachment it has seen, and a 10 MB message whose attachment it had scanned before
// took 420 ms instead of 630 ms (December 3), which flattered every ratio with a scan in it.
func payload(size int) []byte {
	raw := make([]byte, size*3/4)
	_, _ = rand.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return []byte(b.String())
}

func message(from, to, subject string, body []byte) []byte {
	h := "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nDate: " + time.Now().Format(time.RFC1123Z) +
		"\r\nMessage-ID: <" + mailtest.Token("b") + "@bench>\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n"
	return append([]byte(h), body...)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func report(r result) {
	label := "10 KB"
	if r.size >= 1<<20 {
		label = "10 MB"
	}
	rate := float64(r.sent) / r.wall.Seconds()
	fmt.Printf("%-6s %-10s sent %4d failed %3d in %7.2fs: %7.2f msg/s, end-of-message p50 %8.1fms p99 %8.1fms\n",
		label, r.name, r.sent, r.failed, r.wall.Seconds(), rate,
		float64(percentile(r.lat, .50).Microseconds())/1000, float64(percentile(r.lat, .99).Microseconds())/1000)
	if r.firstErr != nil {
		fmt.Printf("       first error: %v\n", r.firstErr)
	}
}
