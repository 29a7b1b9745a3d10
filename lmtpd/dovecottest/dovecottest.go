// Package dovecottest is a fake Dovecot for tests of the delivery point: an LMTP server on
// 127.0.0.1:0 that stores messages per mailbox and answers per recipient as Dovecot does
// (550 5.1.1 at RCPT for an unknown user, 552 5.2.2 after DATA for a full mailbox), and the
// doveadm HTTP API's search by Message-ID over the same mailboxes. It can be switched to
// misbehave: store the message and drop the connection before answering (the answer lost
// after the data), refuse temporarily, or be down.
package dovecottest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Mode selects how the fake answers after DATA.
type Mode int

const (
	Normal   Mode = iota // store and answer per recipient
	DropConn             // store, then close the connection without answering
	TempFail             // answer 451 4.3.0 for every recipient, store nothing
	Shutdown             // store, answer "421 4.3.2 Shutting down" and close, as Dovecot stopping does
)

// APIKey is the doveadm_api_key the fake API accepts.
const APIKey = "test-doveadm-key"

// Server is a running fake Dovecot.
type Server struct {
	ln   net.Listener
	srv  *smtp.Server
	api  *httptest.Server
	mu   sync.Mutex
	mode Mode
	// Unknown users are refused at RCPT; Full ones after DATA.
	unknown, full map[string]bool
	boxes         map[string][][]byte // user -> messages
	lmtpTx        int
}

// New starts the fake; users are the mailboxes that exist. It stops with the test.
func New(tb testing.TB, users ...string) *Server {
	tb.Helper()
	s := &Server{unknown: map[string]bool{}, full: map[string]bool{}, boxes: map[string][][]byte{}}
	for _, u := range users {
		s.boxes[strings.ToLower(u)] = nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.ln = ln
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{s: s, c: c}, nil }))
	s.srv.LMTP = true
	s.srv.Domain = "dovecot.test"
	go s.srv.Serve(ln) //nolint:errcheck
	s.api = httptest.NewServer(http.HandlerFunc(s.doveadm))
	tb.Cleanup(func() { s.srv.Close(); s.api.Close() })
	return s
}

// Addr is the LMTP listener's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// APIURL is the doveadm HTTP API endpoint.
func (s *Server) APIURL() string { return s.api.URL + "/doveadm/v1" }

// SetMode switches the behaviour after DATA.
func (s *Server) SetMode(m Mode) { s.mu.Lock(); s.mode = m; s.mu.Unlock() }

// SetFull makes user's mailbox full (552 5.2.2 after DATA) or not.
func (s *Server) SetFull(user string, full bool) {
	s.mu.Lock()
	s.full[strings.ToLower(user)] = full
	s.mu.Unlock()
}

// Stop closes the LMTP listener and every connection (Dovecot down).
func (s *Server) Stop() { s.srv.Close() }

// Messages returns the messages stored in user's mailbox.
func (s *Server) Messages(user string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.boxes[strings.ToLower(user)]...)
}

// Transactions is the number of LMTP DATA transactions received.
func (s *Server) Transactions() int { s.mu.Lock(); defer s.mu.Unlock(); return s.lmtpTx }

// user is the mailbox of an address: Dovecot's LMTP strips the +extension.
func user(addr string) string {
	local, dom, _ := strings.Cut(strings.ToLower(addr), "@")
	local, _, _ = strings.Cut(local, "+")
	return local + "@" + dom
}

type session struct {
	s     *Server
	c     *smtp.Conn
	rcpts []string
}

func (x *session) Reset()                               { x.rcpts = nil }
func (x *session) Logout() error                        { return nil }
func (x *session) Mail(string, *smtp.MailOptions) error { x.rcpts = nil; return nil }
func (x *session) Data(io.Reader) error                 { return errors.New("LMTP only") }

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	_, ok := x.s.boxes[user(to)]
	x.s.mu.Unlock()
	if !ok {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + "> User doesn't exist: " + to}
	}
	x.rcpts = append(x.rcpts, to)
	return nil
}

func (x *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := x.s
	s.mu.Lock()
	s.lmtpTx++
	mode := s.mode
	if mode == TempFail {
		s.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary internal error"}
	}
	var errs []error
	for _, r := range x.rcpts {
		u := user(r)
		if s.full[u] {
			errs = append(errs, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "<" + r + "> Quota exceeded (mailbox for user is full)"})
			continue
		}
		s.boxes[u] = append(s.boxes[u], bytes.Clone(b))
		errs = append(errs, nil)
	}
	s.mu.Unlock()
	switch mode {
	case DropConn:
		x.c.Close()
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "gone"}
	case Shutdown:
		status.SetStatus(x.rcpts[0], &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "dovecot.test Shutting down"})
		time.Sleep(50 * time.Millisecond) // let the 421 go out before the connection closes
		x.c.Close()
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Shutting down"}
	}
	for i, r := range x.rcpts {
		status.SetStatus(r, errs[i])
	}
	return nil
}

// doveadm answers [["search", {"user":..., "query":["header","Message-ID",id]}, tag]].
func (s *Server) doveadm(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "X-Dovecot-API "+base64.StdEncoding.EncodeToString([]byte(APIKey)) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var cmds [][]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&cmds); err != nil || len(cmds) != 1 || len(cmds[0]) != 3 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var args struct {
		User  string   `json:"user"`
		Query []string `json:"query"`
	}
	var name, tag string
	_ = json.Unmarshal(cmds[0][0], &name)
	_ = json.Unmarshal(cmds[0][2], &tag)
	if err := json.Unmarshal(cmds[0][1], &args); err != nil || name != "search" || len(args.Query) != 3 ||
		!strings.EqualFold(args.Query[0], "header") {
		http.Error(w, "unsupported", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	box, ok := s.boxes[strings.ToLower(args.User)]
	var hits []map[string]string
	for i, m := range box {
		if headerContains(m, args.Query[1], args.Query[2]) {
			hits = append(hits, map[string]string{"mailbox-guid": "0123", "uid": strconv.Itoa(i + 1)})
		}
	}
	s.mu.Unlock()
	if !ok {
		json.NewEncoder(w).Encode([]any{[]any{"error", map[string]any{"type": "exitCode", "exitCode": 67}, tag}}) //nolint:errcheck
		return
	}
	json.NewEncoder(w).Encode([]any{[]any{"doveadmResponse", append([]map[string]string{}, hits...), tag}}) //nolint:errcheck
}

// headerContains is Dovecot's header search: the field's value contains the string,
// ignoring case.
func headerContains(msg []byte, field, value string) bool {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n") {
		name, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), field) && strings.Contains(strings.ToLower(v), strings.ToLower(value)) {
			return true
		}
	}
	return false
}
