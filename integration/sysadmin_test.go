//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec"
)

// TestSysadminInstall is issue 17 item 4's proof that postfix-conf/README.md is true: provider C
// (pec-c.test) is a plain Postfix and a plain Dovecot made the way a Debian admin makes them,
// turned into a PEC provider by running the README's "Installing, step by step" blocks as they
// stand (integration/scripts/sysadmin-install.sh; nothing of the lab's generator configures
// it). Its record goes into the lab's providers index, as AgID would publish it, so that A
// trusts it. Then the core flow, both ways: a user of C sends a PEC to a user of A and the
// reverse; each sender gets its accettazione and its consegna, each recipient the busta, and
// the sender's provider's service mailbox the presa in carico of the other; every one passes
// pecctl verify, openssl smime -verify and xmllint --dtdvalid. C is taken down at the end and
// its record removed from the index.
func TestSysadminInstall(t *testing.T) {
	l, a, _, _ := pecLab(t)
	c := installC(t, l, a)
	checkUnits(t, filepath.Join(l.Base, "sysadmin-c"))
	checkSiteValues(t, l, filepath.Join(l.Base, "sysadmin-c", "etc", "gestore", "pec.yaml"))
	t.Run("flows", func(t *testing.T) {
		t.Run("C to A", func(t *testing.T) {
			t.Parallel()
			coreFlow(t, l, c, user(t, c, "carla"), a, user(t, a, "alice"))
		})
		t.Run("A to C", func(t *testing.T) {
			t.Parallel()
			coreFlow(t, l, a, user(t, a, "alice"), c, user(t, c, "carla"))
		})
	})
}

// coreFlow sends one PEC from u at p to r at q and checks the four messages of the core flow
// (pec-spec.md §2.1): the accettazione and the consegna (completa: r is in To) in u's mailbox,
// the busta in r's, and q's presa in carico in p's service mailbox (its mailReceipt). Exactly
// one of each.
func coreFlow(t *testing.T, l *lab.Lab, p *lab.Provider, u lab.User, q *lab.Provider, r lab.User) {
	token := mailtest.Token("sys")
	orig := raw("Messaggio di prova "+token+".\n", "From: "+u.Address, "To: "+r.Address,
		"Subject: PEC "+token, "Message-ID: <"+token+"@client.example>")
	if err := tlsSubmission(t, p, &u).Send(u.Address, []string{r.Address}, orig); err != nil {
		t.Fatal(err)
	}
	service := user(t, p, p.ReceiptAddress)
	want := []struct {
		mb   mailtest.Mailbox
		kind pec.Kind
	}{
		{mailbox(p, u), pec.KindAccettazione},
		{mailbox(q, r), pec.KindBusta},
		{mailbox(p, service), pec.KindPresaInCarico},
		{mailbox(p, u), pec.KindConsegnaCompleta},
	}
	for _, w := range want {
		byKind(t, w.mb, token, 1, w.kind)
	}
	time.Sleep(3 * time.Second) // a duplicate would arrive right behind the first
	for _, w := range want {
		got := byKind(t, w.mb, token, 1, w.kind)
		if len(got) != 1 {
			t.Errorf("%s: %d messages of kind %v with %s, want exactly 1", w.mb.User, len(got), w.kind, token)
		}
		c := verifyEmitted(t, l, got[0].raw, w.kind)
		if w.kind == pec.KindBusta && !bytes.Contains(c.Postacert, []byte(token)) {
			t.Errorf("the busta at %s does not carry the original (postacert.eml)", r.Address)
		}
	}
}

// checkUnits checks what postfix-conf/systemd/ promises once the daemons run as the README
// starts them: both run as user pec, and their sockets in the RuntimeDirectory (0751, pec)
// are 0660 with group postfix, so that only Postfix's processes reach them.
// checkSiteValues: the installed pec.yaml names the site's outside services as step 0 set them.
// The pecyaml step's own rewrites (local listeners to LOCAL_ADDR) once rewrote a site value
// too when the index, clamd or the TSA listened on 127.0.0.1, as the default lab's do.
func checkSiteValues(t *testing.T, l *lab.Lab, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{l.LDAP.URL + "/" + l.LDAP.BaseDN, l.Clamd.Addr, l.TSA.URL} {
		if !bytes.Contains(b, []byte(`"`+v+`"`)) {
			t.Errorf("%s: the site's %q is not in it as step 0 set it", path, v)
		}
	}
}

func checkUnits(t *testing.T, dir string) {
	t.Helper()
	pec, err := osuser.Lookup("pec")
	if err != nil {
		t.Fatal(err)
	}
	postfix, err := osuser.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"pec-milter", "pec-lmtpd"} {
		pid, err := os.ReadFile(filepath.Join(dir, "state", d+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(pid)), "status"))
		if err != nil {
			t.Fatalf("%s is not running: %v", d, err)
		}
		if !bytes.Contains(st, []byte("\nUid:\t"+pec.Uid+"\t")) {
			t.Errorf("%s does not run as pec (uid %s):\n%s", d, pec.Uid, st)
		}
	}
	mode := func(p string) string {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := fi.Sys().(*syscall.Stat_t)
		return fmt.Sprintf("%o %d:%d", fi.Mode().Perm(), s.Uid, s.Gid)
	}
	run := filepath.Join(dir, "run", "pec")
	if got, want := mode(run), "751 "+pec.Uid+":"+pec.Gid; got != want {
		t.Errorf("%s: %s, want %s", run, got, want)
	}
	for _, sock := range []string{"milter.sock", "confirm.sock", "lmtp.sock"} {
		if got, want := mode(filepath.Join(run, sock)), "660 "+pec.Uid+":"+postfix.Gid; got != want {
			t.Errorf("%s: %s, want %s", sock, got, want)
		}
	}
}

