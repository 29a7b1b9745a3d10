//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

// privateRX is a reception point of provider B that only the calling test uses: a pec-milter
// with B's configuration but its own SQLite store, its own copy of the SoftHSM2 tokens, its own
// clamd, confirmation listener and domain, behind a temporary copy of B's MX listener
// (pflisten) in B's real Postfix. A test may break its dependencies or give it another policy,
// trust or index (restart) without disturbing the shared lab.
type privateRX struct {
	l             *lab.Lab
	b             *lab.Provider
	dir, sock, db string
	tokens, cfg   string
	hsmConf, bin  string
	confirmSock   string
	confirmDomain string
	clamd         *lab.ClamdInstance
	milter        *exec.Cmd
	logf          *os.File
	Addr          string // the temporary MX listener
}

func startPrivateRX(t *testing.T, l *lab.Lab, b *lab.Provider) *privateRX {
	t.Helper()
	return startPrivateRXWith(t, l, b, nil)
}

// startPrivateRXWith is startPrivateRX with override applied to its first configuration (see
// start).
func startPrivateRXWith(t *testing.T, l *lab.Lab, b *lab.Provider, override func(y map[string]any)) *privateRX {
	t.Helper()
	p := &privateRX{l: l, b: b, dir: t.TempDir()}
	name := "rxtest-" + mailtest.Token("s")[2:12]
	p.sock = filepath.Join(filepath.Dir(b.MilterSocket), name+".sock")
	p.confirmSock = filepath.Join(filepath.Dir(b.MilterSocket), name+"-c.sock")
	p.confirmDomain = name + ".confirm.invalid"
	p.db = filepath.Join(p.dir, "pec.db")
	p.cfg = filepath.Join(p.dir, "pec.yaml")
	p.tokens = copyTokens(t, l, p.dir)
	p.hsmConf = filepath.Join(p.dir, "softhsm2.conf")
	os.WriteFile(p.hsmConf, []byte("directories.tokendir = "+p.tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)
	p.clamd = lab.PrivateClamd(t)
	p.bin = goBinary(t, "github.com/gestore-pec/gestore/cmd/pec-milter")
	p.start(t, override)
	t.Cleanup(func() { p.stop(t) })

	if err := routesOf(b).add(b, p.confirmDomain, "lmtp:unix:"+p.confirmSock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := routesOf(b).remove(b, p.confirmDomain); err != nil {
			t.Errorf("restoring transport_maps: %v", err)
		}
	})
	addr, err := pflisten.FreePort(b.IP)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := pflisten.Add(b.Postfix.ConfigDir, addr, "smtp/inet",
		map[string]string{"smtpd_milters": "unix:" + p.sock, "syslog_name": "postfix/rxtest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ln.Remove(); err != nil {
			t.Errorf("removing the temporary listener: %v", err)
		}
	})
	p.Addr = addr
	return p
}

// copyTokens copies the lab's SoftHSM2 token directory into dir and returns the copy.
func copyTokens(t *testing.T, l *lab.Lab, dir string) string {
	t.Helper()
	conf, err := os.ReadFile(l.SoftHSM.Conf)
	if err != nil {
		t.Fatal(err)
	}
	var tokendir string
	for _, line := range strings.Split(string(conf), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "directories.tokendir" {
			tokendir = strings.TrimSpace(v)
		}
	}
	out := filepath.Join(dir, "tokens")
	if b, err := exec.Command("cp", "-a", tokendir, out).CombinedOutput(); err != nil {
		t.Fatalf("copy tokens: %v %s", err, b)
	}
	return out
}

// start writes the configuration (B's pec.yaml with the private store, sockets, clamd, and
// then override's changes) and starts pec-milter, waiting for its socket.
func (p *privateRX) start(t *testing.T, override func(y map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(p.b.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatal(err)
	}
	y["store"] = map[string]any{"driver": "sqlite", "dsn": p.db}
	y["milter"] = map[string]any{"listen": "unix:" + p.sock, "timeout": "20s"}
	y["confirm"] = map[string]any{"listen": "unix:" + p.confirmSock, "domain": p.confirmDomain, "expiry": "60s"}
	y["clamd"] = map[string]any{"addr": p.clamd.Addr, "timeout": "10s"}
	delete(y, "metrics")
	delete(y, "seal") // the lab's pec-milter of B seals B's log; this store is a test's
	if override != nil {
		override(y)
	}
	out, _ := yaml.Marshal(y)
	if err := os.WriteFile(p.cfg, out, 0o600); err != nil {
		t.Fatal(err)
	}
	p.logf, _ = os.OpenFile(filepath.Join(p.dir, "pec-milter.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	p.milter = exec.Command(p.bin, "-config", p.cfg)
	p.milter.Env = append(os.Environ(), "PEC_PIN_"+strings.ToUpper(p.b.ID)+"="+p.b.Token.PIN, "SOFTHSM2_CONF="+p.hsmConf)
	p.milter.Stdout, p.milter.Stderr = p.logf, p.logf
	if err := p.milter.Start(); err != nil {
		t.Fatal(err)
	}
	waitDial(t, "unix", p.sock)
	waitDial(t, "unix", p.confirmSock)
}

// stop ends pec-milter (SIGTERM: it drains) and shows its log when the test failed.
func (p *privateRX) stop(t *testing.T) {
	if p.milter == nil || p.milter.ProcessState != nil {
		return
	}
	p.milter.Process.Signal(syscall.SIGTERM)
	p.milter.Wait()
	p.logf.Close()
	os.Remove(p.sock)
	os.Remove(p.confirmSock)
	if t.Failed() {
		b, _ := os.ReadFile(p.logf.Name())
		t.Logf("private pec-milter log:\n%s", b)
	}
}

// restart restarts pec-milter with another configuration (override applied to B's pec.yaml
// after the private settings); the store, tokens and clamd stay.
func (p *privateRX) restart(t *testing.T, override func(y map[string]any)) {
	t.Helper()
	p.stop(t)
	p.start(t, override)
}

// log is the private pec-milter's log.
func (p *privateRX) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, "pec-milter.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
