//go:build integration

package integration

// Issue 12 items 2 and 3, against the lab: who may use the PEC sockets and the MX.
// pec-milter's milter and confirmation sockets admit only Postfix's user (by the peer's
// credentials, not by file permissions alone); Postfix's reinjection listener is a unix socket
// only root, postfix and group postdrop can open; the MX relays nothing for local clients.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
)

// milterOptneg is the first packet Postfix sends a milter (SMFIC_OPTNEG: protocol version 6,
// every action, every protocol step): a milter that admits the client answers with its own.
var milterOptneg, _ = hex.DecodeString("0000000d" + "4f" + "00000006" + "000001ff" + "001fffff")

// probeResult is what a client saw: the connection error, or what the server sent first, or
// that it closed the connection without a word (a refusal).
type probeResult struct {
	Connect string `json:"connect"`
	Reply   string `json:"reply"`
	Closed  bool   `json:"closed"`
	PID     int    `json:"pid"`
}

// probeSelf connects from this process (root).
func probeSelf(t *testing.T, sock string, send []byte) probeResult {
	t.Helper()
	r := probeResult{Connect: "ok", PID: os.Getpid()}
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		r.Connect = err.Error()
		return r
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if len(send) > 0 {
		c.Write(send) // a refused connection may be closed already: the read says so
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, 1)
	r.Reply = string(buf[:n])
	var op *net.OpError
	r.Closed = n == 0 && (errors.Is(err, io.EOF) || errors.As(err, &op) && !op.Timeout())
	if n == 0 && !r.Closed {
		t.Fatalf("%s: neither a reply nor a close: %v", sock, err)
	}
	return r
}

// probeAs connects as another user, through integration/peerprobe run with that uid and gid
// (no supplementary groups).
func probeAs(t *testing.T, uid, gid uint32, sock string, send []byte) probeResult {
	t.Helper()
	cmd := exec.Command(goBinary(t, "github.com/gestore-pec/gestore/integration/peerprobe"), "-socket", sock, "-send", hex.EncodeToString(send))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peerprobe as %d:%d: %v", uid, gid, err)
	}
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("peerprobe: %v: %s", err, out)
	}
	return r
}

// ids returns a user's uid and primary gid.
func ids(t *testing.T, name string) (uint32, uint32) {
	t.Helper()
	u, err := osuser.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(uid), uint32(gid)
}

