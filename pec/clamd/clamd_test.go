package clamd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
)

func newClient(t *testing.T, addr string, timeout time.Duration) *clamd.Client {
	t.Helper()
	c, err := clamd.New(clamd.Config{Addr: addr, Timeout: timeout, ChunkSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestScanVerdicts(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), 5*time.Second)
	ctx := context.Background()

	v, err := c.Scan(ctx, strings.NewReader("hello, clean world\r\n"))
	if err != nil || v != "" {
		t.Fatalf("clean: virus=%q err=%v", v, err)
	}
	// The pattern crosses a chunk boundary (chunk size 1000).
	body := strings.Repeat("x", 990) + clamdtest.EICAR + strings.Repeat("y", 3000)
	v, err = c.Scan(ctx, strings.NewReader(body))
	if err != nil || v != clamdtest.EICARName {
		t.Fatalf("eicar: virus=%q err=%v", v, err)
	}
	v, err = c.Scan(ctx, strings.NewReader(""))
	if err != nil || v != "" {
		t.Fatalf("empty: virus=%q err=%v", v, err)
	}
	if srv.Scans() != 3 {
		t.Fatalf("scans = %d, want 3", srv.Scans())
	}
}

func TestScanTemporaryFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*clamdtest.Server)
	}{
		{"error reply", func(s *clamdtest.Server) { s.SetMode(clamdtest.Error) }},
		{"connection closed", func(s *clamdtest.Server) { s.SetMode(clamdtest.CloseConn) }},
		{"hang", func(s *clamdtest.Server) { s.SetMode(clamdtest.Hang) }},
		{"size limit", func(s *clamdtest.Server) { s.SetStreamMaxLength(2000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := clamdtest.New(t)
			tc.setup(srv)
			c := newClient(t, srv.Addr(), 300*time.Millisecond)
			start := time.Now()
			v, err := c.Scan(context.Background(), strings.NewReader(strings.Repeat("z", 100_000)))
			if err == nil {
				t.Fatalf("no error, virus %q", v)
			}
			if !errors.Is(err, clamd.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			var tmp interface{ Temporary() bool }
			if !errors.As(err, &tmp) || !tmp.Temporary() {
				t.Fatalf("error %v is not temporary", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("took %v, timeout not honoured", d)
			}
		})
	}
}

func TestScanRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, addr, time.Second)
	if _, err := c.Scan(context.Background(), strings.NewReader("x")); !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestScanContextCancel(t *testing.T) {
	srv := clamdtest.New(t)
	srv.SetMode(clamdtest.Hang)
	c := newClient(t, srv.Addr(), time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Scan(ctx, strings.NewReader("x")); !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("cancel not honoured")
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestScanReaderError(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), time.Second)
	if _, err := c.Scan(context.Background(), failingReader{}); err == nil {
		t.Fatal("a failing reader must fail the scan")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []clamd.Config{
		{},
		{Addr: "no-port"},
		{Addr: "unix:"},
		{Addr: "127.0.0.1:3310", Timeout: -1},
		{Addr: "127.0.0.1:3310", ChunkSize: -5},
		{Addr: "127.0.0.1:3310", TimeoutPerMB: -1},
		{Addr: "127.0.0.1:3310", StartupWait: -1},
	} {
		if _, err := clamd.New(cfg); err == nil || !strings.HasPrefix(err.Error(), "clamd.") {
			t.Errorf("New(%+v) = %v, want an error naming the key", cfg, err)
		}
	}
	if _, err := clamd.New(clamd.Config{Addr: "unix:/run/clamav/clamd.ctl"}); err != nil {
		t.Fatal(err)
	}
}

// TestParseReplyNames: a FOUND reply is a virus whatever its name holds; the name is made
// printable (it goes into daticert.xml and the log), and a name with nothing printable is a
// broken reply, as an empty one is.
func TestParseReplyNames(t *testing.T) {
	for reply, want := range map[string]string{
		"stream: Eicar-Signature FOUND":         "Eicar-Signature",
		"1: stream: Win.Test.EICAR_HDB-1 FOUND": "Win.Test.EICAR_HDB-1",
		"stream: Bad\x00Name FOUND":             "Bad?Name",
		"stream: Latin\xe8\r\nX FOUND":          "Latin???X",
		"stream: OK":                            "",
		"12: stream: OK":                        "",
	} {
		v, err := clamd.ParseReplyForTest(reply)
		if err != nil || v != want {
			t.Errorf("%q: %q, %v; want %q", reply, v, err, want)
		}
	}
	for _, reply := range []string{"stream: \x00 FOUND", "stream:  FOUND", "stream: \x01\x02 FOUND", "stream: oops", "INSTREAM size limit exceeded. ERROR"} {
		if v, err := clamd.ParseReplyForTest(reply); !errors.Is(err, clamd.ErrUnavailable) {
			t.Errorf("%q: %q, %v; want a broken reply (ErrUnavailable)", reply, v, err)
		}
	}
	for _, reply := range []string{"INSTREAM size limit exceeded. ERROR", "3: INSTREAM size limit exceeded. ERROR"} {
		if _, err := clamd.ParseReplyForTest(reply); !errors.Is(err, clamd.ErrStreamLimit) {
			t.Errorf("size limit reply %q: %v, want ErrStreamLimit", reply, err)
		}
	}
}

// TestScanReusesSession: scans run one after the other in one clamd session (IDSESSION),
// whatever their verdict.
func TestScanReusesSession(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), 5*time.Second)
	for i := range 6 {
		body, want := "clean "+strings.Repeat("x", 3000), ""
		if i%2 == 1 {
			body, want = "infected "+clamdtest.EICAR, clamdtest.EICARName
		}
		if v, err := c.Scan(context.Background(), strings.NewReader(body)); err != nil || v != want {
			t.Fatalf("scan %d: virus %q, %v; want %q", i, v, err, want)
		}
	}
	if srv.Scans() != 6 || srv.Conns() != 1 {
		t.Fatalf("%d scans on %d connections, want 6 on 1", srv.Scans(), srv.Conns())
	}
}

