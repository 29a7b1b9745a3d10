//go:build integration

package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/bench/pflisten"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"gopkg.in/yaml.v3"
)

// privateAP is a pec-milter of provider A that only this test uses: its own SQLite store,
// its own copy of the SoftHSM2 tokens, its own clamd (same signatures), its own socket, and
// its own temporary copy of A's submission listener pointing to it (pflisten). Breaking one
// of its dependencies therefore disturbs no other test running on the shared lab, while the
// message still goes through the real Postfix, SoftHSM2 and clamd.
type privateAP struct {
	dir, sock, tokens, db string
	clamdConf, clamdAddr  string
	clamd, milter         *exec.Cmd
	submission            mailtest.Submission
	cfg, bin              string
	env                   []string
	hooks                 string // PEC_TEST_HOOK_DIR of a testhooks build ("" without)
	cleanup               string // name of its own cleanup service (opts.ownCleanup)
	listenAddr            string // host:port of its submission listener
	logf                  *os.File
}

// apOptions vary a private access point.
type apOptions struct {
	config     func(y map[string]any)        // edits its pec.yaml
	hooks      bool                          // build pec-milter with -tags testhooks (milter/testhook_on.go)
	ownCleanup bool                          // its own cleanup service, so a test may kill it
	clamd      func(lines []string) []string // edits its clamd.conf
	noStart    bool                          // build and configure, but leave pec-milter to the test
	keepSeal   bool                          // keep A's seal: section (its own seal directory)
	before     func(p *privateAP)            // runs after the files are ready, before pec-milter starts
}

func startPrivateAP(t *testing.T, l *lab.Lab, a *lab.Provider) *privateAP {
	t.Helper()
	return startPrivateAPWith(t, l, a, apOptions{})
}

