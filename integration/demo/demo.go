// Package demo is what `make demo` shows, as a library so that an integration test can run the
// same steps against the lab and fail when the demo would: alice (provider A) sends one PEC To
// bruno (provider B) and oscar (an ordinary mailbox at posta.test), Cc bianca (provider B); the
// demo waits for every message the rules make of it (pec-spec.md §2), saves each one, checks each
// with pecctl verify, openssl smime -verify and xmllint --dtdvalid against the lab CA and the DTD,
// and prints the pecctl trace of the transaction at both providers. A second message with a Bcc
// is refused at the access point with an avviso di non accettazione (pec-spec.md §7.1).
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// Options say where the demo runs and what it uses.
type Options struct {
	Lab    *lab.Lab
	Out    io.Writer     // the readable summary
	Dir    string        // where the raw messages are saved (created)
	Pecctl string        // the pecctl binary
	Wait   time.Duration // how long to wait for every message of one step (default 90 s)
}

// Saved is one message the demo found in a mailbox and checked.
type Saved struct {
	Label    string // "busta at B (To)", "accettazione", ...
	Mailbox  string // the address whose INBOX held it
	Provider *lab.Provider
	Kind     pec.Kind
	Path     string // the raw message as read over IMAP
	Daticert string // its daticert.xml, extracted ("" when it has none)
	Checks   []Check
}

// Result is what one run found.
type Result struct {
	Identificativo string  // of the PEC's transaction (the busta's Message-ID)
	Messages       []Saved // every message found, in the order shown
	Failed         int     // checks that failed
}

// Run runs the demo and prints its summary to o.Out. It returns an error when a message does
// not arrive in time or any check fails (the Result then says what was found).
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Lab.Wiring != "pec" {
		return nil, fmt.Errorf("the lab runs in %q wiring; the demo needs PEC wiring (make demo starts it so)", o.Lab.Wiring)
	}
	if o.Wait == 0 {
		o.Wait = 90 * time.Second
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	p, err := cast(o.Lab)
	if err != nil {
		return nil, err
	}
	r := &Result{}
	d := &run{Options: o, cast: p, res: r}
	if err := d.pec(ctx); err != nil {
		return r, err
	}
	if err := d.bcc(ctx); err != nil {
		return r, err
	}
	d.trace()
	d.howTo()
	if r.Failed > 0 {
		return r, fmt.Errorf("%d checks failed (see above)", r.Failed)
	}
	return r, nil
}

// people is the demo's cast, read from lab.json.
type people struct {
	a, b, o                                *lab.Provider
	alice, bruno, bianca, oscar, ricevuteA lab.User
}

func cast(l *lab.Lab) (*people, error) {
	var p people
	var err error
	for _, x := range []struct {
		id string
		pp **lab.Provider
	}{{"a", &p.a}, {"b", &p.b}, {"o", &p.o}} {
		if *x.pp, err = l.Provider(x.id); err != nil {
			return nil, err
		}
	}
	for _, x := range []struct {
		p    *lab.Provider
		addr string
		u    *lab.User
	}{
		{p.a, "alice@" + p.a.Domain, &p.alice}, {p.b, "bruno@" + p.b.Domain, &p.bruno},
		{p.b, "bianca@" + p.b.Domain, &p.bianca}, {p.o, "oscar@" + p.o.Domain, &p.oscar},
		{p.a, p.a.ReceiptAddress, &p.ricevuteA},
	} {
		found := false
		for _, u := range x.p.Users {
			if u.Address == x.addr {
				*x.u, found = u, true
			}
		}
		if !found {
			return nil, fmt.Errorf("lab.json: no user %s at provider %s", x.addr, x.p.ID)
		}
	}
	return &p, nil
}

type run struct {
	Options
	cast  *people
	res   *Result
	token string // in the subject of the PEC
}

func (d *run) printf(format string, a ...any) { fmt.Fprintf(d.Out, format, a...) }

func (d *run) submission() (mailtest.Submission, error) {
	c := d.cast
	tlsConf, err := mailtest.TLSConfig(c.a.Postfix.TLSCert, "mx."+c.a.Domain)
	if err != nil {
		return mailtest.Submission{}, err
	}
	return mailtest.Submission{Addr: c.a.Postfix.Submission, TLS: tlsConf, User: c.alice.Address, Pass: c.alice.Password, LocalAddr: c.a.IP}, nil
}

// expected is one message the rules make of the PEC, and where it lands.
type expected struct {
	label string
	p     *lab.Provider
	u     lab.User
	kind  pec.Kind
	rcpt  string // for a consegna: the recipient it attests (daticert consegna)
	file  string
}

