package lab

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Private instances for tests that stop or break a component: each runs in tb.TempDir() on a
// free port, through the same scripts as the lab (integration/scripts/*-instance.sh,
// softhsm-token.sh), and is stopped at cleanup. They need the lab's packages, not the lab.

// ScriptsDir is integration/scripts of this source tree.
func ScriptsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "scripts")
}

func runScript(tb testing.TB, env []string, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(filepath.Join(ScriptsDir(), name), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SlapdInstance is a private slapd holding a providers index.
type SlapdInstance struct {
	Dir  string
	Port int
	URL  string // ldap://127.0.0.1:PORT
	tb   testing.TB
}

// PrivateSlapd starts a slapd with the PEC index schema loaded with ldif (which must contain
// o=postacert). Anonymous read; admin cn=admin,o=postacert password "secret".
func PrivateSlapd(tb testing.TB, ldif []byte) *SlapdInstance {
	tb.Helper()
	s := &SlapdInstance{Dir: tb.TempDir(), Port: FreePort(tb), tb: tb}
	s.URL = "ldap://127.0.0.1:" + strconv.Itoa(s.Port)
	s.Load(ldif)
	tb.Cleanup(s.Stop)
	return s
}

// Load replaces the data with ldif and (re)starts slapd.
func (s *SlapdInstance) Load(ldif []byte) {
	s.tb.Helper()
	p := filepath.Join(s.Dir, "index.ldif")
	if err := os.WriteFile(p, ldif, 0o644); err != nil {
		s.tb.Fatal(err)
	}
	runScript(s.tb, nil, "slapd-instance.sh", "start", filepath.Join(s.Dir, "slapd"), strconv.Itoa(s.Port), p)
}

// Stop stops slapd (an outage); Load starts it again.
func (s *SlapdInstance) Stop() {
	s.tb.Helper()
	runScript(s.tb, nil, "slapd-instance.sh", "stop", filepath.Join(s.Dir, "slapd"), strconv.Itoa(s.Port))
}

// PrivateToken initialises a SoftHSM2 token in its own SOFTHSM2_CONF directory with an
// RSA-2048 key pair generated on the token, and returns the path for SOFTHSM2_CONF. Set it
// with tb.Setenv before the PKCS#11 module is initialised in the process.
func PrivateToken(tb testing.TB, label, pin, keyLabel, keyIDHex string) string {
	tb.Helper()
	dir := tb.TempDir()
	runScript(tb, []string{"TOKEN_PIN=" + pin}, "softhsm-token.sh", dir, label, keyLabel, keyIDHex)
	return filepath.Join(dir, "softhsm2.conf")
}

// ClamdInstance is a private clamd with the lab's test signatures (EICAR).
type ClamdInstance struct {
	Dir  string
	Addr string // 127.0.0.1:PORT, INSTREAM
	port int
	tb   testing.TB
}

// PrivateClamd starts a clamd; Stop simulates an outage, Start brings it back.
func PrivateClamd(tb testing.TB) *ClamdInstance {
	tb.Helper()
	c := &ClamdInstance{Dir: tb.TempDir(), port: FreePort(tb), tb: tb}
	c.Addr = "127.0.0.1:" + strconv.Itoa(c.port)
	c.Start()
	tb.Cleanup(c.Stop)
	return c
}

// Start starts clamd (no-op when it runs) and waits until it answers.
func (c *ClamdInstance) Start() {
	c.tb.Helper()
	runScript(c.tb, nil, "clamd-instance.sh", "start", c.Dir, strconv.Itoa(c.port))
}

// Stop stops clamd.
func (c *ClamdInstance) Stop() {
	c.tb.Helper()
	runScript(c.tb, nil, "clamd-instance.sh", "stop", c.Dir, strconv.Itoa(c.port))
}
