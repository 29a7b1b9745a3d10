//go:build integration

package integration

// Issue 12 item 3: what an existing installation has in main.cf does not reach the PEC paths,
// and the submission cleanup drops a client's Return-Path:.

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// setMainCF sets main.cf parameters of p's Postfix and reloads it; the cleanup puts back what
// was there (removing what was not) and reloads again.
func setMainCF(t *testing.T, p *lab.Provider, settings map[string]string) {
	t.Helper()
	dir := p.Postfix.ConfigDir
	postconf := func(args ...string) string {
		b, err := exec.Command("postconf", append([]string{"-c", dir}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("postconf %v: %v: %s", args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	reload := func() {
		if out, err := exec.Command("script", "-qec", "postfix -c "+dir+" reload", "/dev/null").CombinedOutput(); err != nil {
			t.Fatalf("postfix reload: %v: %s", err, out)
		}
		time.Sleep(time.Second) // new smtpd and cleanup processes read the new main.cf
	}
	var restore [][]string
	for k, v := range settings {
		if old := postconf("-n", k); old != "" {
			restore = append(restore, []string{"-e", old})
		} else {
			restore = append(restore, []string{"-X", k})
		}
		postconf("-e", k+" = "+v)
	}
	t.Cleanup(func() {
		for _, r := range restore {
			postconf(r...)
		}
		reload()
	})
	reload()
}

// An installation's global content_filter, header_checks, body_checks and
// receive_override_options do not apply to the PEC paths: a submission and a reinjected
// message that match them are queued and delivered as if they were not there (the submission
// still certified: no_milters does not reach the access point), while the same header and
// body patterns do refuse ordinary mail at the MX, which shows they are in force.
//
// Not parallel: it changes provider A's main.cf while it runs; the parallel tests of this
// package wait for it (they start once the sequential ones have ended).
func TestInstallationFiltersSkipPECPaths(t *testing.T) {
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	token := mailtest.Token("filters")
	htrap, btrap := "HTRAP-"+token, "BTRAP-"+token
	setMainCF(t, a, map[string]string{
		"header_checks":            "regexp:{ {/^Subject:.*" + htrap + "/ REJECT header_checks applied} }",
		"body_checks":              "regexp:{ {/" + btrap + "/ REJECT body_checks applied} }",
		"content_filter":           "error:5.7.1 content_filter applied",
		"receive_override_options": "no_milters",
	})

	// The traps are armed: ordinary mail at the MX (the installation's own cleanup) is refused.
	for _, m := range []struct{ subject, body, want string }{
		{"mx " + htrap, "x\n", "header_checks applied"},
		{"mx " + token, btrap + "\n", "body_checks applied"},
	} {
		err := mailtest.Submission{Addr: a.Postfix.MX, LocalAddr: a.IP}.Send(bruno.Address, []string{alice.Address},
			mailtest.Message(bruno.Address, []string{alice.Address}, m.subject, m.body))
		var se *mailtest.StepError
		if !errors.As(err, &se) || se.Step != "DATA" || !strings.Contains(se.Error(), m.want) {
			t.Fatalf("MX with %q: %v; want DATA refused by %s (main.cf not in force?)", m.subject, err, m.want)
		}
	}

	// Submission: busta to bruno, accettazione to alice.
	sub := mailtest.Message(alice.Address, []string{bruno.Address}, "sub "+htrap, "submitted\n"+btrap+"\n")
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, sub); err != nil {
		t.Fatalf("submission through the installation's filters: %v", err)
	}
	// Reinjection: a message as pec-milter's drainer sends it.
	rtoken := mailtest.Token("filtersre")
	re := mailtest.Message(a.ServiceAddress, []string{bruno.Address}, "re "+rtoken+" "+htrap, "reinjected\n"+btrap+"\n")
	if err := (mailtest.Submission{Addr: a.Postfix.Reinject}).Send(a.ServiceAddress, []string{bruno.Address}, re); err != nil {
		t.Fatalf("reinjection through the installation's filters: %v", err)
	}
	c := classify(t, l, waitOne(t, mailbox(b, bruno), "sub "+htrap), pec.KindBusta)
	if !bytes.Contains(c.Postacert, []byte(btrap)) {
		t.Error("busta delivered without the original's body")
	}
	waitOne(t, mailbox(b, bruno), rtoken)
	waitOne(t, mailbox(a, alice), "sub "+htrap)
}

// The submission cleanup drops a client's Return-Path: (Postfix's default, which pec-cleanup
// keeps while it keeps Bcc:): it would otherwise travel inside the signed original as if the
// provider had written it.
func TestSubmissionDropsReturnPath(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	token := mailtest.Token("rpath")
	forged := "forged-" + token + "@evil.invalid"
	msg := append([]byte("Return-Path: <"+forged+">\r\n"), mailtest.Message(alice.Address, []string{bruno.Address}, "rp "+token, "x\n")...)
	if err := tlsSubmission(t, a, &alice).Send(alice.Address, []string{bruno.Address}, msg); err != nil {
		t.Fatal(err)
	}
	got := waitOne(t, mailbox(b, bruno), token)
	c := classify(t, l, got, pec.KindBusta)
	if c.Postacert == nil || bytes.Contains(got, []byte(forged)) || bytes.Contains(c.Postacert, []byte(forged)) {
		t.Errorf("the client's Return-Path reached the busta (postacert.eml present: %v)", c.Postacert != nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
	defer cancel()
	if _, err := mailbox(a, alice).WaitFor(ctx, token, 1); err != nil { // the accettazione
		t.Fatal(err)
	}
}
