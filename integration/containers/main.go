// Command containers checks the containerised PEC network of docker/compose.yaml from outside,
// through the ports the containers publish: alice@pec-a.test submits one PEC for
// bruno@pec-b.test to provider A (STARTTLS + AUTH on :587), then it reads over IMAP
//
//   - the busta di trasporto in bruno's mailbox at provider B,
//   - the ricevuta di accettazione in alice's mailbox at provider A,
//   - the ricevuta di presa in carico B's reception point sends to A's receipt address
//     (ricevute@pec-a.test),
//   - and, when B delivers through pec-lmtpd, the ricevuta di avvenuta consegna in alice's,
//
// and checks each: exactly one of each kind; the kind, a verified signature and conformance
// (pec.Classify); `pecctl verify --ca` and `openssl smime -verify` against the containers' CA
// only; its daticert.xml valid against the DTD (`xmllint --dtdvalid`) (pec-spec.md §8).
//
// docker/podman-test.sh (make containers) runs it with PEC_LAB pointing at a lab.json it wrote
// (integration/lab schema) with the published addresses, the passwords and the certificates
// copied out of the containers.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
)

// deadline bounds the whole exchange: a cold container network on a busy machine is slow.
const deadline = 3 * time.Minute

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "containers: FAILED:", err)
		os.Exit(1)
	}
}

// expect is what one mailbox must hold: one message of each kind, with the token.
type expect struct {
	what  string
	prov  *lab.Provider
	user  lab.User
	kinds []pec.Kind
}

func run() error {
	l, err := lab.Load()
	if err != nil {
		return err
	}
	a, errA := l.Provider("a")
	b, errB := l.Provider("b")
	if err := errors.Join(errA, errB); err != nil {
		return err
	}
	alice, errAlice := user(a, "alice@")
	bruno, errBruno := user(b, "bruno@")
	ricevute, errRicevute := user(a, a.ReceiptAddress)
	if err := errors.Join(errAlice, errBruno, errRicevute); err != nil {
		return err
	}
	tlsConf, err := mailtest.TLSConfig(a.Postfix.TLSCert, "mx."+a.Domain)
	if err != nil {
		return err
	}
	token := mailtest.Token("containers")
	subject := "Prova dai container " + token
	msg := mailtest.Message(alice.Address, []string{bruno.Address}, subject, "Una PEC attraverso i container.\n")
	sub := mailtest.Submission{Addr: a.Postfix.Submission, TLS: tlsConf, User: alice.Address, Pass: alice.Password}
	start := time.Now()
	if err := sub.Send(alice.Address, []string{bruno.Address}, msg); err != nil {
		return fmt.Errorf("%s submitting to %s: %w", alice.Address, a.Postfix.Submission, err)
	}
	fmt.Printf("sent %q from %s to %s through %s\n", subject, alice.Address, bruno.Address, a.Postfix.Submission)

	aliceKinds := []pec.Kind{pec.KindAccettazione}
	if b.LMTPD != "" {
		aliceKinds = append(aliceKinds, pec.KindConsegnaCompleta)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	failed := 0
	expects := []expect{
		{"busta di trasporto at B", b, bruno, []pec.Kind{pec.KindBusta}},
		{"receipts of the sender at A", a, alice, aliceKinds},
		{"presa in carico at A's receipt address", a, ricevute, []pec.Kind{pec.KindPresaInCarico}},
	}
	for _, e := range expects {
		if err := check(ctx, l, e, token, start); err != nil {
			fmt.Printf("FAILED %s: %v\n", e.what, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d mailboxes wrong", failed, len(expects))
	}
	fmt.Println("PASS: the PEC crossed the containers and every message verifies with the containers' CA")
	return nil
}

// check waits for the expected messages in one mailbox and verifies each.
func check(ctx context.Context, l *lab.Lab, e expect, token string, start time.Time) error {
	mb := mailtest.Mailbox{Addr: e.prov.Dovecot.IMAP, User: e.user.Address, Pass: e.user.Password}
	if _, err := mb.WaitFor(ctx, token, len(e.kinds)); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // a duplicate would arrive right behind the first
	msgs, err := mb.WaitFor(ctx, token, len(e.kinds))
	if err != nil {
		return err
	}
	if len(msgs) != len(e.kinds) {
		return fmt.Errorf("%s holds %d messages with the token, want %d", e.user.Address, len(msgs), len(e.kinds))
	}
	want := map[pec.Kind]bool{}
	for _, k := range e.kinds {
		want[k] = true
	}
	for i, m := range msgs {
		c := pec.Classify(m, pec.ClassifyOptions{})
		if !want[c.Kind] {
			return fmt.Errorf("%s: message %d is %v, want one of %v", e.user.Address, i+1, c.Kind, e.kinds)
		}
		delete(want, c.Kind) // each kind once: a second one is a duplicate
		if c.Verified == nil {
			return fmt.Errorf("%s: %v: signature does not verify: %v", e.user.Address, c.Kind, c.SigErr)
		}
		if !c.Conforms() {
			return fmt.Errorf("%s: %v does not conform: %v", e.user.Address, c.Kind, c.Deviations)
		}
		if err := verifyOutside(l, m, c.DaticertRaw); err != nil {
			return fmt.Errorf("%s: %v: %w", e.user.Address, c.Kind, err)
		}
		s, _ := c.Header.Get("Subject")
		fmt.Printf("ok     %-24s %-22s %5.1fs  %s  (pecctl verify, openssl smime -verify, xmllint --dtdvalid: ok)\n",
			e.user.Address, c.Kind, time.Since(start).Seconds(), strings.TrimSpace(s))
	}
	return nil
}

// verifyOutside checks msg with tools outside pec.Classify, the containers' CA as the only
// trust anchor: pecctl verify (PECCTL, the binary built from this tree), openssl smime -verify,
// and daticert.xml against the DTD with xmllint.
func verifyOutside(l *lab.Lab, msg, daticert []byte) error {
	dir, err := os.MkdirTemp(l.Base, "msg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	eml, xml := filepath.Join(dir, "msg.eml"), filepath.Join(dir, "daticert.xml")
	if err := errors.Join(os.WriteFile(eml, msg, 0o600), os.WriteFile(xml, daticert, 0o600)); err != nil {
		return err
	}
	pecctl := os.Getenv("PECCTL")
	if pecctl == "" {
		return errors.New("PECCTL (the pecctl binary) is not set")
	}
	for _, argv := range [][]string{
		{pecctl, "verify", "--ca", l.CA.Cert, eml},
		{"openssl", "smime", "-verify", "-in", eml, "-CAfile", l.CA.Cert, "-out", os.DevNull},
		{"xmllint", "--noout", "--dtdvalid", corpus.DTD(), xml},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	return nil
}

// user finds a mailbox of p by its address or address prefix.
func user(p *lab.Provider, prefix string) (lab.User, error) {
	for _, u := range p.Users {
		if strings.HasPrefix(u.Address, prefix) {
			return u, nil
		}
	}
	return lab.User{}, fmt.Errorf("no user %s… in provider %s", prefix, p.ID)
}