// cDomain is provider C's PEC domain (sysadmin-install.sh).
const cDomain = "pec-c.test"

// installC runs sysadmin-install.sh for provider C on the lab's .40 address, routes A's mail
// for pec-c.test to it, and waits until A's pec-milter and pec-lmtpd have loaded C's record
// from the index. Cleanup takes C down and waits until A has dropped the record again.
func installC(t *testing.T, l *lab.Lab, a *lab.Provider) *lab.Provider {
	t.Helper()
	start := time.Now()
	dir := filepath.Join(l.Base, "sysadmin-c")
	ip := a.IP[:strings.LastIndex(a.IP, ".")] + ".40"
	sysadminDown(t, dir, false) // what an interrupted run left
	bin := sysadminBin(t)
	t.Logf("%.1fs: programs built", time.Since(start).Seconds())
	logs := []string{a.Logs["pec-milter"], a.Logs["pec-lmtpd"]}
	mark := logSizes(t, logs)
	trusted := false
	t.Cleanup(func() {
		start := time.Now()
		mark := logSizes(t, logs)
		sysadminDown(t, dir, t.Failed())
		if trusted {
			waitIndexChanged(t, logs, mark, "removed")
			t.Logf("%.1fs: C is down, its record out of A's index", time.Since(start).Seconds())
		}
	})
	// A's route to C first: Postfix's reload is asynchronous, and nothing goes there before
	// A trusts C.
	if err := routesOf(a).add(a, cDomain, "smtp:["+ip+"]:25"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := routesOf(a).remove(a, cDomain); err != nil {
			t.Error(err)
		}
	})
	out, err := exec.Command(sysadminScript(), "up", dir, ip, bin).CombinedOutput()
	t.Logf("sysadmin-install.sh up:\n%s", out)
	if err != nil {
		t.Fatalf("sysadmin-install.sh up: %v", err)
	}
	var c lab.Provider
	if b, err := os.ReadFile(filepath.Join(dir, "provider.json")); err != nil || json.Unmarshal(b, &c) != nil {
		t.Fatalf("provider.json of C: %v", err)
	}
	if c.Domain != cDomain || c.IP != ip {
		t.Fatalf("provider.json: C is %s on %s, want %s on %s", c.Domain, c.IP, cDomain, ip)
	}
	waitIndexChanged(t, logs, mark, "added")
	trusted = true
	t.Logf("%.1fs: C is installed, A's pec-milter and pec-lmtpd trust it", time.Since(start).Seconds())
	return &c
}

func sysadminScript() string { return filepath.Join(lab.ScriptsDir(), "sysadmin-install.sh") }

// sysadminDown stops C and removes its directory, unless keep (a failed test: its
// configuration and logs are evidence; the next run removes them).
func sysadminDown(t *testing.T, dir string, keep bool) {
	t.Helper()
	out, err := exec.Command(sysadminScript(), "down", dir).CombinedOutput()
	if err != nil {
		t.Errorf("sysadmin-install.sh down: %v\n%s", err, out)
	} else if len(out) > 0 {
		t.Logf("sysadmin-install.sh down:\n%s", out)
	}
	if keep {
		t.Logf("C's configuration and logs are kept in %s", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Error(err)
	}
}

// sysadminBin is the README's "bin/": a directory with pec-milter, pec-lmtpd and pecctl.
func sysadminBin(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	const cmd = "github.com/gestore-pec/gestore/cmd/"
	for _, p := range goBinaries(t, cmd+"pec-milter", cmd+"pec-lmtpd", cmd+"pecctl") {
		if err := os.Symlink(p, filepath.Join(bin, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

// logSizes is where each log ends now.
func logSizes(t *testing.T, files []string) []int64 {
	t.Helper()
	var out []int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Size())
	}
	return out
}

// waitIndexChanged waits until every log has, past its mark, the "providers index changed"
// line of pec/igpec (Index.Refresh) with a record added (or removed): the lab's index.refresh
// is 5 s.
func waitIndexChanged(t *testing.T, files []string, mark []int64, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, f := range files {
		for {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if indexChanged(b[min(mark[i], int64(len(b))):], what) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: no \"providers index changed\" with a record %s within 30 s", f, what)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func indexChanged(log []byte, what string) bool {
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e map[string]any
		if json.Unmarshal(line, &e) != nil || e["msg"] != "providers index changed" {
			continue
		}
		if n, _ := e[what].(float64); n > 0 {
			return true
		}
	}
	return false
}
