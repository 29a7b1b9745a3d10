// Package lmtpd is the LMTP adapter of the engine: the listeners Postfix delivers to over
// LMTP. The confirmation listener (confirm.go) receives the confirmation recipients the
// milter adds to every busta it hands back, the proof that Postfix queued it
// (pec/confirm.go); the delivery point between Postfix and Dovecot comes next to it. go-smtp
// types stay inside this package, and replies come from pec.Reply, the engine's one table.
package lmtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

// Confirmer is what the confirmation listener needs from the engine.
type Confirmer interface {
	IsConfirmation(rcpt string) bool
	Confirm(ctx context.Context, rcpt string) (*pec.Confirmed, error)
}

// ConfirmServer is the confirmation listener: an LMTP server whose every recipient is a
// confirmation recipient; it answers each with the outcome of Engine.Confirm (250 once the
// held step is released, 4xx when the store cannot be written so Postfix retries, 550 for an
// unknown token). The message body is read and dropped: the token is the proof.
//
// It speaks the few commands Postfix's LMTP client sends (RFC 2033: LHLO, MAIL, RCPT, DATA
// with one reply per accepted recipient, RSET, NOOP, QUIT; PIPELINING) itself rather than
// through go-smtp, because every busta is delivered here whole: go-smtp's DATA reader takes
// the body one byte at a time, a third of pec-milter's CPU for 10 MB messages (issue 19). This
// one skips the body a line at a time with a vectorised search.
type ConfirmServer struct {
	eng      Confirmer
	log      *slog.Logger
	hostname string
	metrics  *prometheus.CounterVec

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]bool
	closing  bool
	sessions sync.WaitGroup
}

// Limits of the confirmation listener.
const (
	confirmReadTimeout = 5 * time.Minute // a command, or a piece of the body
	confirmMaxRcpts    = 1000
	confirmMaxLine     = 4096 // a command line (RFC 5321 §4.5.3.1.4: 512, plus parameters)
)

// NewConfirmServer builds the listener. hostname is the LMTP greeting name.
func NewConfirmServer(eng Confirmer, hostname string, log *slog.Logger, reg prometheus.Registerer) (*ConfirmServer, error) {
	if eng == nil {
		return nil, errors.New("lmtpd: no engine")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &ConfirmServer{eng: eng, log: log.With("component", "confirm"), hostname: hostname, conns: map[net.Conn]bool{},
		metrics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_confirmations_total",
			Help: "Confirmation recipients delivered by Postfix, by result (released, again, late, unknown, tempfail).",
		}, []string{"result"})}
	if reg != nil {
		if err := reg.Register(c.metrics); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// newLMTPServer is the go-smtp LMTP server of the delivery point: backend's sessions, errors
// to log, a minute to write a reply.
func newLMTPServer(backend smtp.Backend, hostname string, read time.Duration, maxRcpts int, maxBytes int64, log *slog.Logger) *smtp.Server {
	s := smtp.NewServer(backend)
	s.LMTP = true
	s.Domain = hostname
	s.ReadTimeout = read
	s.WriteTimeout = time.Minute
	s.MaxRecipients = maxRcpts
	s.MaxMessageBytes = maxBytes
	s.ErrorLog = slogErrorLog{log}
	return s
}

// serve runs srv on ln; Shutdown's ErrServerClosed is a normal end.
func serve(srv *smtp.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, smtp.ErrServerClosed) {
		return err
	}
	return nil
}

// Serve accepts LMTP connections on ln until Shutdown.
func (c *ConfirmServer) Serve(ln net.Listener) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.ln = ln
	c.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			c.mu.Lock()
			closing := c.closing
			c.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			conn.Close()
			return nil
		}
		c.conns[conn] = true
		c.sessions.Add(1)
		c.mu.Unlock()
		go func() {
			defer c.sessions.Done()
			(&confirmConn{c: c, conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriter(conn)}).serve()
			c.mu.Lock()
			delete(c.conns, conn)
			c.mu.Unlock()
			conn.Close()
		}()
	}
}

