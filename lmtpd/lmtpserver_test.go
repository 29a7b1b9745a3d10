package lmtpd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// recordBackend keeps every message as the server handed it over and answers 250 for each
// recipient, 550 at RCPT for reject@x, 452 after the data for quota@x. hold, when set,
// blocks each transaction until it is closed.
type recordBackend struct {
	mu    sync.Mutex
	msgs  []string
	errs  []error // the error that ended each message's reading (nil: io.EOF)
	hold  chan struct{}
	start chan struct{} // receives when a transaction has begun
}

func (b *recordBackend) rcpt(addr string) error {
	if addr == "reject@x" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	}
	return nil
}

func (b *recordBackend) data(tx *lmtpTx, body *dataReader) []error {
	if b.start != nil {
		b.start <- struct{}{}
	}
	if b.hold != nil {
		<-b.hold
	}
	msg, err := io.ReadAll(body)
	b.mu.Lock()
	b.msgs = append(b.msgs, string(msg))
	b.errs = append(b.errs, err)
	b.mu.Unlock()
	out := make([]error, len(tx.rcpts))
	for i, r := range tx.rcpts {
		if r == "quota@x" {
			out[i] = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full\nover quota"}
		}
	}
	return out
}

func (b *recordBackend) got() ([]string, []error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.msgs...), append([]error(nil), b.errs...)
}

func startLMTP(t *testing.T, be lmtpBackend, maxBytes int64) (*lmtpServer, string) {
	t.Helper()
	srv := newLMTPServer(be, lmtpOptions{hostname: "lmtp.test", greeting: "ready", readTimeout: 10 * time.Second, maxRcpts: 3, maxBytes: maxBytes},
		slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.serve(ln)                                         //nolint:errcheck
	t.Cleanup(func() { srv.shutdown(context.Background()) }) //nolint:errcheck
	return srv, ln.Addr().String()
}

// rawSession writes send in one piece (pipelined), closes its writing side,
// and returns the reply lines.
func rawSession(t *testing.T, addr, send string) []string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(send)); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func codes(lines []string) string {
	c := make([]string, len(lines))
	for i, l := range lines {
		c[i] = l[:min(3, len(l))]
	}
	return strings.Join(c, ",")
}

// The message reaches the backend as it was before the client's dot-stuffing: a dot that
// opens a line is dropped, a line with a dot alone ends the message, a bare LF does not begin
// a line, a line longer than the read buffer arrives whole; one reply per accepted recipient,
// a multi-line text on several lines; SIZE advertised.
func TestLMTPServerMessage(t *testing.T) {
	be := &recordBackend{}
	_, addr := startLMTP(t, be, 1<<20)
	long := "." + strings.Repeat("L", 200_000)
	body := "Subject: x\r\n\r\n..dot\r\n...two\r\nx\n.y\r\n" + "." + long + "\r\n.\r\n"
	got := rawSession(t, addr, "LHLO p\r\nMAIL FROM:<a@b> SIZE=300000 BODY=8BITMIME\r\nRCPT TO:<ok@x>\r\nRCPT TO:<reject@x>\r\nRCPT TO:<quota@x>\r\nDATA\r\n"+body+"QUIT\r\n")
	want := "220,250,250,250,250,250,250,250,550,250,354,250,452,452,221"
	if codes(got) != want {
		t.Errorf("replies %q\nwant codes %s", got, want)
	}
	if !strings.Contains(strings.Join(got, "\n"), "250-SIZE 1048576") {
		t.Errorf("LHLO does not advertise SIZE: %q", got)
	}
	msgs, errs := be.got()
	wantMsg := "Subject: x\r\n\r\n.dot\r\n..two\r\nx\n.y\r\n" + long + "\r\n"
	if len(msgs) != 1 || msgs[0] != wantMsg || errs[0] != nil {
		t.Fatalf("backend got %d messages (err %v), first differs: %v", len(msgs), errs, len(msgs) == 1 && msgs[0] != wantMsg)
	}
}

