package main

import (
	"fmt"
	"net/smtp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/bench/procstat"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

// The end-to-end benchmark (issue 19 figure P1, -point e2e): n PEC transactions from alice@A
// to two users of B (one To, one Cc), timed from the first submission until every
// accettazione and consegna is in alice's Maildir and every presa in carico in A's receipt
// mailbox, against the same number
// of plain messages from alice to two users of the ordinary system O (To, Cc), submitted on a
// copy of A's submission listener without the milter (pflisten) and timed until both copies
// are in O's Maildirs. Both go through the lab's real Postfix and Dovecot in one run; the
// plain path has none of the PEC wiring (no milter, no pec-lmtpd, no receipts). Printed: the
// rates and their ratio, the latency of each receipt kind from its submission, the stage
// timings the PEC processes logged, and the CPU time per transaction of each program.

// e2eKinds are the receipts a PEC transaction to two recipients of B must produce, in the
// sender's Maildir or A's receipt mailbox, and how many of each (RFC 6109 §3.1.3, §3.2.1,
// §3.2.3).
var e2eKinds = []struct {
	prefix string
	per    int
}{{"ACCETTAZIONE: ", 1}, {"PRESA IN CARICO: ", 1}, {"CONSEGNA: ", 2}}

type e2eRun struct {
	l        *lab.Lab
	a, b, o  *lab.Provider
	ids      map[string]string // mail domain -> lab id
	plain    string            // the no-milter submission listener
	conc     int
	timeout  time.Duration
	sentAt   map[int]time.Time // transaction index -> end of its DATA
	sentMu   sync.Mutex
	failures int
	firstErr error
}

// runE2E measures each size rounds times, plain then PEC, and with more than one round also
// prints the median of each ratio: the plain side's rate swings between runs (28 to 45
// messages a second in December's), and a single pair of runs can land on either side of
// the goal.
func runE2E(n10k, n1m, conc, rounds int, timeout time.Duration) error {
	r, cleanup, err := newE2E(conc, timeout)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Printf("bench e2e: %d sessions; PEC alice@%s -> To %s, Cc %s; plain alice -> To %s, Cc %s via %s (no milter)\n",
		conc, r.a.Domain, r.b.Users[0].Address, r.b.Users[1].Address, r.o.Users[0].Address, r.o.Users[1].Address, r.plain)
	for _, size := range []struct {
		label    string
		bytes, n int
	}{{"10 KB", 10 * 1024, n10k}, {"1 MB", 1 << 20, n1m}} {
		if size.n <= 0 {
			continue
		}
		var byRate, byCPU []float64
		for round := 1; round <= rounds; round++ {
			if rounds > 1 {
				fmt.Printf("%-6s round %d of %d\n", size.label, round, rounds)
			}
			plain, plainCPU, err := r.measure(false, size.bytes, size.n)
			if err != nil {
				return err
			}
			pec, pecCPU, err := r.measure(true, size.bytes, size.n)
			if err != nil {
				return err
			}
			byRate, byCPU = append(byRate, pec/plain), append(byCPU, plainCPU.Total()/pecCPU.Total())
			fmt.Printf("%-6s P1 = %.3f (PEC %.2f tx/s ÷ plain %.2f msg/s)\n", size.label, pec/plain, pec, plain)
			// The throughput ratio holds only while both runs are CPU-bound; the plain run often is
			// not (its rate swings with Postfix's queue scheduling), so the CPU ratio goes with it.
			fmt.Printf("%-6s P1 by CPU = %.3f (plain %.1f ms per message ÷ PEC %.1f ms per transaction, across the lab)\n",
				size.label, plainCPU.Total()/pecCPU.Total(), plainCPU.Total(), pecCPU.Total())
			fmt.Println(procstat.Ceiling(size.label+" P1", 0.25, plainCPU, pecCPU))
		}
		if rounds > 1 {
			fmt.Printf("%-6s P1 over %d rounds: median %.3f by throughput (%s), %.3f by CPU (%s)\n", size.label, rounds,
				median(byRate), spread(byRate), median(byCPU), spread(byCPU))
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is the lowest and highest of xs.
func spread(xs []float64) string {
	return fmt.Sprintf("%.3f-%.3f", slices.Min(xs), slices.Max(xs))
}

// pecLab loads the running lab, which must be in the PEC wiring, and its providers a and b.
func pecLab() (l *lab.Lab, a, b *lab.Provider, err error) {
	if l, err = lab.Load(); err != nil {
		return nil, nil, nil, err
	}
	if l.Wiring != "pec" {
		return nil, nil, nil, fmt.Errorf("the lab is in %q wiring; run it with PEC_WIRING=pec", l.Wiring)
	}
	if a, err = l.Provider("a"); err != nil {
		return nil, nil, nil, err
	}
	if b, err = l.Provider("b"); err != nil {
		return nil, nil, nil, err
	}
	return l, a, b, nil
}

func newE2E(conc int, timeout time.Duration) (*e2eRun, func(), error) {
	l, a, b, err := pecLab()
	if err != nil {
		return nil, nil, err
	}
	r := &e2eRun{l: l, a: a, b: b, conc: conc, timeout: timeout, ids: map[string]string{}}
	r.o = l.Ordinary
	if r.o == nil || len(r.o.Users) < 2 || len(r.b.Users) < 2 || len(r.a.Users) == 0 {
		return nil, nil, fmt.Errorf("lab.json: not enough users")
	}
	for _, p := range []*lab.Provider{r.a, r.b, r.o} {
		r.ids[p.Domain] = p.ID
	}
	host := strings.Split(r.a.Postfix.Submission, ":")[0]
	if r.plain, err = pflisten.FreePort(host); err != nil {
		return nil, nil, err
	}
	ln, err := pflisten.Add(r.a.Postfix.ConfigDir, r.plain, "submission/inet",
		map[string]string{"smtpd_milters": "", "syslog_name": "postfix/bench-nomilter"})
	if err != nil {
		return nil, nil, err
	}
	return r, func() { _ = ln.Remove() }, nil
}

// measure sends n messages (PEC transactions or plain messages) of size bytes and waits for
// everything they must deliver; it prints the figures and returns the rate and the lab's CPU
// milliseconds per message (or transaction).
func (r *e2eRun) measure(isPEC bool, size, n int) (float64, procstat.Per, error) {
	alice := r.a.Users[0]
	to, cc, addr, name := r.o.Users[0].Address, r.o.Users[1].Address, r.plain, "plain"
	watch := []string{to, cc}
	if isPEC {
		to, cc, addr, name = r.b.Users[0].Address, r.b.Users[1].Address, r.a.Postfix.Submission, "PEC"
		// The presa in carico goes to A's receipt address (its mailReceipt in the index,
		// RFC 6109 §3.2.1), the others to the sender.
		watch = []string{alice.Address, r.a.ReceiptAddress}
	}
	tlsConf, err := mailtest.TLSConfig(r.a.Postfix.TLSCert, "mx."+r.a.Domain)
	if err != nil {
		return 0, nil, err
	}
	token := mailtest.Token("e2e")
	w := newWatcher(r.l.Base, r.ids, watch, token)
	r.sentAt, r.failures, r.firstErr = map[int]time.Time{}, 0, nil
	since := time.Now()
	cpu := procstat.Start(r.l.Base)
	sub := mailtest.Submission{Addr: addr, TLS: tlsConf, User: alice.Address, Pass: alice.Password}
	r.send(sub, alice.Address, []string{to, cc}, token, size, n)
	want := 2 * n
	if isPEC {
		want = 4 * n
	}
	last, err := r.wait(w, want, isPEC, n)
	usage := cpu.Stop()
	if err != nil {
		return 0, nil, fmt.Errorf("%s %d bytes: %w (sent %d, failed %d, first error %v)", name, size, err, len(r.sentAt), r.failures, r.firstErr)
	}
	rate := float64(n) / last.Sub(since).Seconds()
	fmt.Printf("%-6s %-5s %d sent, %d failed, all delivered in %.2fs: %.2f/s\n", sizeLabel(size), name, len(r.sentAt), r.failures, last.Sub(since).Seconds(), rate)
	r.latencies(w, isPEC)
	perMsg := reportCPU(usage, n)
	if isPEC {
		r.stages(since)
	}
	return rate, perMsg, nil
}

func sizeLabel(size int) string {
	if size >= 1<<20 {
		return fmt.Sprintf("%d MB", size>>20)
	}
	return fmt.Sprintf("%d KB", size>>10)
}

// send submits n messages over r.conc sessions, each "e2e <token> <i>".
func (r *e2eRun) send(sub mailtest.Submission, from string, rcpts []string, token string, size, n int) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range r.conc {
		wg.Go(func() {
			c, err := sub.Dial()
			if err != nil {
				r.fail(err)
				for range jobs {
				}
				return
			}
			defer c.Close()
			for i := range jobs {
				msg := e2eMessage(from, rcpts, fmt.Sprintf("e2e %s %d", token, i), payload(size))
				if err := sendTo(c, from, rcpts, msg); err != nil {
					r.fail(err)
					_ = c.Reset()
					continue
				}
				r.sentMu.Lock()
				r.sentAt[i] = time.Now()
				r.sentMu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

func (r *e2eRun) fail(err error) {
	r.sentMu.Lock()
	defer r.sentMu.Unlock()
	r.failures++
	if r.firstErr == nil {
		r.firstErr = err
	}
}

// wait polls the Maildirs until want messages of the run arrived, and for PEC that they are
// n of each receipt kind per transaction (anything else, an avviso, is an error); it returns
// the last arrival's time.
func (r *e2eRun) wait(w *watcher, want int, isPEC bool, n int) (time.Time, error) {
	deadline := time.Now().Add(r.timeout)
	for {
		w.poll(true)
		if len(w.found) >= want {
			for _, k := range e2eKinds {
				if got := w.count(k.prefix); isPEC && got != k.per*n {
					return time.Time{}, fmt.Errorf("%d %q for %d transactions", got, k.prefix, n)
				}
			}
			var last time.Time
			for _, a := range w.found {
				if a.at.After(last) {
					last = a.at
				}
			}
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d deliveries after %s", len(w.found), want, r.timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// latencies prints, per kind, the time from a transaction's submission (end of DATA) to the
// arrival of what it produced.
func (r *e2eRun) latencies(w *watcher, isPEC bool) {
	prefixes := []string{"e2e "}
	if isPEC {
		prefixes = nil
		for _, k := range e2eKinds {
			prefixes = append(prefixes, k.prefix)
		}
	}
	for _, prefix := range prefixes {
		var lat []time.Duration
		for _, a := range w.found {
			if !strings.HasPrefix(a.subject, prefix) {
				continue
			}
			f := strings.Fields(a.subject)
			i, err := strconv.Atoi(f[len(f)-1])
			if t, ok := r.sentAt[i]; err == nil && ok {
				lat = append(lat, a.at.Sub(t))
			}
		}
		fmt.Printf("       %-18s n %4d  p50 %7.0fms p90 %7.0fms p99 %7.0fms\n", strings.TrimSpace(prefix), len(lat),
			ms(percentile(lat, .5)), ms(percentile(lat, .9)), ms(percentile(lat, .99)))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sendTo runs one transaction to several recipients.
func sendTo(c *smtp.Client, from string, rcpts []string, msg []byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func e2eMessage(from string, rcpts []string, subject string, body []byte) []byte {
	h := "From: " + from + "\r\nTo: " + rcpts[0] + "\r\nCc: " + strings.Join(rcpts[1:], ", ") + "\r\nSubject: " + subject +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + mailtest.Token("e") + "@bench>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	return append([]byte(h), body...)
}
