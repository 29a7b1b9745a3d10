package reinject

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/gestore-pec/gestore/pec/store"
)

// conn is one SMTP session with the reinjection listener.
type conn struct {
	c       *smtp.Client
	nc      net.Conn
	stop    func() bool
	timeout time.Duration
}

func (d *Drainer) dial(ctx context.Context) (*conn, error) {
	dl := net.Dialer{Timeout: d.cfg.Timeout}
	nc, err := dl.DialContext(ctx, "tcp", d.cfg.Addr)
	if err != nil {
		return nil, err
	}
	// A cancelled ctx closes the connection at once, as a killed process would.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(d.cfg.Timeout)) //nolint:errcheck
	c := smtp.NewClient(nc)
	c.CommandTimeout = d.cfg.Timeout
	c.SubmissionTimeout = d.cfg.Timeout
	if err := c.Hello(d.cfg.Helo); err != nil {
		stop()
		c.Close()
		return nil, err
	}
	return &conn{c: c, nc: nc, stop: stop, timeout: d.cfg.Timeout}, nil
}

func (c *conn) close() {
	c.stop()
	c.c.Close()
}

func (c *conn) quit() {
	c.nc.SetDeadline(time.Now().Add(c.timeout)) //nolint:errcheck
	c.c.Quit()                                  //nolint:errcheck
	c.close()
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

// send runs one SMTP transaction (MAIL, RCPT..., DATA) for one item.
func (c *conn) send(it *store.OutboxItem) result {
	// One deadline for the whole transaction: a hanging server cannot hold the item for
	// longer than a few timeouts, well inside the lease.
	c.nc.SetDeadline(time.Now().Add(3 * c.timeout)) //nolint:errcheck
	if err := c.c.Mail(it.From, nil); err != nil {
		return result{err: fmt.Errorf("MAIL FROM: %w", err), permanent: permanent(err)}
	}
	var refused []string
	accepted := 0
	for _, r := range it.Rcpts {
		err := c.c.Rcpt(r, nil)
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
	w, err := c.c.Data()
	if err != nil {
		return result{err: fmt.Errorf("DATA: %w", err), permanent: permanent(err)}
	}
	if _, err := w.Write(it.Raw); err != nil {
		return result{err: fmt.Errorf("DATA: %w", err)}
	}
	if err := w.Close(); err != nil {
		return result{err: fmt.Errorf("end of DATA: %w", err), permanent: permanent(err)}
	}
	return result{note: strings.Join(refused, "; ")}
}