// TestScanSessionClosedByClamd: a session clamd closed while it was idle (its IdleTimeout,
// a restart) costs the next scan nothing but a new connection when the message can be read
// again, and a temporary failure when it cannot; the scan after it gets a new session.
func TestScanSessionClosedByClamd(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), 5*time.Second)
	ctx := context.Background()
	if _, err := c.Scan(ctx, strings.NewReader("first")); err != nil {
		t.Fatal(err)
	}
	dropIdle(t, srv)
	body := strings.Repeat("y", 2500) + clamdtest.EICAR
	if v, err := c.Scan(ctx, strings.NewReader(body)); err != nil || v != clamdtest.EICARName {
		t.Fatalf("after the session was closed: virus %q, %v", v, err)
	}
	if srv.Conns() != 2 {
		t.Fatalf("%d connections, want 2", srv.Conns())
	}

	dropIdle(t, srv)
	unseekable := io.MultiReader(strings.NewReader(body))
	if v, err := c.Scan(ctx, unseekable); !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("a message that cannot be sent again: virus %q, %v; want a temporary failure", v, err)
	}
	if v, err := c.Scan(ctx, strings.NewReader(body)); err != nil || v != clamdtest.EICARName {
		t.Fatalf("next scan: virus %q, %v", v, err)
	}
}

// dropIdle makes the fake close its idle session, once the client has put it back.
func dropIdle(t *testing.T, srv *clamdtest.Server) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); srv.DropIdle() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no idle session to close")
		}
	}
}

// TestScanFailedSessionNotReused: a session in which clamd answered an error is closed, and
// the next scan gets a new one.
func TestScanFailedSessionNotReused(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), 5*time.Second)
	ctx := context.Background()
	if _, err := c.Scan(ctx, strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	srv.SetMode(clamdtest.Error)
	if _, err := c.Scan(ctx, strings.NewReader("ok")); !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("error reply: %v", err)
	}
	srv.SetMode(clamdtest.Normal)
	srv.SetStreamMaxLength(1500)
	var sl *clamd.StreamLimitError
	if _, err := c.Scan(ctx, strings.NewReader(strings.Repeat("z", 4000))); !errors.As(err, &sl) {
		t.Fatalf("over the limit: %v, want a *StreamLimitError", err)
	}
	if _, err := c.Scan(ctx, strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	if srv.Conns() != 3 {
		t.Fatalf("%d connections, want 3: one per failed session", srv.Conns())
	}
}

// TestScanConcurrentSessions: concurrent scans each get a session of their own and the right
// verdict, and sessions are reused across them.
func TestScanConcurrentSessions(t *testing.T) {
	srv := clamdtest.New(t)
	c := newClient(t, srv.Addr(), 10*time.Second)
	defer c.Close()
	const workers, each = 6, 30
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				body, want := "clean", ""
				if (w+i)%3 == 0 {
					body, want = clamdtest.EICAR, clamdtest.EICARName
				}
				if v, err := c.Scan(context.Background(), strings.NewReader(body)); err != nil || v != want {
					errs <- fmt.Errorf("worker %d scan %d: virus %q, %v; want %q", w, i, v, err, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Conns(); n > 2*workers {
		t.Fatalf("%d connections for %d scans by %d workers: sessions not reused", n, workers*each, workers)
	}
}

// FuzzParseReply: any reply gives a verdict or a temporary error, and a verdict agrees with
// the reply: "" only for "stream: OK", else a printable name taken from a FOUND reply.
// testdata/fuzz/FuzzParseReply holds the crasher "stream: \x00 FOUND" (a NUL in the name).
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"stream: OK", "stream: Eicar FOUND", "x ERROR", "", "stream: FOUND", "1: stream: OK"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := clamd.ParseReplyForTest(s)
		if err != nil {
			if !errors.Is(err, clamd.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			return
		}
		reply := strings.TrimSpace(s)
		switch {
		case v == "" && !strings.HasSuffix(reply, "stream: OK"):
			t.Fatalf("clean verdict from %q", s)
		case v != "" && !strings.HasSuffix(reply, " FOUND"):
			t.Fatalf("virus %q from %q, not a FOUND reply", v, s)
		case !utf8.ValidString(v) || v != strings.TrimSpace(v):
			t.Fatalf("virus name %q from %q", v, s)
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("virus name %q with a control character from %q", v, s)
			}
		}
	})
}