// A message over the limit: refused at MAIL when SIZE says so; else read to its end and
// answered 552 for each recipient, the backend's reading ending with errTooLarge, and the
// session goes on.
func TestLMTPServerTooLarge(t *testing.T) {
	be := &recordBackend{}
	_, addr := startLMTP(t, be, 1000)
	big := strings.Repeat(strings.Repeat("b", 98)+"\r\n", 20)
	got := rawSession(t, addr, "LHLO p\r\nMAIL FROM:<a@b> SIZE=2000\r\nRCPT TO:<ok@x>\r\n"+
		"RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<ok@x>\r\nRCPT TO:<ok2@x>\r\nDATA\r\n"+big+".\r\n"+
		"MAIL FROM:<a@b>\r\nRCPT TO:<ok@x>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n")
	want := "220,250,250,250,250,250,552,503,250,250,250,250,354,552,552,250,250,354,250,221"
	if codes(got) != want {
		t.Errorf("replies %q\nwant codes %s", got, want)
	}
	msgs, errs := be.got()
	if len(msgs) != 2 || !errors.Is(errs[0], errTooLarge) || msgs[1] != "small\r\n" || errs[1] != nil {
		t.Errorf("backend got %q, %v", msgs, errs)
	}
}

// A message cut off before its final dot gets no reply, and the backend sees a failed read,
// not the end of the message.
func TestLMTPServerCutOff(t *testing.T) {
	be := &recordBackend{}
	_, addr := startLMTP(t, be, 0)
	got := rawSession(t, addr, "LHLO p\r\nMAIL FROM:<a@b>\r\nRCPT TO:<ok@x>\r\nDATA\r\nhalf a message\r\n")
	if c := codes(got); c != "220,250,250,250,250,250,250,354" {
		t.Errorf("replies %q", got)
	}
	_, errs := be.got()
	if len(errs) != 1 || errs[0] == nil {
		t.Errorf("backend read errors %v, want one failed read", errs)
	}
}

// Too many recipients get 452, more MAIL inside a transaction 503, unknown commands 502.
func TestLMTPServerCommands(t *testing.T) {
	_, addr := startLMTP(t, &recordBackend{}, 0)
	got := rawSession(t, addr, "MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\nRCPT TO:<4@x>\r\n"+
		"RCPT TO:\r\nRCPT\r\nVRFY x\r\nNOOP\r\nRSET\r\nRCPT TO:<1@x>\r\nMAIL TO:<a>\r\nMAIL FROM:<> SIZE=x\r\nQUIT\r\n")
	want := "220,250,503,250,250,250,452,501,501,502,250,250,503,501,501,221"
	if codes(got) != want {
		t.Errorf("replies %q\nwant codes %s", got, want)
	}
}

// Shutdown closes an idle session at once and lets a transaction under way finish and
// reply before closing its session.
func TestLMTPServerShutdown(t *testing.T) {
	be := &recordBackend{hold: make(chan struct{}), start: make(chan struct{}, 1)}
	srv, addr := startLMTP(t, be, 0)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := bufio.NewReader(busy)
	busy.Write([]byte("LHLO p\r\nMAIL FROM:<a@b>\r\nRCPT TO:<ok@x>\r\nDATA\r\nbody\r\n.\r\n"))
	<-be.start
	done := make(chan error, 1)
	go func() { done <- srv.shutdown(context.Background()) }()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(idle); err != nil || !strings.HasPrefix(string(b), "220 ") {
		t.Errorf("idle session during shutdown: %q, %v; want the greeting and the connection closed", b, err)
	}
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a transaction under way", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(be.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(r)
	if lines := strings.Split(strings.TrimSpace(string(b)), "\r\n"); codes(lines) != "220,250,250,250,250,250,250,354,250" {
		t.Errorf("the transaction under way: %q", lines)
	}
}
