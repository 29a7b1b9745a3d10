//go:build integration

package integration

// A private delivery point of provider B for the fault tests: its own Dovecot (rendered from
// the same templates as the lab's, on other ports, with B's users and its own mail
// directory) and its own pec-lmtpd (own SQLite store, own copy of the SoftHSM2 tokens),
// reached through B's real Postfix by a temporary transport_maps entry for the test's own
// recipients (bruno+<tag>@pec-b.test, which Dovecot's LMTP stores in bruno's mailbox).
// Stopping this Dovecot or killing this pec-lmtpd disturbs no other test on the shared lab.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

type privateDP struct {
	tag               string
	dir               string
	dovecotConf       string
	lmtp, imap, adm   string // the private Dovecot: LMTP socket path, IMAP and doveadm host:port
	listen, metrics   string // host:port of the private pec-lmtpd
	cfg, bin, logFile string
	env               []string
	db                string
	cmd               *exec.Cmd
	log               *os.File
}

// lmtpdBinary builds cmd/pec-lmtpd once per test binary.
func lmtpdBinary(t *testing.T) string {
	t.Helper()
	return goBinary(t, "github.com/gestore-pec/gestore/cmd/pec-lmtpd")
}

func freePort(t *testing.T, host string) string {
	t.Helper()
	a, err := pflisten.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func port(hostport string) string { _, p, _ := net.SplitHostPort(hostport); return p }

// startPrivateDP starts the private Dovecot and pec-lmtpd and routes rcpts to them.
func startPrivateDP(t *testing.T, l *lab.Lab, b *lab.Provider, rcpts []string) *privateDP {
	t.Helper()
	tag := mailtest.Token("dx")[3:11]
	p := &privateDP{tag: tag, dir: filepath.Join(l.Base, b.ID, "dx-"+tag)}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			keep := filepath.Join(os.TempDir(), "dx-failed-"+tag)
			exec.Command("cp", "-a", p.dir, keep).Run() //nolint:errcheck
			t.Logf("private delivery point's files kept in %s", keep)
		}
		os.RemoveAll(p.dir)
	})
	p.startDovecotFirst(t, b, tag)
	p.configureLMTPD(t, l, b, nil)
	p.Start(t)
	t.Cleanup(func() {
		p.Kill()
		p.log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(p.logFile)
			t.Logf("private pec-lmtpd log (tail):\n%s", tail(data, 4000))
		}
	})
	for _, r := range rcpts {
		if err := routesOf(b).add(b, r, "lmtp:inet:"+p.listen); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, r := range rcpts {
			if err := routesOf(b).remove(b, r); err != nil {
				t.Errorf("restoring transport_maps: %v", err)
			}
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// startDovecotFirst renders integration/dovecot/dovecot.conf.in and
// postfix-conf/dovecot-pec.conf as lab-up does, with the private paths and ports, and starts
// it.
func (p *privateDP) startDovecotFirst(t *testing.T, b *lab.Provider, tag string) {
	t.Helper()
	run, state, mail := filepath.Join(p.dir, "run"), filepath.Join(p.dir, "state"), filepath.Join(p.dir, "mail")
	for _, d := range []string{run, state, mail} {
		os.MkdirAll(d, 0o755)
	}
	vm, err := osuser.Lookup("vmail")
	if err != nil {
		t.Fatal(err)
	}
	exec.Command("chown", "vmail:vmail", mail).Run()
	p.lmtp, p.imap, p.adm = filepath.Join(run, "lmtp"), freePort(t, b.IP), freePort(t, b.IP)
	key := filepath.Join(p.dir, "doveadm.key")
	k := make([]byte, 16)
	rand.Read(k)
	os.WriteFile(key, []byte(hex.EncodeToString(k)), 0o640)
	exec.Command("chown", "root:dovecot", key).Run()
	snippet := filepath.Join(p.dir, "pec.conf")
	render(t, "../postfix-conf/dovecot-pec.conf", snippet, map[string]string{
		"LMTP_USER": "root", "AUTH_SOCKET": filepath.Join(run, "auth-postfix"),
		"POSTMASTER": "postmaster@" + b.Domain, "DOVEADM_ADDRESS": b.IP, "DOVEADM_PORT": port(p.adm), "DOVEADM_KEY_FILE": key})
	p.dovecotConf = filepath.Join(p.dir, "dovecot.conf")
	render(t, "dovecot/dovecot.conf.in", p.dovecotConf, map[string]string{
		"ID": b.ID + "-dx-" + tag, "IP": b.IP, "RUN_DIR": run, "STATE_DIR": state, "LOG": filepath.Join(p.dir, "dovecot.log"),
		"VMAIL_UID": vm.Uid, "USERS_FILE": filepath.Join(filepath.Dir(b.Dovecot.ConfigFile), "users"), "MAIL_DIR": mail,
		"PEC_SNIPPET": snippet, "port = 143": "port = " + port(p.imap)})
	p.StartDovecot(t)
	t.Cleanup(func() { p.StopDovecot(t) })
}

// render substitutes @KEY@ placeholders (and, for keys with spaces, literal text).
func render(t *testing.T, tmpl, out string, vars map[string]string) {
	t.Helper()
	b, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range vars {
		if strings.Contains(k, " ") {
			s = strings.Replace(s, k, v, 1)
		} else {
			s = strings.ReplaceAll(s, "@"+k+"@", v)
		}
	}
	if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// StartDovecot starts the private Dovecot and waits for its LMTP and doveadm listeners.
func (p *privateDP) StartDovecot(t *testing.T) {
	t.Helper()
	// Dovecot daemonizes; its child would keep a pipe open (lab-recipe §9): no stdio.
	if err := exec.Command("dovecot", "-c", p.dovecotConf).Run(); err != nil {
		data, _ := os.ReadFile(filepath.Join(p.dir, "dovecot.log"))
		t.Fatalf("dovecot: %v\n%s", err, tail(data, 2000))
	}
	waitDial(t, "unix", p.lmtp)
	waitDial(t, "tcp", p.adm)
}

// StopDovecot stops it and waits until its LMTP listener is gone.
func (p *privateDP) StopDovecot(t *testing.T) {
	t.Helper()
	exec.Command("dovecot", "-c", p.dovecotConf, "stop").Run() //nolint:errcheck
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("unix", p.lmtp, 200*time.Millisecond); err != nil {
			return
		} else {
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("private Dovecot still answers on %s", p.lmtp)
}

// SignalDovecot sends sig to every process of the private Dovecot (SIGSTOP freezes it:
// connections wait, nothing is answered; SIGCONT thaws it).
func (p *privateDP) SignalDovecot(t *testing.T, sig syscall.Signal) {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", "dovecot.*dx-"+p.tag).Output()
	n := 0
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && (p.cmd == nil || pid != p.cmd.Process.Pid) {
			syscall.Kill(pid, sig) //nolint:errcheck
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no process of the private Dovecot to send %v", sig)
	}
}

// configureLMTPD writes the private pec.yaml (B's, with the private store, listener, Dovecot,
// metrics, node name, and no seal; then edit's changes, when given) and copies the tokens.
func (p *privateDP) configureLMTPD(t *testing.T, l *lab.Lab, b *lab.Provider, edit func(y map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(b.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatal(err)
	}
	p.listen, p.metrics = freePort(t, b.IP), freePort(t, b.IP)
	p.db = filepath.Join(p.dir, "pec.db")
	y["node"] = "dxtest"
	y["store"] = map[string]any{"driver": "sqlite", "dsn": p.db}
	y["lmtp"] = map[string]any{"listen": p.listen, "dovecot": "unix:" + p.lmtp, "metrics_listen": p.metrics,
		"allow_inet_peers": []string{"127.0.0.0/8"}, "shutdown_grace": "5s",
		"doveadm": map[string]any{"url": "http://" + p.adm + "/doveadm/v1", "api_key_file": filepath.Join(p.dir, "doveadm.key")}}
	delete(y, "metrics")
	delete(y, "seal")
	if edit != nil {
		edit(y)
	}
	out, _ := yaml.Marshal(y)
	p.cfg = filepath.Join(p.dir, "pec.yaml")
	os.WriteFile(p.cfg, out, 0o600)
	p.bin = lmtpdBinary(t)
	p.env = append(os.Environ(), "PEC_PIN_"+strings.ToUpper(b.ID)+"="+b.Token.PIN, "SOFTHSM2_CONF="+softHSMConf(t, l, p.dir))
	p.logFile = filepath.Join(p.dir, "pec-lmtpd.log")
	if p.log, err = os.Create(p.logFile); err != nil {
		t.Fatal(err)
	}
}

// softHSMConf copies the lab's SoftHSM tokens into dir and writes a softhsm2.conf for them.
func softHSMConf(t *testing.T, l *lab.Lab, dir string) string {
	t.Helper()
	tokens := copyTokens(t, l, dir)
	hsmConf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(hsmConf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)
	return hsmConf
}

// Start starts the private pec-lmtpd and waits until its /readyz answers.
func (p *privateDP) Start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "-config", p.cfg)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = p.env, p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + p.metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("private pec-lmtpd not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill kills pec-lmtpd with SIGKILL (no drain, no commit of anything under way).
func (p *privateDP) Kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// Logged counts the lines of the private pec-lmtpd's log that hold every one of parts.
func (p *privateDP) Logged(parts ...string) int {
	data, _ := os.ReadFile(p.logFile)
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		ok := line != ""
		for _, s := range parts {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}
