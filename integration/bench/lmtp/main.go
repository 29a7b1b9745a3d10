// Command lmtp measures the delivery point: LMTP throughput through provider B's pec-lmtpd
// (classify and verify the busta, claim its delivery record, hand it to Dovecot, build and
// sign the avvenuta consegna, one SQLite commit, reply) against LMTP straight into B's
// Dovecot (what Postfix does without pec-lmtpd), in the same run, for 10 KB and 10 MB
// bustas: messages per second and per-message latency (p50, p99), the lab's CPU per message
// (procstat, counted until 3 s after the last one, so that the consegne the delivery point
// sends through Postfix to A are in it) and the ceiling that the rest of the stack puts on
// the ratio (procstat.Ceiling).
//
//	go run ./integration/bench/lmtp [-n10k 200] [-n10m 10] [-c 4] [-rounds 2]
//
// The client plays Postfix's LMTP client: c sessions, each reused for its messages (Postfix's
// connection cache), one recipient per transaction; latency is MAIL to the final reply.
// Every busta is a real one, signed with provider A's key on its SoftHSM2 token (built before
// the clock starts), unique (its own identificativo), to bruno+bench@<B> and asking for a
// sintetica receipt. The two targets alternate, rounds times per size. Afterwards the
// messages are expunged from bruno's and alice's mailboxes through the doveadm API. The lab
// must be up in PEC wiring with pec-lmtpd.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/bench/procstat"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"gopkg.in/yaml.v3"
)

func main() {
	n10k := flag.Int("n10k", 200, "10 KB bustas per target and round")
	n10m := flag.Int("n10m", 10, "10 MB bustas per target and round")
	conc := flag.Int("c", 4, "concurrent LMTP sessions")
	rounds := flag.Int("rounds", 2, "rounds per size (the targets alternate)")
	flag.Parse()
	if err := run(*n10k, *n10m, *conc, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench lmtp:", err)
		os.Exit(1)
	}
}

type target struct{ name, addr string }

type result struct {
	target   string
	size, n  int
	failed   int
	wall     time.Duration
	lat      []time.Duration
	firstErr error
}

func run(n10k, n10m, conc, rounds int) error {
	l, err := lab.Load()
	if err != nil {
		return err
	}
	a, err := l.Provider("a")
	if err != nil {
		return err
	}
	b, err := l.Provider("b")
	if err != nil {
		return err
	}
	if b.LMTPD == "" {
		return fmt.Errorf("pec-lmtpd does not run in the lab (PEC wiring with bin/pec-lmtpd)")
	}
	bd, err := builder(l, a)
	if err != nil {
		return err
	}
	token := mailtest.Token("bench")
	targets := []target{{"dovecot", b.Dovecot.LMTP}, {"pec-lmtpd", b.LMTPD}}
	rcpt := "bruno+bench@" + b.Domain
	fmt.Printf("bench lmtp: %d sessions, alice@%s -> %s, token %s\n", conc, a.Domain, rcpt, token)
	seq := 0
	for _, size := range []struct{ bytes, n int }{{10 << 10, n10k}, {10 << 20, n10m}} {
		if size.n <= 0 {
			continue
		}
		for r := 0; r < rounds; r++ {
			var cpus []procstat.Per
			for _, tg := range targets {
				msgs, err := bustas(bd, "alice@"+a.Domain, rcpt, token, size.bytes, size.n, &seq)
				if err != nil {
					return err
				}
				time.Sleep(5 * time.Second) // let the previous run's receipts drain
				cpu := procstat.Start(l.Base)
				res := drive(tg, "alice@"+a.Domain, rcpt, msgs, conc)
				res.size = size.bytes
				report(res)
				time.Sleep(3 * time.Second) // the consegne of the last bustas, through Postfix to A
				per := procstat.PerUnit(cpu.Stop(), res.n-res.failed)
				fmt.Printf("       CPU ms/msg: %s\n", per)
				cpus = append(cpus, per)
			}
			fmt.Println(procstat.Ceiling("P7 delivery", 0.5, cpus[0], cpus[1]))
		}
	}
	fmt.Println("cleanup:", expunge(l, b, "bruno@"+b.Domain, token), expunge(l, a, "alice@"+a.Domain, token))
	return nil
}

// builder is provider A's busta builder on A's SoftHSM2 token, from A's pec.yaml.
func builder(l *lab.Lab, a *lab.Provider) (*pec.Builder, error) {
	var cfg struct {
		Signer hsm.Config `yaml:"signer"`
	}
	raw, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, err
	}
	os.Setenv(cfg.Signer.PKCS11.PINEnv, a.Token.PIN)
	os.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	keys, err := hsm.New(cfg.Signer, hsm.Deps{Logger: slog.New(slog.DiscardHandler),
		Provider: hsm.Provider{Name: a.Name, ServiceAddress: a.ServiceAddress, Domains: []string{a.Domain}}})
	if err != nil {
		return nil, err
	}
	id := pec.Identity{Name: a.Name, Domain: a.Domain, ServiceAddress: a.ServiceAddress, ReceiptAddress: a.ReceiptAddress}
	return &pec.Builder{ID: id, Keys: keys, Opt: pec.Options{Hash: keys.Digest()}}, nil
}