// (Long on purpose: the private copy of every dependency, set up in the order they depend on
// each other.)
func startPrivateAPWith(t *testing.T, l *lab.Lab, a *lab.Provider, opt apOptions) *privateAP {
	t.Helper()
	p := &privateAP{dir: t.TempDir()}
	p.sock = filepath.Join(filepath.Dir(a.MilterSocket), "aptest-"+mailtest.Token("s")[2:12]+".sock")
	p.db = filepath.Join(p.dir, "pec.db")

	// SoftHSM2: a private copy of the token directory.
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
	p.tokens = filepath.Join(p.dir, "tokens")
	if out, err := exec.Command("cp", "-a", tokendir, p.tokens).CombinedOutput(); err != nil {
		t.Fatalf("copy tokens: %v %s", err, out)
	}
	hsmConf := filepath.Join(p.dir, "softhsm2.conf")
	os.WriteFile(hsmConf, []byte("directories.tokendir = "+p.tokens+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)

	// clamd: the lab's configuration on another port, private log and temporary directory.
	lc, err := os.ReadFile(filepath.Join(filepath.Dir(l.Clamd.Log), "clamd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	free, err := pflisten.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p.clamdAddr = free
	_, port, _ := strings.Cut(free, ":")
	var cc []string
	for _, line := range strings.Split(string(lc), "\n") {
		switch strings.Fields(line + " x")[0] {
		case "TCPSocket", "TCPAddr", "LogFile", "TemporaryDirectory", "LocalSocket", "PidFile":
			continue
		}
		cc = append(cc, line)
	}
	// Its own address too: the lab's clamd listens on the lab's service address
	// (PEC_LAB_NET), the private one on 127.0.0.1 like p.clamdAddr.
	os.MkdirAll(filepath.Join(p.dir, "clamtmp"), 0o700)
	cc = append(cc, "TCPSocket "+port, "TCPAddr 127.0.0.1", "LogFile "+filepath.Join(p.dir, "clamd.log"), "TemporaryDirectory "+filepath.Join(p.dir, "clamtmp"))
	if opt.clamd != nil {
		cc = opt.clamd(cc)
	}
	p.clamdConf = filepath.Join(p.dir, "clamd.conf")
	os.WriteFile(p.clamdConf, []byte(strings.Join(cc, "\n")+"\n"), 0o600)
	p.startClamd(t)
	t.Cleanup(p.stopClamd) // whichever clamd runs at the end (a subtest may restart it)

	// pec.yaml: A's, with the private store, socket and clamd.
	raw, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatal(err)
	}
	y["store"] = map[string]any{"driver": "sqlite", "dsn": p.db}
	y["milter"] = map[string]any{"listen": "unix:" + p.sock, "timeout": "45s"}
	// Its own confirmation listener and domain, routed by A's transport_maps while the test
	// runs: the lab's pec-milter does not know this store's tokens.
	confirmSock := strings.TrimSuffix(p.sock, ".sock") + "-c.sock"
	confirmDomain := strings.TrimSuffix(filepath.Base(p.sock), ".sock") + ".confirm.invalid"
	y["confirm"] = map[string]any{"listen": "unix:" + confirmSock, "domain": confirmDomain, "expiry": "30s"}
	y["clamd"] = map[string]any{"addr": p.clamdAddr, "timeout": "10s"}
	if idx, ok := y["index"].(map[string]any); ok {
		idx["cache"] = filepath.Join(p.dir, "providers-index.ldif") // not the lab's copy
	}
	delete(y, "metrics")
	if sl, ok := y["seal"].(map[string]any); ok && opt.keepSeal {
		sl["dir"] = filepath.Join(p.dir, "seal")
	} else {
		delete(y, "seal")
	}
	if opt.config != nil {
		opt.config(y)
	}
	out, _ := yaml.Marshal(y)
	p.cfg = filepath.Join(p.dir, "pec.yaml")
	os.WriteFile(p.cfg, out, 0o600)

	var tags []string
	if opt.hooks {
		tags = []string{"testhooks"}
		p.hooks = filepath.Join(p.dir, "hooks")
		os.MkdirAll(p.hooks, 0o700)
	}
	p.bin = goBinary(t, "github.com/gestore-pec/gestore/cmd/pec-milter", tags...)
	p.logf, _ = os.Create(filepath.Join(p.dir, "pec-milter.log"))
	p.env = append(os.Environ(), "PEC_PIN_"+strings.ToUpper(a.ID)+"="+a.Token.PIN, "SOFTHSM2_CONF="+hsmConf,
		"PEC_TEST_HOOK_DIR="+p.hooks)
	if opt.before != nil {
		opt.before(p)
	}
	if !opt.noStart {
		p.startMilter(t)
	}
	t.Cleanup(func() {
		if p.milter != nil && p.milter.ProcessState == nil { // not already stopped by a test
			p.milter.Process.Signal(syscall.SIGTERM)
			p.milter.Wait()
		}
		p.logf.Close()
		os.Remove(p.sock)
		if t.Failed() {
			b, _ := os.ReadFile(p.logf.Name())
			t.Logf("private pec-milter log:\n%s", b)
		}
	})

	if err := routesOf(a).add(a, confirmDomain, "lmtp:unix:"+confirmSock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := routesOf(a).remove(a, confirmDomain); err != nil {
			t.Errorf("restoring transport_maps: %v", err)
		}
	})
	addr, err := pflisten.FreePort(a.IP)
	if err != nil {
		t.Fatal(err)
	}
	over := map[string]string{"smtpd_milters": "unix:" + p.sock, "syslog_name": "postfix/aptest"}
	if opt.ownCleanup {
		p.cleanup = strings.TrimSuffix(filepath.Base(p.sock), ".sock") + "-cleanup"
		cl, err := pflisten.AddUnix(a.Postfix.ConfigDir, p.cleanup, "cleanup", "pec-cleanup/unix", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := cl.Remove(); err != nil {
				t.Errorf("removing the temporary cleanup: %v", err)
			}
		})
		over["cleanup_service_name"] = p.cleanup
	}
	ln, err := pflisten.Add(a.Postfix.ConfigDir, addr, "submission/inet", over)
	if err != nil {
		t.Fatal(err)
	}
	p.listenAddr = addr
	t.Cleanup(func() {
		if err := ln.Remove(); err != nil {
			t.Errorf("removing the temporary listener: %v", err)
		}
	})
	alice := user(t, a, "alice")
	p.submission = tlsSubmission(t, a, &alice)
	p.submission.Addr = addr
	return p
}

