package demo

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/pec"
)

// show prints one saved message: what it is, where it was, what its daticert.xml says, and
// the outcome of each check (with the tool's output when it failed).
func (d *run) show(s Saved, c *pec.Classified) {
	subj, _ := c.Header.Get("Subject")
	from, _ := c.Header.Get("From")
	to, _ := c.Header.Get("To")
	d.printf("   %s\n", strings.ToUpper(s.Label[:1])+s.Label[1:])
	d.printf("     in %s's INBOX (IMAP %s)   kind: %s\n", s.Mailbox, s.Provider.Dovecot.IMAP, s.Kind)
	d.printf("     Subject: %s\n     From: %s   To: %s\n", subj, from, to)
	if dc := c.Daticert; dc != nil {
		line := fmt.Sprintf("daticert.xml: tipo %s, gestore-emittente %q", dc.Tipo, dc.Dati.GestoreEmittente)
		if dc.Dati.Ricevuta != "" {
			line += ", ricevuta " + string(dc.Dati.Ricevuta)
		}
		if dc.Dati.Consegna != "" {
			line += ", consegna " + dc.Dati.Consegna
		}
		if len(dc.Dati.Ricezione) > 0 {
			line += ", ricezione " + strings.Join(dc.Dati.Ricezione, " ")
		}
		d.printf("     %s\n", line)
	}
	if c.Signer != nil {
		d.printf("     signed by %s\n", c.Signer.Subject)
	}
	d.printf("     saved %s", s.Path)
	if s.Daticert != "" {
		d.printf(" (and %s)", filepath.Base(s.Daticert))
	}
	var res []string
	for _, ch := range s.Checks {
		st := "ok"
		if !ch.OK {
			st = "FAILED"
		}
		res = append(res, st+" "+ch.Name)
	}
	d.printf("\n     %s\n", strings.Join(res, "   "))
	for _, ch := range s.Checks {
		if !ch.OK {
			d.printf("     %s: %s\n%s\n", ch.Name, strings.Join(ch.Cmd, " "), indent(ch.Output, "       "))
		}
	}
	d.printf("\n")
}

// checksHelp prints, once, the commands each message is checked with.
func (d *run) checksHelp() {
	cs := d.commands(Saved{Path: "MSG.eml", Daticert: "MSG.daticert.xml"})
	d.printf("   Each message below is saved, then checked with:\n")
	for _, c := range cs {
		d.printf("     %s\n", strings.Join(c.Cmd, " "))
	}
	d.printf("\n")
}

// trace prints pecctl trace of the transaction at A (the sender's provider: accettazione,
// busta, the receipts back and each recipient's state) and at B (presa in carico, consegne).
func (d *run) trace() {
	d.printf("4. pecctl trace %s, read from each provider's legal log\n", d.res.Identificativo)
	for _, p := range []*lab.Provider{d.cast.a, d.cast.b} {
		cmd := []string{d.Pecctl, "trace", "-config", p.ConfigFile, d.res.Identificativo}
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		d.printf("   at %s: %s\n%s\n", p.Name, strings.Join(cmd, " "), indent(strings.TrimSpace(string(out)), "     "))
		if err != nil {
			d.res.Failed++
			d.printf("     FAILED: %v\n", err)
		}
	}
	d.printf("\n")
}

// howTo prints where everything is, how to read the mailboxes over IMAP and how to stop the lab.
func (d *run) howTo() {
	c := d.cast
	d.printf("5. Where things are\n")
	d.printf("   raw messages: %s/*.eml, each with its daticert.xml beside it\n", d.Dir)
	d.printf("   mailboxes over IMAP (plain LOGIN on loopback; every address and password is in %s):\n", lab.Path())
	for _, x := range []struct {
		p *lab.Provider
		u []string
	}{{c.a, []string{c.alice.Address, c.ricevuteA.Address}}, {c.b, []string{c.bruno.Address, c.bianca.Address}}, {c.o, []string{c.oscar.Address}}} {
		for _, addr := range x.u {
			for _, u := range x.p.Users {
				if u.Address == addr {
					d.printf("     %-28s %-18s password %s\n", u.Address, x.p.Dovecot.IMAP, u.Password)
				}
			}
		}
	}
	d.printf("   for example, with curl:\n")
	d.printf("     curl -s --user '%s:%s' 'imap://%s/INBOX' -X 'UID SEARCH SUBJECT %s'\n", c.alice.Address, c.alice.Password, c.a.Dovecot.IMAP, d.token)
	d.printf("     curl -s --user '%s:%s' 'imap://%s/INBOX/;UID=N'    (N: a UID the search printed)\n", c.alice.Address, c.alice.Password, c.a.Dovecot.IMAP)
	d.printf("   logs: %s, %s, %s (A; B's are beside them under %s)\n",
		c.a.Logs["pec-milter"], c.a.Logs["pec-lmtpd"], c.a.Postfix.Maillog, filepath.Dir(c.b.ConfigFile))
	env := ""
	for _, v := range []string{"PEC_LAB", "PEC_LAB_NET"} {
		if x := os.Getenv(v); x != "" {
			env += v + "=" + x + " "
		}
	}
	d.printf("   The lab keeps running. Stop it with: %smake lab-down\n", env)
}

func indent(s, pre string) string {
	if s == "" {
		return ""
	}
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre)
}