// (Long on purpose: the demo's first step, one line of the script after another.)
func (d *run) pec(ctx context.Context) error {
	c := d.cast
	sub, err := d.submission()
	if err != nil {
		return err
	}
	token := mailtest.Token("demo")
	d.token = token
	subject := "Contratto firmato " + token
	to, cc := []string{c.bruno.Address, c.oscar.Address}, []string{c.bianca.Address}
	msg := message(c.alice.Address, to, cc, subject, "Buongiorno,\nin allegato il contratto firmato.\nCordiali saluti\nAlice\n")
	d.printf("1. %s sends a PEC through A's submission port %s\n", c.alice.Address, c.a.Postfix.Submission)
	d.printf("     Subject: %s\n     To: %s (PEC at B), %s (ordinary mail)\n     Cc: %s (PEC at B)\n",
		subject, c.bruno.Address, c.oscar.Address, c.bianca.Address)
	d.printf("     no X-TipoRicevuta: completa by default, so To gets a completa, Cc a sintetica (pec-spec §2.4)\n")
	if err := sub.Send(c.alice.Address, append(to, cc...), msg); err != nil {
		return err
	}
	d.printf("   SMTP answer: 250, accepted by A's access point\n\n")
	want := []expected{
		{"ricevuta di accettazione (A to alice)", c.a, c.alice, pec.KindAccettazione, "", "1-accettazione"},
		{"busta di trasporto at B, To", c.b, c.bruno, pec.KindBusta, "", "2-busta-bruno"},
		{"busta di trasporto at B, Cc", c.b, c.bianca, pec.KindBusta, "", "2-busta-bianca"},
		{"busta di trasporto at the ordinary mailbox", c.o, c.oscar, pec.KindBusta, "", "2-busta-oscar"},
		{"ricevuta di presa in carico (B to A's service mailbox)", c.a, c.ricevuteA, pec.KindPresaInCarico, "", "3-presa-in-carico"},
		{"avvenuta consegna completa for bruno (To)", c.a, c.alice, pec.KindConsegnaCompleta, c.bruno.Address, "4-consegna-bruno"},
		{"avvenuta consegna sintetica for bianca (Cc)", c.a, c.alice, pec.KindConsegnaSintetica, c.bianca.Address, "4-consegna-bianca"},
	}
	start := time.Now()
	found, err := d.waitAll(ctx, token, want)
	if err != nil {
		return err
	}
	d.printf("2. Every message the rules make of it arrived %.1f s after the submission (pec-spec §2)\n", time.Since(start).Seconds())
	d.checksHelp()
	for i, w := range want {
		s, err := d.save(w, found[i])
		if err != nil {
			return err
		}
		if w.kind == pec.KindBusta && d.res.Identificativo == "" {
			d.res.Identificativo = found[i].c.Daticert.Dati.Identificativo
		}
		d.show(s, found[i].c)
	}
	return nil
}

// (Long on purpose: the refusal, as the demo prints it.)
func (d *run) bcc(ctx context.Context) error {
	c := d.cast
	sub, err := d.submission()
	if err != nil {
		return err
	}
	token := mailtest.Token("demo")
	bad := append([]byte("Bcc: <"+c.bianca.Address+">\r\n"),
		message(c.alice.Address, []string{c.bruno.Address}, nil, "Con Bcc "+token, "Questo messaggio ha un destinatario in Bcc.\n")...)
	d.printf("3. %s sends a message with %s in Bcc (forbidden, pec-spec §7.1)\n", c.alice.Address, c.bianca.Address)
	if err := sub.Send(c.alice.Address, []string{c.bruno.Address, c.bianca.Address}, bad); err != nil {
		d.printf("   SMTP answer: %v\n", err)
	} else {
		return fmt.Errorf("a message with a Bcc was accepted")
	}
	w := []expected{{"avviso di non accettazione (A to alice)", c.a, c.alice, pec.KindNonAccettazione, "", "5-non-accettazione"}}
	found, err := d.waitAll(ctx, token, w)
	if err != nil {
		return err
	}
	s, err := d.save(w[0], found[0])
	if err != nil {
		return err
	}
	d.show(s, found[0].c)
	return nil
}

// got is a message read back over IMAP, classified.
type got struct {
	raw []byte
	c   *pec.Classified
}

// waitAll polls the mailboxes of want until each holds its message with token (matched by kind
// and, for a consegna, by the recipient it attests), or o.Wait passes.
func (d *run) waitAll(ctx context.Context, token string, want []expected) ([]got, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Wait)
	defer cancel()
	found := make([]got, len(want))
	for {
		missing := ""
		for i, w := range want {
			if found[i].c != nil {
				continue
			}
			if g, ok := d.lookFor(w, token); ok {
				found[i] = g
				continue
			}
			if missing == "" {
				missing = fmt.Sprintf("the %s in %s's INBOX", w.label, w.u.Address)
			}
		}
		if missing == "" {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not arrive within %v: see the logs listed in %s", missing, d.Wait, lab.Path())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (d *run) lookFor(w expected, token string) (got, bool) {
	mb := mailtest.Mailbox{Addr: w.p.Dovecot.IMAP, User: w.u.Address, Pass: w.u.Password}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, _ := mb.WaitFor(ctx, token, 0)
	for _, m := range msgs {
		c := pec.Classify(m, pec.ClassifyOptions{})
		if c.Kind != w.kind {
			continue
		}
		if w.rcpt != "" && (c.Daticert == nil || c.Daticert.Dati.Consegna != w.rcpt) {
			continue
		}
		return got{m, c}, true
	}
	return got{}, false
}

// save writes the message and its daticert.xml under o.Dir and checks them.
func (d *run) save(w expected, g got) (Saved, error) {
	s := Saved{Label: w.label, Mailbox: w.u.Address, Provider: w.p, Kind: g.c.Kind, Path: filepath.Join(d.Dir, w.file+".eml")}
	if err := os.WriteFile(s.Path, g.raw, 0o644); err != nil {
		return s, err
	}
	if g.c.DaticertRaw != nil {
		s.Daticert = filepath.Join(d.Dir, w.file+".daticert.xml")
		if err := os.WriteFile(s.Daticert, g.c.DaticertRaw, 0o644); err != nil {
			return s, err
		}
	}
	s.Checks = d.check(s)
	for _, c := range s.Checks {
		if !c.OK {
			d.res.Failed++
		}
	}
	d.res.Messages = append(d.res.Messages, s)
	return s, nil
}

// message is an original as a mail client writes it, with CRLF line ends.
func message(from string, to, cc []string, subject, body string) []byte {
	m := mailtest.Message(from, to, subject, body)
	if len(cc) == 0 {
		return m
	}
	return append([]byte("Cc: <"+strings.Join(cc, ">, <")+">\r\n"), m...)
}