// bustas builds n unique bustas of about size bytes.
func bustas(bd *pec.Builder, from, rcpt, token string, size, n int, seq *int) ([][]byte, error) {
	body := payload(size)
	out := make([][]byte, 0, n)
	for range n {
		*seq++
		orig, err := pec.ParseOriginal(append([]byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: BENCH %s %d\r\n"+
			"Message-ID: <%s.%d@bench>\r\nX-TipoRicevuta: sintetica\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: application/octet-stream; name=\"dati.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
			from, rcpt, token, *seq, token, *seq)), body...))
		if err != nil {
			return nil, err
		}
		ref := pec.NewTimeRef(time.Now(), nil)
		id, err := pec.NewIdentificativo(ref.Time(), "bench", bd.ID.MailDomain(), nil)
		if err != nil {
			return nil, err
		}
		tx := pec.NewSubmissionTransaction(id, orig, pec.Envelope{MailFrom: from, Rcpts: []string{rcpt}},
			func(string) daticert.RecipientType { return daticert.Certificato })
		m, err := bd.Busta(ref, tx, orig)
		if err != nil {
			return nil, err
		}
		out = append(out, m.Bytes())
	}
	return out, nil
}

// drive delivers msgs over conc LMTP sessions and times each transaction.
func drive(tg target, from, rcpt string, msgs [][]byte, conc int) result {
	r := result{target: tg.name, n: len(msgs)}
	jobs := make(chan []byte)
	var mu sync.Mutex
	var wg sync.WaitGroup
	fail := func(err error) {
		mu.Lock()
		r.failed++
		if r.firstErr == nil {
			r.firstErr = err
		}
		mu.Unlock()
	}
	start := time.Now()
	for range conc {
		wg.Go(func() {
			network, addr := "tcp", tg.addr
			if p, ok := strings.CutPrefix(tg.addr, "unix:"); ok {
				network, addr = "unix", p
			}
			conn, err := net.Dial(network, addr)
			if err != nil {
				fail(err)
				for range jobs {
				}
				return
			}
			c := smtp.NewClientLMTP(conn)
			defer c.Close()
			if err := c.Hello("bench.lab"); err != nil {
				fail(err)
				for range jobs {
				}
				return
			}
			for m := range jobs {
				t0 := time.Now()
				if err := send(c, from, rcpt, m); err != nil {
					fail(err)
					continue
				}
				mu.Lock()
				r.lat = append(r.lat, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	for _, m := range msgs {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	r.wall = time.Since(start)
	return r
}

// payload is size bytes of base64 text in 76-character lines.
// send runs one transaction as Postfix's LMTP client does, declaring the size (RFC 1870) to
// a server that offers SIZE.
func send(c *smtp.Client, from, rcpt string, m []byte) error {
	if err := c.Mail(from, &smtp.MailOptions{Size: int64(len(m))}); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(m); err != nil {
		return err
	}
	return w.Close()
}

func payload(size int) []byte {
	raw := make([]byte, size*3/4)
	_, _ = rand.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return []byte(b.String())
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := min(max(int(p*float64(len(s))+0.5)-1, 0), len(s)-1)
	return s[i]
}

func report(r result) {
	label := "10 KB"
	if r.size >= 1<<20 {
		label = "10 MB"
	}
	ok := r.n - r.failed
	fmt.Printf("%-6s %-10s %4d delivered %3d failed in %7.2fs: %7.2f msg/s, latency p50 %8.1fms p99 %8.1fms\n",
		label, r.target, ok, r.failed, r.wall.Seconds(), float64(ok)/r.wall.Seconds(),
		ms(percentile(r.lat, .50)), ms(percentile(r.lat, .99)))
	if r.firstErr != nil {
		fmt.Printf("       first error: %v\n", r.firstErr)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// expunge removes the bench's messages from a mailbox through the provider's doveadm API.
func expunge(l *lab.Lab, p *lab.Provider, user, token string) string {
	key, err := os.ReadFile(p.Dovecot.DoveadmKeyFile)
	if err != nil {
		return err.Error()
	}
	cmd, _ := json.Marshal([]any{[]any{"expunge", map[string]any{"user": user,
		"query": []string{"mailbox", "INBOX", "header", "Subject", token}}, "x"}})
	req, _ := http.NewRequest(http.MethodPost, p.Dovecot.Doveadm, bytes.NewReader(cmd))
	req.Header.Set("Authorization", "X-Dovecot-API "+base64.StdEncoding.EncodeToString(key))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return user + " " + resp.Status
}
