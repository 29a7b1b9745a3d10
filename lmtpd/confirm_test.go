package lmtpd

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/pec"
)

// fakeConfirmer knows tokens "ok-*" and "tmp-*" (a store that cannot be written) at
// @confirm.test and records every Confirm.
type fakeConfirmer struct {
	mu        sync.Mutex
	confirmed []string
}

func (f *fakeConfirmer) IsConfirmation(rcpt string) bool {
	return strings.HasSuffix(strings.ToLower(rcpt), "@confirm.test")
}

func (f *fakeConfirmer) Confirm(_ context.Context, rcpt string) (*pec.Confirmed, error) {
	f.mu.Lock()
	f.confirmed = append(f.confirmed, rcpt)
	f.mu.Unlock()
	switch {
	case strings.HasPrefix(rcpt, "ok-"):
		return &pec.Confirmed{Identificativo: "id-" + rcpt, Now: true}, nil
	case strings.HasPrefix(rcpt, "tmp-"):
		return nil, &pec.Temporary{Op: "confirm", Err: errors.New("store locked")}
	}
	return nil, pec.ErrUnknownConfirmation
}

func (f *fakeConfirmer) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.confirmed...)
}

func startConfirm(t *testing.T) (*ConfirmServer, *fakeConfirmer, string) {
	t.Helper()
	f := &fakeConfirmer{}
	c, err := NewConfirmServer(f, "mx.test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return c, f, ln.Addr().String()
}

// The listener as go-smtp's LMTP client (the protocol Postfix's lmtp client speaks) sees it:
// an unknown recipient is refused at RCPT, the others get one reply each after the body, the
// engine's outcome (250, or 4xx for a store that cannot be written); the body, dot-stuffed
// lines and a line longer than the read buffer included, is read whole before anything is
// confirmed, and the session goes on with a second transaction.
func TestConfirmListener(t *testing.T) {
	_, f, addr := startConfirm(t)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("postfix.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@pec-a.test", nil); err != nil {
		t.Fatal(err)
	}
	var serr *smtp.SMTPError
	if err := c.Rcpt("nobody@elsewhere.test", nil); !errors.As(err, &serr) || serr.Code != 550 {
		t.Fatalf("unknown recipient: %v, want 550", err)
	}
	for _, r := range []string{"ok-1@confirm.test", "tmp-2@confirm.test"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: busta\r\n\r\n.\r\n..\r\n.x\r\n" + strings.Repeat("y", 200_000) + "\r\n" +
		strings.Repeat(strings.Repeat("z", 76)+"\r\n", 50_000) + ".\r\nend\r\n"
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("%d confirmations before the end of the body", n)
	}
	_, err = w.CloseWithLMTPResponse()
	var lerr smtp.LMTPDataError
	if !errors.As(err, &lerr) || len(lerr) != 1 || lerr["tmp-2@confirm.test"] == nil || lerr["tmp-2@confirm.test"].Code/100 != 4 {
		t.Fatalf("per-recipient replies: %v, want 250 for ok-1 and 4xx for tmp-2", err)
	}
	if got := strings.Join(f.calls(), ","); got != "ok-1@confirm.test,tmp-2@confirm.test" {
		t.Errorf("confirmed %s", got)
	}
	// A second transaction on the same session (Postfix reuses connections).
	if err := c.Mail("bruno@pec-b.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("ok-3@confirm.test", nil); err != nil {
		t.Fatal(err)
	}
	if w, err = c.Data(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x\r\n"))
	if _, err := w.CloseWithLMTPResponse(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.calls()); n != 3 {
		t.Errorf("%d confirmations, want 3", n)
	}
}

// Raw sessions: pipelined commands get their replies in order; DATA without a valid recipient
// or RCPT before MAIL are refused; a body cut off before its final dot confirms nothing.
func TestConfirmListenerRaw(t *testing.T) {
	_, f, addr := startConfirm(t)
	session := func(send string) []string { return rawSession(t, addr, send) }
	got := session("LHLO p\r\nRCPT TO:<ok-0@confirm.test>\r\nMAIL FROM:<a@b>\r\nDATA\r\nRCPT TO:<ok-1@confirm.test>\r\nDATA\r\nbody\r\n..hidden dot\r\n.\r\nQUIT\r\n")
	codes := make([]string, len(got))
	for i, l := range got {
		codes[i] = l[:3]
	}
	want := "220,250,250,250,250,503,250,503,250,354,250,221" // greeting, LHLO (4 lines), RCPT before MAIL, MAIL, DATA without rcpt, RCPT, DATA, reply, QUIT
	if strings.Join(codes, ",") != want {
		t.Errorf("replies %v\nwant codes %s", got, want)
	}
	if c := f.calls(); len(c) != 1 || c[0] != "ok-1@confirm.test" {
		t.Errorf("confirmed %v", c)
	}
	got = session("LHLO p\r\nMAIL FROM:<a@b>\r\nRCPT TO:<ok-2@confirm.test>\r\nDATA\r\nhalf a busta\r\n")
	if c := f.calls(); len(c) != 1 {
		t.Errorf("a cut-off body confirmed %v (replies %v)", c[1:], got)
	}
}