// Shutdown stops accepting and waits for the sessions under way until ctx ends; then it
// closes them (a confirmation not answered is retried by Postfix).
func (c *ConfirmServer) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	if c.ln != nil {
		c.ln.Close()
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// confirmConn is one LMTP session of the confirmation listener.
type confirmConn struct {
	c     *ConfirmServer
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	mail  bool
	rcpts []string
}

// serve runs the session: the greeting, then one command after another (pipelined commands
// are simply read in turn), until QUIT, an error or a closed connection.
func (s *confirmConn) serve() {
	s.reply(220, "", s.c.hostname+" LMTP confirmation listener ready")
	for s.w.Flush() == nil {
		line, err := s.line()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.c.log.Warn("lmtp", "error", err.Error())
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		if !s.command(strings.ToUpper(verb), strings.TrimSpace(arg)) {
			s.w.Flush()
			return
		}
	}
}

// line reads one command line, without its CRLF.
func (s *confirmConn) line() (string, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(confirmReadTimeout))
	b, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > confirmMaxLine {
		return "", errors.New("command line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// command answers one command; false ends the session.
func (s *confirmConn) command(verb, arg string) bool {
	switch verb {
	case "LHLO":
		s.w.WriteString("250-" + s.c.hostname + "\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
	case "MAIL":
		if !strings.HasPrefix(strings.ToUpper(arg), "FROM:") {
			s.reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
			break
		}
		s.mail, s.rcpts = true, nil
		s.reply(250, "2.0.0", "OK")
	case "RCPT":
		s.rcpt(arg)
	case "DATA":
		return s.data()
	case "RSET":
		s.mail, s.rcpts = false, nil
		s.reply(250, "2.0.0", "OK")
	case "NOOP":
		s.reply(250, "2.0.0", "OK")
	case "QUIT":
		s.reply(221, "2.0.0", "Bye")
		return false
	default:
		s.reply(502, "5.5.2", "Command not implemented")
	}
	return true
}

func (s *confirmConn) rcpt(arg string) {
	ok := strings.EqualFold(arg[:min(len(arg), 3)], "TO:")
	switch {
	case !s.mail:
		s.reply(503, "5.5.1", "MAIL first")
		return
	case !ok:
		s.reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
		return
	case len(s.rcpts) >= confirmMaxRcpts:
		s.reply(452, "4.5.3", "Too many recipients")
		return
	}
	addr := strings.TrimSpace(arg[3:])
	if i := strings.IndexByte(addr, '>'); strings.HasPrefix(addr, "<") && i > 0 {
		addr = addr[1:i]
	} else if sp := strings.IndexByte(addr, ' '); sp >= 0 {
		addr = addr[:sp]
	}
	if !s.c.eng.IsConfirmation(addr) {
		s.c.metrics.WithLabelValues("unknown").Inc()
		s.replyErr(pec.ErrUnknownConfirmation)
		return
	}
	s.rcpts = append(s.rcpts, addr)
	s.reply(250, "2.1.5", "OK")
}

// data skips the message and then releases the held step of each recipient, one reply per
// recipient (RFC 2033 §4.2), once the whole message has arrived (a confirmation for a message
// Postfix could not deliver whole is no proof).
func (s *confirmConn) data() bool {
	if len(s.rcpts) == 0 {
		s.reply(503, "5.5.1", "No valid recipients")
		return true
	}
	s.reply(354, "", "End data with <CR><LF>.<CR><LF>")
	if err := s.w.Flush(); err != nil {
		return false
	}
	if err := s.skipData(); err != nil {
		s.c.log.Warn("lmtp: message not received whole: nothing confirmed", "error", err.Error())
		return false
	}
	for _, rcpt := range s.rcpts {
		s.replyErr(s.confirm(rcpt))
	}
	s.mail, s.rcpts = false, nil
	return true
}

// skipData reads up to the line holding a single dot, a line at a time (lines longer than
// the buffer in pieces).
func (s *confirmConn) skipData() error {
	start := true // at the start of a line
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(confirmReadTimeout))
		b, err := s.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			start = false
			continue
		case err != nil:
			return err
		}
		if start && (string(b) == ".\r\n" || string(b) == ".\n") {
			return nil
		}
		start = true
	}
}

// confirm releases one recipient's held step and counts and logs the result.
func (s *confirmConn) confirm(rcpt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h, err := s.c.eng.Confirm(ctx, rcpt)
	cancel()
	result := "released"
	switch {
	case err != nil && pec.Reply(err).Temporary():
		result = "tempfail"
		s.c.log.Error("confirmation not recorded; Postfix retries", "rcpt", rcpt, "error", err)
	case err != nil:
		result = "unknown"
		s.c.log.Warn("confirmation with an unknown token", "rcpt", rcpt)
	case !h.Now:
		result = "again"
	case h.Late:
		result = "late"
		s.c.log.Warn("held step confirmed after its expiry: released late", "identificativo", h.Identificativo)
	}
	if err == nil {
		s.c.log.Info("held step released", "identificativo", h.Identificativo, "result", result)
	}
	s.c.metrics.WithLabelValues(result).Inc()
	return err
}

// replyErr writes the reply of an engine outcome: 250 for nil, else pec.Reply's.
func (s *confirmConn) replyErr(err error) {
	if err == nil {
		s.reply(250, "2.0.0", "OK")
		return
	}
	r := pec.Reply(err)
	s.reply(r.Code, r.Enhanced, r.Text)
}

func (s *confirmConn) reply(code int, enhanced, text string) {
	if enhanced != "" {
		text = enhanced + " " + text
	}
	fmt.Fprintf(s.w, "%d %s\r\n", code, text)
}

// toSMTP converts an engine error into go-smtp's reply through pec.Reply; nil stays nil.
func toSMTP(err error) error {
	if err == nil {
		return nil
	}
	r := pec.Reply(err)
	var enh smtp.EnhancedCode
	parts := strings.Split(r.Enhanced, ".")
	for i := 0; i < 3 && i < len(parts); i++ {
		for _, c := range parts[i] {
			enh[i] = enh[i]*10 + int(c-'0')
		}
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: enh, Message: r.Text}
}

// slogErrorLog sends go-smtp's own errors (network, protocol) to the structured log.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Printf(format string, v ...any) {
	l.log.Warn("lmtp", "error", fmt.Sprintf(format, v...))
}
func (l slogErrorLog) Println(v ...any) { l.log.Warn("lmtp", "error", fmt.Sprint(v...)) }