// startMilter starts (or restarts) the private pec-milter and waits for its socket.
func (p *privateAP) startMilter(t *testing.T) {
	t.Helper()
	p.milter = exec.Command(p.bin, "-config", p.cfg)
	p.milter.Env = p.env
	p.milter.Stdout, p.milter.Stderr = p.logf, p.logf
	if err := p.milter.Start(); err != nil {
		t.Fatal(err)
	}
	waitDial(t, "unix", p.sock)
}

// killMilter stops the private pec-milter with SIGKILL.
func (p *privateAP) killMilter() {
	p.milter.Process.Kill()
	p.milter.Wait()
}

// hook arms a test hook of the testhooks build: command runs once at point.
func (p *privateAP) hook(t *testing.T, point, command string) {
	t.Helper()
	if p.hooks == "" {
		t.Fatal("private access point built without test hooks")
	}
	if err := os.WriteFile(filepath.Join(p.hooks, point), []byte(command), 0o600); err != nil {
		t.Fatal(err)
	}
}

// routesOf is the one table of temporary transport_maps routes of p's Postfix instance: the
// tests running at the same time (in parallel) that route through that instance (private
// access, reception and delivery points, unreachable peers, provider C) all add and remove
// their entries there, rewritten under its lock, so that one test's change never drops
// another's route. Two tables for B's instance (private delivery points, private reception
// points) once did: each rewrote transport_maps from its own entries, and TestDeliveryFaults
// lost its route while a private reception point started.
func routesOf(p *lab.Provider) *routes {
	routeTables.mu.Lock()
	defer routeTables.mu.Unlock()
	r := routeTables.byDir[p.Postfix.ConfigDir]
	if r == nil {
		r = &routes{byDomain: map[string]string{}}
		routeTables.byDir[p.Postfix.ConfigDir] = r
	}
	return r
}

var routeTables = struct {
	mu    sync.Mutex
	byDir map[string]*routes
}{byDir: map[string]*routes{}}

type routes struct {
	mu       sync.Mutex
	byDomain map[string]string
	original string // transport_maps before the first private route
}

func (r *routes) add(a *lab.Provider, domain, next string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.byDomain) == 0 {
		out, err := exec.Command("postconf", "-c", a.Postfix.ConfigDir, "-h", "transport_maps").Output()
		if err != nil {
			return err
		}
		r.original = strings.TrimSpace(string(out))
	}
	r.byDomain[domain] = next
	return r.apply(a)
}

func (r *routes) remove(a *lab.Provider, domain string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byDomain, domain)
	return r.apply(a)
}

func (r *routes) apply(a *lab.Provider) error {
	value := r.original
	if len(r.byDomain) > 0 {
		var entries []string
		for d, n := range r.byDomain {
			entries = append(entries, d+"="+n)
		}
		sort.Strings(entries)
		value = "inline:{ " + strings.Join(entries, ", ") + " } " + r.original
	}
	_, err := pflisten.SetMain(a.Postfix.ConfigDir, "transport_maps", value)
	return err
}

// lastFailure is the last "pec temporary failure" line of the private pec-milter's log.
func (p *privateAP) lastFailure(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dir, "pec-milter.log"))
	if err != nil {
		t.Fatal(err)
	}
	last := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "pec temporary failure") {
			last = line
		}
	}
	return last
}

// failureCause waits (up to 40 s) for the last temporary failure in the private pec-milter's
// log to name cause. When the milter.timeout deadline answered first (a store locked behind a
// job's own busy wait on a loaded machine), the cause is logged when the engine's late answer
// comes, within SQLite's busy timeout.
func (p *privateAP) failureCause(t *testing.T, cause string) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		last := p.lastFailure(t)
		if strings.Contains(last, cause) || time.Now().After(deadline) || !strings.Contains(last, "milter.timeout") && !strings.Contains(last, "after the deadline") {
			return last, strings.Contains(last, cause)
		}
		time.Sleep(time.Second)
	}
}

func (p *privateAP) startClamd(t *testing.T) {
	t.Helper()
	p.clamd = exec.Command("clamd", "-c", p.clamdConf)
	if err := p.clamd.Start(); err != nil {
		t.Fatal(err)
	}
	waitDial(t, "tcp", p.clamdAddr)
}

func (p *privateAP) stopClamd() {
	if p.clamd.ProcessState == nil {
		p.clamd.Process.Kill()
		p.clamd.Wait()
	}
}

func waitDial(t *testing.T, network, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s never answered: %v", network, addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
