package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/bench/procstat"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// The reception point benchmark: bustas di trasporto signed by provider A (its key on its
// SoftHSM2 token, opened in this process, as A's access point would sign them) are injected at
// B's MX over SMTP with STARTTLS from A's address, as A's Postfix would send them, to one user
// of B.
//
// With milter: B's MX listener, where pec-milter classifies, runs the trust check (signature,
// index, chain at the signing time, CRL), scans the content with clamd and holds the presa in
// carico in the store until Postfix's confirmation (one SQLite commit, one extra local LMTP
// delivery of the confirmation recipient). Without milter (baseline): a temporary copy of that
// listener, added with pflisten and removed afterwards, identical but for smtpd_milters=. Every
// busta has its own identificativo, so none is a retry. The bustas are built before the clock
// starts; the presa in carico each one produces is sent by B's drainer meanwhile, as in
// production.
func runReception(n10k, n10m, conc int, timeout time.Duration) error {
	l, a, b, err := pecLab()
	if err != nil {
		return err
	}
	bd, err := builderOf(l, a)
	if err != nil {
		return err
	}
	rcpt := b.Users[0].Address
	addr, err := pflisten.FreePort(b.IP)
	if err != nil {
		return err
	}
	plain, err := pflisten.Add(b.Postfix.ConfigDir, addr, "smtp/inet",
		map[string]string{"smtpd_milters": "", "syslog_name": "postfix/bench-nomilter"})
	if err != nil {
		return err
	}
	defer plain.Remove()
	tlsConf, err := mailtest.TLSConfig(b.Postfix.TLSCert, "mx."+b.Domain)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	from := "alice@" + a.Domain
	fmt.Printf("bench: reception point of %s, %d sessions, bustas of %s -> %s; baseline listener %s (no milter)\n", b.ID, conc, a.ID, rcpt, addr)
	for _, size := range []struct{ bytes, n int }{{10 * 1024, n10k}, {10 * 1024 * 1024, n10m}} {
		if size.n <= 0 {
			continue
		}
		var cpus []procstat.Per
		var rates []float64
		for _, cfg := range []struct{ name, addr string }{{"no milter", addr}, {"pec-milter", b.Postfix.MX}} {
			msgs, err := bustas(bd, from, rcpt, size.bytes, size.n)
			if err != nil {
				return err
			}
			sub := mailtest.Submission{Addr: cfg.addr, TLS: tlsConf, LocalAddr: a.IP, Helo: "mx." + a.Domain}
			cpu := procstat.Start(l.Base)
			r := driveMsgs(ctx, sub, from, rcpt, msgs, conc)
			r.name, r.size = cfg.name, size.bytes
			report(r)
			settleLab(l) // the deliveries and receipts of the last bustas
			cpus = append(cpus, reportCPU(cpu.Stop(), r.sent))
			rates = append(rates, float64(r.sent)/r.wall.Seconds())
		}
		receptionRatios(sizeLabel(size.bytes), rates, cpus)
	}
	return nil
}

// receptionRatios prints P7 for the reception point by throughput and by CPU, and the
// ceiling. By throughput the plain side is, as in P2, its burst into B's queue (the
// deliveries go on after the clock stops); by CPU both sides are counted until the lab is
// settled, deliveries and receipts included.
func receptionRatios(label string, rates []float64, cpus []procstat.Per) {
	if rates[0] > 0 {
		fmt.Printf("%-6s P7 reception = %.3f by throughput (pec-milter %.2f ÷ no milter %.2f msg/s)\n", label, rates[1]/rates[0], rates[1], rates[0])
	}
	if s := procstat.ByCPU(fmt.Sprintf("%-6s P7 reception", label), cpus[0], cpus[1]); s != "" {
		fmt.Println(s)
	}
	fmt.Println(procstat.Ceiling("P7 reception "+label, 0.5, cpus[0], cpus[1]))
}

// builderOf opens provider p's signing keys from its token (the PIN from lab.json, the signer
// section of its pec.yaml) and returns its message builder.
func builderOf(l *lab.Lab, p *lab.Provider) (*pec.Builder, error) {
	raw, err := os.ReadFile(p.ConfigFile)
	if err != nil {
		return nil, err
	}
	var y struct {
		Provider struct {
			Name           string   `yaml:"name"`
			Domains        []string `yaml:"domains"`
			ServiceAddress string   `yaml:"service_address"`
		} `yaml:"provider"`
		Signer hsm.Config `yaml:"signer"`
	}
	if err := yaml.Unmarshal(raw, &y); err != nil {
		return nil, err
	}
	os.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	os.Setenv(y.Signer.PKCS11.PINEnv, p.Token.PIN)
	keys, err := hsm.New(y.Signer, hsm.Deps{Provider: hsm.Provider{Name: y.Provider.Name, ServiceAddress: y.Provider.ServiceAddress, Domains: y.Provider.Domains}})
	if err != nil {
		return nil, err
	}
	return &pec.Builder{ID: pec.Identity{Name: p.Name, Domain: p.Domain, ServiceAddress: p.ServiceAddress, ReceiptAddress: p.ReceiptAddress},
		Keys: keys, Opt: pec.Options{Hash: keys.Digest()}}, nil
}

// bustas builds n signed bustas from sender to rcpt carrying a size-byte attachment each.
func bustas(bd *pec.Builder, sender, rcpt string, size, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		tok := mailtest.Token("rxbench")
		msg := message(sender, rcpt, fmt.Sprintf("bench %s %d", tok, i), payload(size))
		orig, err := pec.ParseOriginal(msg)
		if err != nil {
			return nil, err
		}
		id, err := pec.NewIdentificativo(time.Now(), "bench", bd.ID.MailDomain(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tx := pec.NewTransaction(id, orig, []pec.Recipient{{Addr: rcpt, Type: "certificato"}})
		m, err := bd.Busta(pec.NewTimeRef(time.Now(), pec.Rome()), tx, orig)
		if err != nil {
			return nil, err
		}
		out = append(out, m.Bytes())
	}
	return out, nil
}

// driveMsgs sends msgs over conc SMTP sessions (one session per worker, reused) and measures.
func driveMsgs(ctx context.Context, sub mailtest.Submission, from, rcpt string, msgs [][]byte, conc int) result {
	var r result
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
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := sub.Dial()
			if err != nil {
				fail(err)
				for range jobs {
				}
				return
			}
			defer c.Close()
			for msg := range jobs {
				d, err := sendOne(c, from, rcpt, msg)
				if err != nil {
					fail(err)
					_ = c.Reset()
					continue
				}
				mu.Lock()
				r.sent++
				r.lat = append(r.lat, d)
				mu.Unlock()
			}
		}()
	}
	for _, m := range msgs {
		if ctx.Err() != nil {
			break
		}
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	r.wall = time.Since(start)
	return r
}
