// Command demo shows the lab at work: alice (provider A) sends one PEC to bruno (provider B)
// and to oscar (an ordinary mailbox), then a second one that breaks a formal rule (a Bcc).
// It waits for what each party receives, saves every message under $PEC_LAB/demo, and checks
// each with pecctl verify and openssl against the lab CA.
//
// Run it after `PEC_WIRING=pec integration/scripts/lab-up.sh` (make demo does both).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// (Long on purpose: the demo's script, one step after another as it prints them.)
func run() error {
	l, err := lab.Load()
	if err != nil {
		return err
	}
	if l.Wiring != "pec" {
		return fmt.Errorf("the lab runs in %q wiring; run `make demo` (PEC wiring)", l.Wiring)
	}
	a, _ := l.Provider("a")
	b, _ := l.Provider("b")
	o, _ := l.Provider("o")
	alice, bruno, oscar := a.Users[0], b.Users[0], o.Users[0]
	out := filepath.Join(l.Base, "demo")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tlsConf, err := mailtest.TLSConfig(a.Postfix.TLSCert, "mx."+a.Domain)
	if err != nil {
		return err
	}
	sub := mailtest.Submission{Addr: a.Postfix.Submission, TLS: tlsConf, User: alice.Address, Pass: alice.Password, LocalAddr: a.IP}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 1. A PEC to a certified and an ordinary recipient.
	token := mailtest.Token("demo")
	subject := "Contratto firmato " + token
	msg := mailtest.Message(alice.Address, []string{bruno.Address, oscar.Address}, subject,
		"Buongiorno,\nin allegato il contratto firmato.\nCordiali saluti\n")
	fmt.Printf("1. %s sends %q to %s (PEC) and %s (ordinary mail) through %s\n",
		alice.Address, subject, bruno.Address, oscar.Address, a.Postfix.Submission)
	if err := sub.Send(alice.Address, []string{bruno.Address, oscar.Address}, msg); err != nil {
		return err
	}
	saved := []string{}
	for _, w := range []struct {
		who  lab.User
		imap string
		name string
		what string
	}{
		{alice, a.Dovecot.IMAP, "accettazione", "the ricevuta di accettazione in alice's mailbox"},
		{bruno, b.Dovecot.IMAP, "busta-bruno", "the busta di trasporto in bruno's mailbox"},
		{oscar, o.Dovecot.IMAP, "busta-oscar", "the busta di trasporto in oscar's ordinary mailbox"},
	} {
		msgs, err := mailtest.Mailbox{Addr: w.imap, User: w.who.Address, Pass: w.who.Password}.WaitFor(ctx, token, 1)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", w.what, err)
		}
		p := filepath.Join(out, w.name+".eml")
		if err := os.WriteFile(p, msgs[0], 0o644); err != nil {
			return err
		}
		fmt.Printf("   received %s: %s\n     %s\n", w.what, subjectOf(msgs[0]), p)
		saved = append(saved, p)
	}

	// 2. A message with a Bcc: the access point refuses it and sends an avviso.
	token2 := mailtest.Token("demo")
	bianca := b.Users[1]
	bad := append([]byte("Bcc: <"+bianca.Address+">\r\n"), mailtest.Message(alice.Address, []string{bruno.Address}, "Con Bcc "+token2, "Questo messaggio ha un destinatario in Bcc.\n")...)
	fmt.Printf("\n2. %s sends a message with %s in Bcc (forbidden, pec-spec §7.1)\n", alice.Address, bianca.Address)
	if err := sub.Send(alice.Address, []string{bruno.Address, bianca.Address}, bad); err != nil {
		fmt.Printf("   SMTP answer: %v\n", err)
	}
	msgs, err := mailtest.Mailbox{Addr: a.Dovecot.IMAP, User: alice.Address, Pass: alice.Password}.WaitFor(ctx, token2, 1)
	if err != nil {
		return fmt.Errorf("waiting for the avviso di non accettazione: %w", err)
	}
	p := filepath.Join(out, "non-accettazione.eml")
	if err := os.WriteFile(p, msgs[0], 0o644); err != nil {
		return err
	}
	fmt.Printf("   received the avviso in alice's mailbox: %s\n     %s\n", subjectOf(msgs[0]), p)
	if !strings.HasPrefix(subjectOf(msgs[0]), "AVVISO DI NON ACCETTAZIONE: ") {
		return fmt.Errorf("expected an avviso di non accettazione, got %q", subjectOf(msgs[0]))
	}
	saved = append(saved, p)

	// 3. Independent checks.
	fmt.Printf("\n3. Checks against the lab CA (%s)\n", l.CA.Cert)
	pecctl := filepath.Join(filepath.Dir(os.Args[0]), "pecctl")
	if _, err := os.Stat(pecctl); err != nil {
		pecctl = "bin/pecctl"
	}
	failed := 0
	for _, p := range saved {
		for _, c := range [][]string{
			{pecctl, "verify", "--ca", l.CA.Cert, p},
			{"openssl", "smime", "-verify", "-CAfile", l.CA.Cert, "-purpose", "any", "-in", p, "-out", "/dev/null"},
		} {
			res, err := exec.Command(c[0], c[1:]...).CombinedOutput()
			status := "ok"
			if err != nil {
				status, failed = "FAILED", failed+1
			}
			fmt.Printf("   %-6s %s %s\n", status, filepath.Base(c[0]), strings.Join(c[1:], " "))
			if err != nil || c[1] == "verify" {
				fmt.Println(indent(string(res)))
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	fmt.Printf("\nAll checks passed. Read the mailboxes over IMAP with the users in %s.\n", lab.Path())
	return nil
}

func subjectOf(msg []byte) string {
	for _, line := range strings.Split(string(msg), "\n") {
		if strings.HasPrefix(strings.ToLower(line), "subject:") {
			return strings.TrimSpace(line[len("subject:"):])
		}
		if strings.TrimSpace(line) == "" {
			break
		}
	}
	return ""
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "       " + strings.ReplaceAll(s, "\n", "\n       ")
}