// TestScanTimeoutGrowsWithSize: a clamd that never answers is given Timeout plus
// TimeoutPerMB for every MiB sent (issue 12 item 9), not a fixed time whatever the size.
func TestScanTimeoutGrowsWithSize(t *testing.T) {
	srv := clamdtest.New(t)
	srv.SetMode(clamdtest.Hang)
	c, err := clamd.New(clamd.Config{Addr: srv.Addr(), Timeout: 100 * time.Millisecond, TimeoutPerMB: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Timeout(3<<20), 1300*time.Millisecond; got != want {
		t.Fatalf("Timeout(3 MiB) = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		size     int
		min, max time.Duration
	}{
		// The lower bounds are the point (no verdict is awaited for less than the size's
		// timeout); the upper ones only catch a wait far beyond it, with room for a loaded
		// machine.
		{1000, 90 * time.Millisecond, 10 * time.Second},
		{3 << 20, 1250 * time.Millisecond, 20 * time.Second},
	} {
		start := time.Now()
		_, err := c.Scan(context.Background(), strings.NewReader(strings.Repeat("z", tc.size)))
		d := time.Since(start)
		if !errors.Is(err, clamd.ErrUnavailable) {
			t.Fatalf("%d bytes: %v, want a timeout", tc.size, err)
		}
		if d < tc.min || d > tc.max {
			t.Errorf("%d bytes: gave up after %v, want between %v and %v (%v)", tc.size, d, tc.min, tc.max, err)
		}
	}
	// A context deadline earlier than the size's timeout still wins: with 10 s per MiB the
	// size allows 30 s, the context 200 ms.
	slow, err := clamd.New(clamd.Config{Addr: srv.Addr(), Timeout: 100 * time.Millisecond, TimeoutPerMB: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := slow.Scan(ctx, strings.NewReader(strings.Repeat("z", 3<<20))); !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("ctx deadline of 200ms ignored: %v", d)
	}
}

// TestCheckStreamLimit: the declared chunk length tells whether StreamMaxLength admits a
// stream, without sending it; a scan over the limit is a *StreamLimitError.
func TestCheckStreamLimit(t *testing.T) {
	srv := clamdtest.New(t)
	srv.SetStreamMaxLength(1000)
	c := newClient(t, srv.Addr(), 2*time.Second)
	ctx := context.Background()
	if err := c.CheckStreamLimit(ctx, 1000); err != nil {
		t.Fatalf("1000 bytes with StreamMaxLength 1000: %v", err)
	}
	err := c.CheckStreamLimit(ctx, 1001)
	var sl *clamd.StreamLimitError
	if !errors.As(err, &sl) || sl.Size != 1001 || !errors.Is(err, clamd.ErrStreamLimit) || !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("1001 bytes with StreamMaxLength 1000: %v, want a *StreamLimitError", err)
	}
	if !strings.Contains(err.Error(), "StreamMaxLength") {
		t.Errorf("error %q does not name StreamMaxLength", err)
	}
	srv.SetStreamMaxLength(0)
	if err := c.CheckStreamLimit(ctx, 4<<30-1); err != nil {
		t.Fatalf("no limit: %v", err)
	}
	for _, n := range []int64{0, -1, 4 << 30} {
		if err := c.CheckStreamLimit(ctx, n); err == nil || errors.Is(err, clamd.ErrUnavailable) {
			t.Errorf("size %d: %v, want an argument error", n, err)
		}
	}

	srv.SetStreamMaxLength(2000)
	_, err = c.Scan(ctx, strings.NewReader(strings.Repeat("z", 5000)))
	if !errors.As(err, &sl) || sl.Size < 2000 || !errors.Is(err, clamd.ErrUnavailable) {
		t.Fatalf("scan over the limit: %v, want a temporary *StreamLimitError", err)
	}

	// Not clamd: an unexpected reply is an error, never "covered".
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(conn, "UNKNOWN COMMAND\x00") //nolint:errcheck
			conn.Close()
		}
	}()
	other := newClient(t, ln.Addr().String(), time.Second)
	if err := other.CheckStreamLimit(ctx, 10); err == nil || errors.As(err, &sl) {
		t.Fatalf("unexpected reply: %v, want an error", err)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln2.Addr().String()
	ln2.Close()
	if err := newClient(t, addr, time.Second).CheckStreamLimit(ctx, 10); !errors.Is(err, clamd.ErrUnavailable) || errors.As(err, &sl) {
		t.Fatalf("clamd down: %v, want ErrUnavailable", err)
	}
}
