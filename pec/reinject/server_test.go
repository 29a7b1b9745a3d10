package reinject

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// stage is where the fake Postfix misbehaves.
type stage string

const (
	atConnect   stage = "connect"
	atMail      stage = "mail"
	atRcpt      stage = "rcpt"
	atData      stage = "data"        // DATA command, before the body
	atEndOfData stage = "end-of-data" // body read, before the final reply
)

// fault is how it misbehaves.
type fault string

const (
	temp fault = "4xx"
	perm fault = "5xx"
	hang fault = "hang" // never answers (until the client gives up)
	drop fault = "drop" // closes the connection without answering
	slow fault = "slow" // tells the test it got there (reached), waits slowFor, then goes on
)

// fakePostfix is an SMTP server on 127.0.0.1:0 that records what it accepted and fails
// once (or always) at a chosen stage.
type fakePostfix struct {
	t    *testing.T
	addr string
	srv  *smtp.Server

	mu       sync.Mutex
	faults   map[stage]fault
	times    map[stage]int       // how many more times to fail (-1: always)
	accepted map[string][][]byte // Message-ID -> bodies answered 250
	dataCmds map[string]int      // Message-ID -> bodies received (250 or not)
	release  chan struct{}
	reached  chan stage // a slow fault was reached
	slowFor  time.Duration
}

func newFakePostfix(t *testing.T) *fakePostfix {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newFakePostfixOn(t, l, l.Addr().String())
}

// newFakePostfixUnix is the fake on a unix socket, as Postfix's pec-reinject service is
// (postfix-conf/master.cf.pec); its addr is "unix:/path".
func newFakePostfixUnix(t *testing.T) *fakePostfix {
	p := filepath.Join(t.TempDir(), "pec-reinject")
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	return newFakePostfixOn(t, l, "unix:"+p)
}

func newFakePostfixOn(t *testing.T, l net.Listener, addr string) *fakePostfix {
	f := &fakePostfix{t: t, faults: map[stage]fault{}, times: map[stage]int{}, accepted: map[string][][]byte{},
		dataCmds: map[string]int{}, release: make(chan struct{}), reached: make(chan stage, 16), slowFor: 300 * time.Millisecond}
	f.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		if err := f.trip(atConnect, c); err != nil {
			return nil, err
		}
		return &fakeSession{f: f, c: c}, nil
	}))
	f.srv.Domain = "reinject.test"
	f.srv.AllowInsecureAuth = true
	f.addr = addr
	go f.srv.Serve(l) //nolint:errcheck
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

// failAt makes the server misbehave n times (n < 0: always) at s.
func (f *fakePostfix) failAt(s stage, how fault, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[s], f.times[s] = how, n
}

func (f *fakePostfix) trip(s stage, c *smtp.Conn) error {
	f.mu.Lock()
	how, n := f.faults[s], f.times[s]
	if how == "" || n == 0 {
		f.mu.Unlock()
		return nil
	}
	if n > 0 {
		f.times[s] = n - 1
	}
	f.mu.Unlock()
	switch how {
	case slow:
		f.reached <- s
		time.Sleep(f.slowFor)
		return nil
	case temp:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	case perm:
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "refused"}
	case hang:
		select {
		case <-f.release:
		case <-time.After(10 * time.Second):
		}
		c.Conn().Close()
		return errors.New("hung")
	default:
		c.Conn().Close()
		return errors.New("dropped")
	}
}

func (f *fakePostfix) counts(msgID string) (accepted, received int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.accepted[msgID]), f.dataCmds[msgID]
}

func (f *fakePostfix) bodies(msgID string) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted[msgID]
}

type fakeSession struct {
	f *fakePostfix
	c *smtp.Conn
}

func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	return s.f.trip(atMail, s.c)
}
func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error { return s.f.trip(atRcpt, s.c) }
func (s *fakeSession) Reset()                                    {}
func (s *fakeSession) Logout() error                             { return nil }

func (s *fakeSession) Data(r io.Reader) error {
	if err := s.f.trip(atData, s.c); err != nil {
		return err
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	h, _ := textproto.NewReader(bufio.NewReader(bytes.NewReader(body))).ReadMIMEHeader()
	id := h.Get("Message-Id")
	s.f.mu.Lock()
	s.f.dataCmds[id]++
	s.f.mu.Unlock()
	if err := s.f.trip(atEndOfData, s.c); err != nil {
		return err
	}
	s.f.mu.Lock()
	s.f.accepted[id] = append(s.f.accepted[id], body)
	s.f.mu.Unlock()
	return nil
}
