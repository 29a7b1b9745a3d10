package reinject

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/internal/smtpc"
	"github.com/gestore-pec/gestore/pec/store"
)

// conn is one SMTP session with the reinjection listener (package smtpc: the message is
// written dot-stuffed from whole buffers; go-smtp's client wrote it a byte at a time, 7 % of
// the CPU of a reception point sending 10 MB consegne, issue 19).
type conn struct {
	c       *smtpc.Client
	bc      *boundedConn
	timeout time.Duration
	grace   time.Duration
}

// dial connects and greets. A cancelled ctx aborts the connection attempt; once connected,
// the session is never cut by ctx (see send).
func (d *Drainer) dial(ctx context.Context, listener string) (*conn, error) {
	dl := net.Dialer{Timeout: d.cfg.Timeout}
	network, addr, _ := dialAddr(listener) // checked by New
	nc, err := dl.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	bc := &boundedConn{Conn: nc}
	bc.setLimit(time.Now().Add(d.cfg.Timeout))
	c, err := smtpc.Dial(bc, false, d.cfg.Helo, d.cfg.Timeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &conn{c: c, bc: bc, timeout: d.cfg.Timeout, grace: d.cfg.StopGrace}, nil
}

// dialAddr splits Config.Addr: "unix:/path" (Postfix's smtpd on a unix socket, whose file
// permissions say who may inject) or host:port.
func dialAddr(a string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("reinject.addr: %q: the socket path must be absolute", a)
		}
		return "unix", p, nil
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return "", "", fmt.Errorf("reinject.addr: %q: want unix:/path or host:port", a)
	}
	return "tcp", a, nil
}

func (c *conn) close() { c.c.Close() }

func (c *conn) quit() {
	c.bc.setLimit(time.Now().Add(c.grace))
	c.c.Quit() //nolint:errcheck // closes the connection too
}

type result struct {
	err       error
	permanent bool
	note      string // recipients refused permanently while others were accepted
}

func permanent(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code >= 500 && se.Code < 600
}

// replied reports whether err is a reply of the server (as opposed to a timeout or a broken
// connection, after which the outcome of the transaction is unknown).
func replied(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// send runs one SMTP transaction (MAIL, RCPT..., DATA) for one item. The whole transaction
// has 3 x timeout, well inside the lease. When ctx ends meanwhile (a graceful stop) the
// transaction is not cut, as closing the connection after the final dot would leave a
// message Postfix may have queued unrecorded, to be sent again: its time is shortened to
// the stop grace instead.
func (c *conn) send(ctx context.Context, it *store.OutboxItem) result {
	c.bc.setLimit(time.Now().Add(3 * c.timeout))
	stop := context.AfterFunc(ctx, func() { c.bc.shorten(time.Now().Add(c.grace)) })
	defer stop()
	if err := c.c.Mail(it.From); err != nil {
		return result{err: fmt.Errorf("MAIL FROM: %w", err), permanent: permanent(err)}
	}
	var refused []string
	accepted := 0
	for _, r := range it.Rcpts {
		err := c.c.Rcpt(r)
		switch {
		case err == nil:
			accepted++
		case permanent(err):
			// A recipient refused for good does not hold back the others.
			refused = append(refused, fmt.Sprintf("%s: %v", r, err))
		default:
			return result{err: fmt.Errorf("RCPT TO %s: %w", r, err)}
		}
	}
	if accepted == 0 {
		return result{err: fmt.Errorf("every recipient refused: %s", strings.Join(refused, "; ")), permanent: true}
	}
	if err := c.c.Data(it.Raw); err != nil {
		return result{err: fmt.Errorf("DATA: %w", err), permanent: permanent(err)}
	}
	if err := c.c.Reply(); err != nil {
		return result{err: fmt.Errorf("end of DATA: %w", err), permanent: permanent(err)}
	}
	return result{note: strings.Join(refused, "; ")}
}

// boundedConn caps every deadline at a limit. The client sets a deadline per command (and
// one for writing the data, one for its reply): the limit is what bounds a whole
// transaction, and what a graceful stop shortens.
type boundedConn struct {
	net.Conn
	mu    sync.Mutex
	limit time.Time // no deadline later than this; zero: none
	asked time.Time // the deadline last set by the SMTP client; zero: none
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func (b *boundedConn) SetDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = t
	return b.Conn.SetDeadline(earliest(t, b.limit))
}

func (b *boundedConn) SetReadDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Conn.SetReadDeadline(earliest(t, b.limit))
}

func (b *boundedConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Conn.SetWriteDeadline(earliest(t, b.limit))
}

// setLimit replaces the limit (a new transaction).
func (b *boundedConn) setLimit(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = t
	b.Conn.SetDeadline(earliest(b.asked, t)) //nolint:errcheck // a closed connection fails the next I/O anyway
}

// shorten moves the limit earlier, never later.
func (b *boundedConn) shorten(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = earliest(b.limit, t)
	b.Conn.SetDeadline(earliest(b.asked, b.limit)) //nolint:errcheck
}