// confirmSocket is the confirmation listener of p's pec-milter (confirm.listen of pec.yaml).
func confirmSocket(t *testing.T, p *lab.Provider) string {
	t.Helper()
	b, err := os.ReadFile(p.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	var y struct {
		Confirm struct{ Listen string } `yaml:"confirm"`
	}
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	s, ok := strings.CutPrefix(y.Confirm.Listen, "unix:")
	if !ok {
		t.Fatalf("confirm.listen %q is not a unix socket", y.Confirm.Listen)
	}
	return s
}

// waitLog waits until p's pec-milter log has a refusal naming the peer's pid.
func waitRefusalLogged(t *testing.T, p *lab.Provider, listener string, pid int) {
	t.Helper()
	want := []string{"connection refused", `"listener":"` + listener + `"`, `"peer_pid":` + strconv.Itoa(pid) + "}", `"peer_pid":` + strconv.Itoa(pid) + ","}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(p.Logs["pec-milter"])
		for _, line := range bytes.Split(b, []byte("\n")) {
			s := string(line)
			if strings.Contains(s, want[0]) && strings.Contains(s, want[1]) && (strings.Contains(s, want[2]) || strings.Contains(s, want[3])) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no refusal of pid %d on the %s listener in %s", pid, listener, p.Logs["pec-milter"])
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Issue 12 item 2: the milter socket is not a signing oracle, and the confirmation socket
// (whose deliveries release accettazioni) is not open either. A process that is not Postfix,
// this test (root) or user nobody in group postfix (which the socket's 0660 mode lets
// connect), is cut off before a byte is read, and pec-milter logs it with the peer's pid; a
// process of user postfix gets the milter's option negotiation and the LMTP greeting.
func TestMilterSocketAdmitsOnlyPostfix(t *testing.T) {
	t.Parallel()
	_, a, _, _ := pecLab(t)
	pfUID, pfGID := ids(t, "postfix")
	nobody, _ := ids(t, "nobody")
	for _, s := range []struct {
		listener, sock string
		send           []byte
		reply          string // first bytes of the answer to an admitted client
	}{
		{"milter", a.MilterSocket, milterOptneg, "\x00\x00\x00"},
		{"confirm", confirmSocket(t, a), nil, "220 "},
	} {
		t.Run(s.listener, func(t *testing.T) {
			fi, err := os.Stat(s.sock)
			if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != pfGID {
				t.Errorf("%s: %v %v; want mode 0660, group postfix", s.sock, fi.Mode(), err)
			}
			r := probeSelf(t, s.sock, s.send)
			if r.Connect != "ok" || !r.Closed {
				t.Errorf("root: %+v; want connected and closed without a reply", r)
			}
			waitRefusalLogged(t, a, s.listener, r.PID)
			r = probeAs(t, nobody, pfGID, s.sock, s.send)
			if r.Connect != "ok" || !r.Closed {
				t.Errorf("nobody in group postfix: %+v; want connected and closed without a reply", r)
			}
			waitRefusalLogged(t, a, s.listener, r.PID)
			r = probeAs(t, pfUID, pfGID, s.sock, s.send)
			if r.Connect != "ok" || r.Closed || !strings.HasPrefix(r.Reply, s.reply) ||
				(s.listener == "milter" && (len(r.Reply) < 5 || r.Reply[4] != 'O')) {
				t.Errorf("postfix: %+v; want the %s's answer", r, s.listener)
			}
		})
	}
}

// Issue 12 item 3: the reinjection listener queues what it gets without any check, so only
// our daemons may reach it. It is Postfix's pec-reinject service on a unix socket in public/
// (postfix:postdrop 0710): user nobody cannot open it, not even in group postfix; root (our
// daemons in the lab, and TestReinjectionListener) can. No TCP listener of the instance
// takes mail past the PEC points: every inet smtpd service calls the milter.
func TestReinjectionOnlyForOurDaemons(t *testing.T) {
	t.Parallel()
	_, a, _, _ := pecLab(t)
	sock, ok := strings.CutPrefix(a.Postfix.Reinject, "unix:")
	if !ok {
		t.Fatalf("lab.json reinject = %q, want the unix socket of pec-reinject", a.Postfix.Reinject)
	}
	_, pfGID := ids(t, "postfix")
	nobody, nogroup := ids(t, "nobody")
	for _, gid := range []uint32{nogroup, pfGID} {
		if r := probeAs(t, nobody, gid, sock, nil); !strings.Contains(r.Connect, "permission denied") {
			t.Errorf("nobody (gid %d) on %s: %+v; want permission denied", gid, sock, r)
		}
	}
	if r := probeSelf(t, sock, nil); r.Connect != "ok" || !strings.HasPrefix(r.Reply, "220 ") {
		t.Errorf("root on %s: %+v; want the SMTP greeting", sock, r)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(a.IP, "10025"), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on the old TCP reinjection port %s:10025", a.IP)
	}
	for _, svc := range inetSMTPServices(t, a) {
		if svc.milters == "" {
			t.Errorf("inet service %s runs smtpd without the milter: mail sent to it skips the PEC points", svc.name)
		}
	}
}

type pfService struct{ name, milters string }

// inetSMTPServices lists the inet smtpd services of p's master.cf with their effective
// smtpd_milters (the -o override, else main.cf's).
func inetSMTPServices(t *testing.T, p *lab.Provider) []pfService {
	t.Helper()
	out := func(args ...string) string {
		b, err := exec.Command("postconf", append([]string{"-c", p.Postfix.ConfigDir}, args...)...).Output()
		if err != nil {
			t.Fatalf("postconf %v: %v", args, err)
		}
		return string(b)
	}
	global := strings.TrimSpace(out("-h", "smtpd_milters"))
	overrides := out("-P")
	var svcs []pfService
	for _, line := range strings.Split(out("-M"), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "inet" || f[7] != "smtpd" {
			continue
		}
		s := pfService{name: f[0], milters: global}
		for _, o := range strings.Split(overrides, "\n") {
			if v, ok := strings.CutPrefix(o, f[0]+"/inet/smtpd_milters ="); ok {
				s.milters = strings.TrimSpace(v)
			}
		}
		svcs = append(svcs, s)
	}
	if len(svcs) < 2 {
		t.Fatalf("%s: %d inet smtpd services, want at least the MX and submission", p.Postfix.ConfigDir, len(svcs))
	}
	return svcs
}

// Issue 12 item 3: the MX relays nothing for local clients. From the mail system's own
// address and from 127.0.0.1 (both in mynetworks), with a forged sender, a recipient of
// another system is refused; a recipient of the system itself is accepted, and that mail is
// delivered.
func TestMXRelaysNothingForLocalClients(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	systems := allSystems(t, l)
	for i, p := range systems {
		other := systems[(i+1)%len(systems)]
		t.Run(p.ID, func(t *testing.T) {
			t.Parallel()
			local, foreign := p.Users[0].Address, other.Users[0].Address
			for _, src := range []string{p.IP, "127.0.0.1"} {
				c, err := mailtest.Submission{Addr: p.Postfix.MX, LocalAddr: src}.Dial()
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Mail(foreign); err != nil {
					t.Fatalf("from %s: MAIL: %v", src, err)
				}
				if err := c.Rcpt(foreign); err == nil || !strings.HasPrefix(err.Error(), "554") {
					t.Errorf("from %s: RCPT %s: %v; want 554 relay access denied", src, foreign, err)
				}
				if err := c.Rcpt(local); err != nil {
					t.Errorf("from %s: RCPT %s (a local mailbox): %v", src, local, err)
				}
				c.Close()
			}
			token := mailtest.Token("mxlocal")
			msg := mailtest.Message(foreign, []string{local}, "local "+token, "from this host\n")
			if err := (mailtest.Submission{Addr: p.Postfix.MX, LocalAddr: p.IP}).Send(foreign, []string{local}, msg); err != nil {
				t.Fatalf("mail for %s from %s: %v", local, p.IP, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), deliveryDeadline)
			defer cancel()
			if _, err := mailbox(p, p.Users[0]).WaitFor(ctx, token, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Issue 12, open point, and issue 14: nothing reaches a PEC mailbox around the reception
// point. pec-lmtpd's socket admits Postfix's user (and root, for the lab's tests) by the
// kernel's credentials; Dovecot's LMTP is a mode-0600 unix socket of pec-lmtpd's user (root
// in the lab), with no TCP listener, so neither user nobody nor even postfix can deliver
// straight into a mailbox.
func TestDeliverySocketsAdmitOnlyTheirClients(t *testing.T) {
	t.Parallel()
	_, a, _, _ := pecLab(t)
	if a.LMTPD == "" {
		t.Fatal("pec-lmtpd does not run in this lab (bin/pec-lmtpd missing?)")
	}
	pfUID, pfGID := ids(t, "postfix")
	nobody, _ := ids(t, "nobody")
	lmtpd, ok := strings.CutPrefix(a.LMTPD, "unix:")
	if !ok {
		t.Fatalf("lab.json lmtpd = %q, want a unix socket", a.LMTPD)
	}
	if r := probeAs(t, nobody, pfGID, lmtpd, nil); r.Connect == "ok" && !r.Closed {
		t.Errorf("nobody in group postfix on pec-lmtpd: %+v; want refused", r)
	}
	if r := probeAs(t, pfUID, pfGID, lmtpd, nil); r.Connect != "ok" || !strings.HasPrefix(r.Reply, "220 ") {
		t.Errorf("postfix on pec-lmtpd: %+v; want the LMTP greeting", r)
	}
	dv, ok := strings.CutPrefix(a.Dovecot.LMTP, "unix:")
	if !ok {
		t.Fatalf("lab.json dovecot.lmtp = %q, want a unix socket", a.Dovecot.LMTP)
	}
	fi, err := os.Stat(dv)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("%s: %v %v; want mode 0600, owner root (pec-lmtpd's user)", dv, fi.Mode(), err)
	}
	for _, who := range []struct {
		name     string
		uid, gid uint32
	}{{"nobody", nobody, pfGID}, {"postfix", pfUID, pfGID}} {
		if r := probeAs(t, who.uid, who.gid, dv, nil); !strings.Contains(r.Connect, "permission denied") {
			t.Errorf("%s on Dovecot's LMTP %s: %+v; want permission denied", who.name, dv, r)
		}
	}
	if r := probeSelf(t, dv, nil); r.Connect != "ok" || !strings.HasPrefix(r.Reply, "220 ") {
		t.Errorf("root on Dovecot's LMTP: %+v; want the greeting", r)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(a.IP, "24"), 2*time.Second); err == nil {
		c.Close()
		t.Errorf("Dovecot still listens for LMTP on TCP %s:24", a.IP)
	}
}
