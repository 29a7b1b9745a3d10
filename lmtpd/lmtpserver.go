package lmtpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/internal/smtpc"
	"github.com/gestore-pec/gestore/pec"
)

// The LMTP server of both listeners (RFC 2033), the confirmation listener and the delivery
// point. It speaks the commands Postfix's LMTP client sends: LHLO, MAIL (SIZE, BODY), RCPT,
// DATA with one reply per accepted recipient, RSET, NOOP, QUIT, with PIPELINING (pipelined
// commands are read in turn; the replies go out together when no more input is waiting). The
// message is read a line at a time with a vectorised search for the line end: go-smtp's
// server, used before, read it one byte at a time, a third of pec-milter's CPU for 10 MB
// messages at the confirmation listener and a quarter of pec-lmtpd's at the delivery point
// (issue 19).

// lmtpBackend is what a listener does with its sessions' transactions.
type lmtpBackend interface {
	// rcpt answers RCPT for one address: nil accepts it.
	rcpt(addr string) error
	// data runs one transaction once DATA was accepted. It reads the message from body (or
	// leaves it: the server skips what is left) and returns one reply per recipient of
	// tx, in order: nil is 250, an *smtp.SMTPError itself, anything else pec.Reply's. When
	// the message did not arrive whole (body.Skip or Read fail with an error other than
	// errTooLarge) its replies are not sent: the session ends.
	data(tx *lmtpTx, body *dataReader) []error
}

// lmtpTx is a transaction as the client declared it.
type lmtpTx struct {
	from  string
	size  int64 // MAIL's SIZE= (RFC 1870), 0 if absent
	rcpts []string
}

// lmtpOptions configure an lmtpServer.
type lmtpOptions struct {
	hostname, greeting string
	readTimeout        time.Duration // a command, or a piece of the message
	maxRcpts           int
	maxBytes           int64 // the largest message (SIZE advertised); 0: no limit
}

// Limits of every session.
const (
	lmtpWriteTimeout = time.Minute
	lmtpMaxCmdLine   = 4096 // a command line (RFC 5321 §4.5.3.1.4: 512, plus parameters)
)

// errTooLarge: the message passed maxBytes; the server answers 552 for every recipient.
var errTooLarge = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too big"}

// lmtpServer accepts sessions and runs them against a backend.
type lmtpServer struct {
	be  lmtpBackend
	opt lmtpOptions
	log *slog.Logger

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*lmtpConn]bool
	closing  bool
	sessions sync.WaitGroup
}

func newLMTPServer(be lmtpBackend, opt lmtpOptions, log *slog.Logger) *lmtpServer {
	return &lmtpServer{be: be, opt: opt, log: log, conns: map[*lmtpConn]bool{}}
}

// serve accepts LMTP connections on ln until shutdown.
func (s *lmtpServer) serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
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
		c := &lmtpConn{s: s, conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriter(conn)}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.conns[c] = true
		s.sessions.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.sessions.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			conn.Close()
		}()
	}
}

