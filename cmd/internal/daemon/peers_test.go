package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
)

// syncBuffer is a log sink the listener's goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testDaemon() (*Daemon, *syncBuffer) {
	var buf syncBuffer
	return &Daemon{Log: slog.New(slog.NewTextHandler(&buf, nil))}, &buf
}

// serve accepts on ln and answers "ok\n" on every connection the listener hands over.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("ok\n"))
		c.Close()
	}
}

// greeting dials and reads what the server says: "ok\n" when the connection was admitted, ""
// (end of file at once) when the listener closed it.
func greeting(t *testing.T, d net.Dialer, network, addr string) string {
	t.Helper()
	c, err := d.Dial(network, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// A unix listener that admits only another user closes this process's connection, logs the
// peer's uid and pid, and keeps serving; one that admits this process's user serves it.
func TestUnixListenerChecksPeerUser(t *testing.T) {
	me := os.Getuid()
	sock := filepath.Join(t.TempDir(), "milter.sock")
	d, logs := testDaemon()
	other := strconv.Itoa(me + 1)
	ln, err := d.Listen(config.Listener{Key: "milter", Spec: "unix:" + sock, Mode: "0660", Group: "-",
		Peers: config.Peers{AllowUsers: []string{other}}})
	if err != nil {
		t.Fatal(err)
	}
	go serve(ln)
	for range 2 { // the second proves the listener still accepts after a refusal
		if got := greeting(t, net.Dialer{}, "unix", sock); got != "" {
			t.Fatalf("uid %d got %q from a listener that admits only uid %s", me, got, other)
		}
	}
	ln.Close()
	if l := logs.String(); !strings.Contains(l, "connection refused") || !strings.Contains(l, "peer_uid="+strconv.Itoa(me)) ||
		!strings.Contains(l, "peer_pid="+strconv.Itoa(os.Getpid())) || !strings.Contains(l, "listener=milter") {
		t.Errorf("refusal not logged with the peer's uid and pid:\n%s", l)
	}
	if fi, err := os.Stat(sock); err == nil {
		t.Errorf("socket left behind: %v", fi.Mode())
	}

	ln, err = d.Listen(config.Listener{Key: "milter", Spec: "unix:" + sock, Mode: "0660", Group: "-",
		Peers: config.Peers{AllowUsers: []string{other, strconv.Itoa(me)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln)
	if got := greeting(t, net.Dialer{}, "unix", sock); got != "ok\n" {
		t.Fatalf("uid %d refused by a listener that admits it: %q", me, got)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
	}
}

// A TCP listener admits only allow_inet_peers: a connection from 127.0.0.1 is closed when only
// 127.0.0.2 may connect, and 127.0.0.2 is served by the same listener.
func TestInetListenerChecksPeerAddress(t *testing.T) {
	d, logs := testDaemon()
	ln, err := d.Listen(config.Listener{Key: "milter", Spec: "inet:127.0.0.1:0", Mode: "0660",
		Peers: config.Peers{Nets: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln)
	addr := ln.Addr().String()
	if got := greeting(t, net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}, "tcp", addr); got != "" {
		t.Fatalf("127.0.0.1 got %q from a listener that admits only 127.0.0.2", got)
	}
	if got := greeting(t, net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}, "tcp", addr); got != "ok\n" {
		t.Fatalf("127.0.0.2 refused: %q", got)
	}
	if l := logs.String(); !strings.Contains(l, "connection refused") || !strings.Contains(l, "peer=127.0.0.1") {
		t.Errorf("refusal not logged with the peer:\n%s", l)
	}
}

// A listener nobody may use does not open: a TCP listener without allow_inet_peers, a unix
// socket without allow_users or with an unknown user.
func TestListenRefusesOpenListeners(t *testing.T) {
	d, _ := testDaemon()
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, tc := range []struct {
		l    config.Listener
		want string
	}{
		{config.Listener{Key: "milter", Spec: "inet:127.0.0.1:0", Mode: "0660"}, "config: milter.listen: a TCP listener needs milter.allow_inet_peers"},
		{config.Listener{Key: "confirm", Spec: "unix:" + sock, Mode: "0660", Group: "-"}, "config: confirm.allow_users:"},
		{config.Listener{Key: "milter", Spec: "unix:" + sock, Mode: "0660", Group: "-",
			Peers: config.Peers{AllowUsers: []string{"no-such-user-gestore"}}}, "config: milter.allow_users[0]:"},
	} {
		ln, err := d.Listen(tc.l)
		if err == nil {
			ln.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.l, err, tc.want)
		}
	}
}
