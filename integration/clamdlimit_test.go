//go:build integration

package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// setStreamMax replaces clamd.conf's StreamMaxLength.
func setStreamMax(v string) func([]string) []string {
	return func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if !strings.HasPrefix(l, "StreamMaxLength") {
				out = append(out, l)
			}
		}
		return append(out, "StreamMaxLength "+v)
	}
}

// TestAccessPointClamdLimits (issue 12 item 9), with a private access point and its own clamd:
//   - against Debian's stock clamd.conf (StreamMaxLength 25M) and limits.hard_max_size 100MB,
//     pec-milter refuses to start and names StreamMaxLength in clamd.conf, instead of
//     answering 4xx for ever to every message between 25 MiB and 100 MB;
//   - with StreamMaxLength covering hard_max_size it starts; a 40 MB message to one recipient
//     gets the avviso di non accettazione for size × recipients (550) and is never streamed
//     to clamd: clamd is even stopped while it is submitted, and any scan would be a 4xx;
//   - a 12 MB message (within the 30 MB limit) is scanned and accepted.
func TestAccessPointClamdLimits(t *testing.T) {
	t.Parallel()
	l, a, b, _ := pecLab(t)
	p := startPrivateAPWith(t, l, a, apOptions{clamd: setStreamMax("25M"), noStart: true})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, "-config", p.cfg)
	cmd.Env = p.env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("pec-milter against StreamMaxLength 25M: %v, want it to exit with an error\n%s", err, out)
	}
	if !strings.Contains(string(out), "StreamMaxLength") || !strings.Contains(string(out), "clamd.conf") ||
		!strings.Contains(string(out), "limits.hard_max_size") {
		t.Fatalf("pec-milter's error does not name StreamMaxLength, clamd.conf and limits.hard_max_size:\n%s", out)
	}
	t.Logf("refused to start after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))

	p.stopClamd()
	if err := rewriteClamdConf(p.clamdConf, setStreamMax("100M")); err != nil {
		t.Fatal(err)
	}
	p.startClamd(t)
	p.startMilter(t)

	alice, bruno := user(t, a, "alice"), user(t, b, "bruno")
	line := strings.Repeat("0123456789", 7) + "abcd\n"
	token := mailtest.Token("big40")
	body := strings.Repeat(line, 40_000_000/len(line))
	p.stopClamd()
	err = p.submission.Send(alice.Address, []string{bruno.Address},
		raw(body, "From: "+alice.Address, "To: "+bruno.Address, "Subject: "+token, "Date: "+time.Now().Format(time.RFC1123Z)))
	var se *mailtest.StepError
	if !errors.As(err, &se) || se.Step != "DATA" || se.Code != 550 || !strings.Contains(se.Error(), "supera il limite") {
		t.Fatalf("40 MB to one recipient with clamd stopped: %v; want 550 and the avviso for size x recipients", err)
	}
	c := classify(t, l, waitOne(t, mailbox(a, alice), token), pec.KindNonAccettazione)
	if !strings.Contains(c.Daticert.Dati.ErroreEsteso, "supera il limite") {
		t.Errorf("errore-esteso %q", c.Daticert.Dati.ErroreEsteso)
	}
	none(t, mailbox(b, bruno), token)

	p.startClamd(t)
	token = mailtest.Token("big12")
	body = strings.Repeat(line, 12_000_000/len(line))
	if err := p.submission.Send(alice.Address, []string{bruno.Address},
		raw(body, "From: "+alice.Address, "To: "+bruno.Address, "Subject: "+token, "Date: "+time.Now().Format(time.RFC1123Z))); err != nil {
		t.Fatalf("12 MB to one recipient: %v (last failure: %s)", err, p.lastFailure(t))
	}
	classify(t, l, waitOne(t, mailbox(b, bruno), token), pec.KindBusta)
}

// rewriteClamdConf applies edit to the lines of a clamd.conf.
func rewriteClamdConf(path string, edit func([]string) []string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	lines := edit(strings.Split(strings.TrimRight(string(b), "\n"), "\n"))
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
}