// shutdown stops accepting, closes the sessions waiting for a command (Postfix keeps idle
// LMTP connections cached) and waits for the transactions under way, each of which ends its
// session after its replies, until ctx ends; then it closes them too (a recipient not
// answered is retried by Postfix).
func (s *lmtpServer) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		if !c.busy {
			c.conn.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.conn.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// lmtpConn is one session.
type lmtpConn struct {
	s    *lmtpServer
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	busy bool // a transaction's data under way (under s.mu)
	tx   *lmtpTx
}

// serve runs the session: the greeting, then one command after another until QUIT, an
// error, a closed connection or the server's shutdown.
func (c *lmtpConn) serve() {
	c.reply(220, "", c.s.opt.hostname+" "+c.s.opt.greeting)
	for {
		if !c.lineWaiting() { // pipelined commands get their replies together
			_ = c.conn.SetWriteDeadline(time.Now().Add(lmtpWriteTimeout))
			if c.w.Flush() != nil {
				return
			}
		}
		line, err := c.line()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.s.log.Warn("lmtp", "error", err.Error())
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		if !c.command(strings.ToUpper(verb), strings.TrimSpace(arg)) {
			_ = c.conn.SetWriteDeadline(time.Now().Add(lmtpWriteTimeout))
			c.w.Flush()
			return
		}
	}
}

// lineWaiting: a whole command line is already buffered (pipelining).
func (c *lmtpConn) lineWaiting() bool {
	b, _ := c.r.Peek(c.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// line reads one command line, without its CRLF.
func (c *lmtpConn) line() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.s.opt.readTimeout))
	b, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(b) > lmtpMaxCmdLine {
		return "", errors.New("command line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// command answers one command; false ends the session.
func (c *lmtpConn) command(verb, arg string) bool {
	switch verb {
	case "LHLO":
		c.lhlo()
	case "MAIL":
		c.mail(arg)
	case "RCPT":
		c.rcpt(arg)
	case "DATA":
		return c.data()
	case "RSET":
		c.tx = nil
		c.reply(250, "2.0.0", "OK")
	case "NOOP":
		c.reply(250, "2.0.0", "OK")
	case "QUIT":
		c.reply(221, "2.0.0", "Bye")
		return false
	default:
		c.reply(502, "5.5.2", "Command not implemented")
	}
	return true
}

func (c *lmtpConn) lhlo() {
	c.w.WriteString("250-" + c.s.opt.hostname + "\r\n250-PIPELINING\r\n250-8BITMIME\r\n")
	if c.s.opt.maxBytes > 0 {
		c.w.WriteString("250-SIZE " + strconv.FormatInt(c.s.opt.maxBytes, 10) + "\r\n")
	}
	c.w.WriteString("250 ENHANCEDSTATUSCODES\r\n")
}

// mail starts a transaction: MAIL FROM:<path> [SIZE=n] [BODY=...]; other parameters are
// ignored (none is advertised that would need them).
func (c *lmtpConn) mail(arg string) {
	if c.tx != nil {
		c.reply(503, "5.5.1", "Nested MAIL command")
		return
	}
	path, params, ok := parsePath(arg, "FROM:")
	if !ok {
		c.reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
		return
	}
	tx := &lmtpTx{from: path}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "SIZE") {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				c.reply(501, "5.5.4", "Bad SIZE parameter")
				return
			}
			tx.size = n
		}
	}
	if max := c.s.opt.maxBytes; max > 0 && tx.size > max {
		c.reply(552, "5.3.4", "Message size exceeds fixed limit")
		return
	}
	c.tx = tx
	c.reply(250, "2.0.0", "OK")
}

func (c *lmtpConn) rcpt(arg string) {
	path, _, ok := parsePath(arg, "TO:")
	switch {
	case c.tx == nil:
		c.reply(503, "5.5.1", "MAIL first")
		return
	case !ok || path == "":
		c.reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
		return
	case len(c.tx.rcpts) >= c.s.opt.maxRcpts:
		c.reply(452, "4.5.3", "Too many recipients")
		return
	}
	if err := c.s.be.rcpt(path); err != nil {
		c.replyErr(err)
		return
	}
	c.tx.rcpts = append(c.tx.rcpts, path)
	c.reply(250, "2.1.5", "OK")
}

// parsePath parses "FROM:<path> params" (or TO:): the path without its angle brackets (a
// bare path is taken too, as Postfix never sends one but people typing do).
func parsePath(arg, prefix string) (string, []string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", nil, false
	}
	arg = strings.TrimSpace(arg[len(prefix):])
	var path string
	if strings.HasPrefix(arg, "<") {
		i := strings.IndexByte(arg, '>')
		if i < 0 {
			return "", nil, false
		}
		path, arg = arg[1:i], arg[i+1:]
	} else {
		path, arg, _ = strings.Cut(arg, " ")
	}
	return path, strings.Fields(arg), true
}

// data runs a transaction: 354, the backend, then one reply per recipient once the whole
// message has arrived; false ends the session (message cut off, or the server shutting
// down).
func (c *lmtpConn) data() bool {
	tx := c.tx
	if tx == nil || len(tx.rcpts) == 0 {
		c.reply(503, "5.5.1", "No valid recipients")
		return true
	}
	c.tx = nil
	c.s.mu.Lock()
	if c.s.closing {
		c.s.mu.Unlock()
		c.reply(421, "4.3.2", "Service shutting down")
		return false
	}
	c.busy = true
	c.s.mu.Unlock()
	defer func() { c.s.mu.Lock(); c.busy = false; c.s.mu.Unlock() }()
	c.reply(354, "", "End data with <CR><LF>.<CR><LF>")
	_ = c.conn.SetWriteDeadline(time.Now().Add(lmtpWriteTimeout))
	if err := c.w.Flush(); err != nil {
		return false
	}
	body := &dataReader{c: c, start: true, max: c.s.opt.maxBytes}
	replies := c.s.be.data(tx, body)
	if err := body.Skip(); err != nil {
		c.s.log.Warn("lmtp: message not received whole: no reply", "error", err.Error())
		return false
	}
	for i := range tx.rcpts {
		var err error
		switch {
		case body.tooLarge:
			err = errTooLarge
		case i < len(replies):
			err = replies[i]
		default:
			err = errors.New("lmtpd: no reply for a recipient")
		}
		c.replyErr(err)
	}
	c.s.mu.Lock()
	closing := c.s.closing
	c.s.mu.Unlock()
	return !closing
}

// replyErr writes the reply of an outcome: 250 for nil, an *smtp.SMTPError as it is,
// pec.Reply's for the others.
func (c *lmtpConn) replyErr(err error) {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		c.reply(250, "2.0.0", "OK")
	case errors.As(err, &se):
		c.reply(se.Code, smtpc.EnhancedText(se.EnhancedCode), se.Message)
	default:
		r := pec.Reply(err)
		c.reply(r.Code, r.Enhanced, r.Text)
	}
}

// reply writes one reply; a text of several lines becomes a multi-line reply.
func (c *lmtpConn) reply(code int, enhanced, text string) {
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		if enhanced != "" {
			l = enhanced + " " + l
		}
		fmt.Fprintf(c.w, "%d%s%s\r\n", code, sep, l)
	}
}

// dataReader reads the message of a transaction (RFC 5321 §4.5.2): a line beginning with a
// dot loses it, the line holding a single dot ends the message. Lines are ended by CRLF; a
// bare LF is data, as for go-smtp's reader. It reads a line (or a buffer of a longer line)
// at a time.
type dataReader struct {
	c     *lmtpConn
	rest  []byte // the part of the current line not returned yet
	start bool   // the next line read begins a line
	cr    bool   // the last piece read ended with CR
	// sinceDeadline counts down the bytes read until the read deadline is moved on.
	sinceDeadline int
	n, max        int64
	done          bool  // the final dot has been read
	err           error // the connection failed: the message did not arrive whole
	tooLarge      bool
}

// Read returns the message's bytes; io.EOF at its end, errTooLarge past the limit, any
// other error when the connection failed.
func (d *dataReader) Read(p []byte) (int, error) {
	if d.tooLarge {
		return 0, errTooLarge
	}
	n := 0
	for n < len(p) {
		if len(d.rest) == 0 {
			if err := d.next(); err != nil {
				if n > 0 && err == io.EOF {
					return n, nil
				}
				return n, err
			}
			continue
		}
		k := copy(p[n:], d.rest)
		d.rest = d.rest[k:]
		n += k
	}
	return n, nil
}

// next reads the next line (or piece of one) into rest; io.EOF after the final dot.
func (d *dataReader) next() error {
	switch {
	case d.err != nil:
		return d.err
	case d.done:
		return io.EOF
	}
	// The deadline is moved on every 64 KiB read, not on every line: setting it costs a
	// timer update, an eighth of the delivery point's CPU for 10 MB messages when it was done
	// per line. A client stalled for the read timeout is still cut off.
	if d.sinceDeadline <= 0 {
		_ = d.c.conn.SetReadDeadline(time.Now().Add(d.c.s.opt.readTimeout))
		d.sinceDeadline = 64 << 10
	}
	b, err := d.c.r.ReadSlice('\n')
	d.sinceDeadline -= len(b)
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
		return err
	}
	// A line begins after CRLF, which a line longer than the buffer may have split
	// between two pieces.
	start, prevCR := d.start, d.cr
	d.cr = b[len(b)-1] == '\r'
	d.start = err == nil && (len(b) >= 2 && b[len(b)-2] == '\r' || len(b) == 1 && prevCR)
	if start && len(b) > 0 && b[0] == '.' {
		if string(b) == ".\r\n" {
			d.done = true
			return io.EOF
		}
		b = b[1:]
	}
	d.n += int64(len(b))
	if d.max > 0 && d.n > d.max {
		d.tooLarge = true
		return errTooLarge
	}
	d.rest = b
	return nil
}

// Skip reads what is left of the message, up to the final dot, and drops it; an error
// when the message did not arrive whole (a message too large is read to its end).
func (d *dataReader) Skip() error {
	d.rest = nil
	d.max = 0 // past the limit, read on to the end
	for {
		switch err := d.next(); {
		case err == io.EOF:
			return nil
		case d.err != nil:
			return d.err
		}
		d.rest = nil
	}
}
