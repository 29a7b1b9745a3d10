package lmtpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/internal/smtpc"
	"github.com/gestore-pec/gestore/pec"
)

// Dovecot is the LMTP client of the delivery point: it hands a message to Dovecot's LMTP for
// some recipients and returns Dovecot's answer for each (RFC 2033 §4.2: LMTP answers per
// recipient after DATA, which is what lets the delivery point issue a receipt only for the
// mailboxes that really stored the message). Connections are kept for reuse (RSET between
// transactions is implicit in a new MAIL), at most MaxIdle of them.
type Dovecot struct {
	network, addr string
	hostname      string
	timeout       time.Duration
	maxIdle       int
	rtt           prometheus.Histogram

	mu   sync.Mutex
	idle []*smtpc.Client
}

// DovecotConfig configures the client.
type DovecotConfig struct {
	// Addr is Dovecot's LMTP listener: "host:port", "inet:host:port" or "unix:/path".
	Addr string
	// Hostname is the LHLO name.
	Hostname string
	// Timeout bounds each command and the wait for the answers after DATA. Default 5m.
	Timeout time.Duration
	// MaxIdle connections are kept for reuse; default 8.
	MaxIdle int
}

// NewDovecot validates cfg and registers the round-trip histogram pec_dovecot_lmtp_seconds
// on reg (nil: not registered).
func NewDovecot(cfg DovecotConfig, reg prometheus.Registerer) (*Dovecot, error) {
	network, addr := "tcp", strings.TrimPrefix(cfg.Addr, "inet:")
	if p, ok := strings.CutPrefix(cfg.Addr, "unix:"); ok {
		network, addr = "unix", p
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("lmtpd: dovecot address %q: want host:port or unix:/path", cfg.Addr)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.MaxIdle == 0 {
		cfg.MaxIdle = 8
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	rtt := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_dovecot_lmtp_seconds",
		Help:    "Round trip of one delivery to Dovecot's LMTP (MAIL to the last per-recipient answer).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	if reg != nil {
		if err := reg.Register(rtt); err != nil {
			return nil, fmt.Errorf("lmtpd: metrics: %w", err)
		}
	}
	return &Dovecot{network: network, addr: addr, hostname: cfg.Hostname, timeout: cfg.Timeout, maxIdle: cfg.MaxIdle, rtt: rtt}, nil
}

// Close closes the idle connections.
func (dv *Dovecot) Close() error {
	dv.mu.Lock()
	idle := dv.idle
	dv.idle = nil
	dv.mu.Unlock()
	for _, c := range idle {
		_ = c.Quit()
	}
	return nil
}

// get returns an idle connection, or dials a new one (LHLO included). fresh tells which.
func (dv *Dovecot) get(ctx context.Context) (c *smtpc.Client, fresh bool, err error) {
	dv.mu.Lock()
	if n := len(dv.idle); n > 0 {
		c = dv.idle[n-1]
		dv.idle = dv.idle[:n-1]
	}
	dv.mu.Unlock()
	if c != nil {
		return c, false, nil
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, dv.network, dv.addr)
	if err != nil {
		return nil, true, err
	}
	if c, err = smtpc.Dial(conn, true, dv.hostname, dv.timeout); err != nil {
		conn.Close()
		return nil, true, err
	}
	return c, true, nil
}

func (dv *Dovecot) put(c *smtpc.Client) {
	dv.mu.Lock()
	defer dv.mu.Unlock()
	if len(dv.idle) < dv.maxIdle {
		dv.idle = append(dv.idle, c)
		return
	}
	go c.Quit() //nolint:errcheck
}

// Deliver hands msg from the reverse path from to Dovecot for rcpts, and returns Dovecot's
// answer for each recipient. Recipients Dovecot refuses at RCPT (unknown user: 550 5.1.1)
// get that answer; the others get their answer after DATA. When the connection fails before
// the end of the data, nothing was stored (Err set); when it fails after, the answers not
// received are Unknown (the message may be in the mailbox).
func (dv *Dovecot) Deliver(ctx context.Context, from string, rcpts []string, msg []byte) map[string]pec.MailboxResult {
	start := time.Now()
	defer func() { dv.rtt.Observe(time.Since(start).Seconds()) }()
	res := make(map[string]pec.MailboxResult, len(rcpts))
	c, err := dv.mail(ctx, from)
	if err != nil {
		return failAll(res, rcpts, err, false)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() }) // a cancelled delivery breaks the connection
	defer stop()
	var accepted []string
	for _, r := range rcpts {
		err := c.Rcpt(r)
		var se *smtp.SMTPError
		switch {
		case err == nil:
			accepted = append(accepted, r)
		case errors.As(err, &se):
			res[r] = smtpResult(se)
		default:
			c.Close()
			return failAll(res, rcpts, err, false)
		}
	}
	if len(accepted) == 0 {
		if err := c.Reset(); err == nil && stop() {
			dv.put(c)
		} else {
			c.Close()
		}
		return res
	}
	if ok := dv.data(c, accepted, msg, res); ok && stop() {
		dv.put(c)
	} else {
		c.Close()
	}
	return res
}

// mail starts a transaction. A reused connection that turns out to be closed (Dovecot drops
// idle LMTP connections, silently or with 421) is dropped and the next one is tried, down to
// a fresh dial: nothing was sent on it, so this is safe. All the idle connections of a quiet
// spell are usually gone together; giving up after the second (as before) answered 451 to
// the first deliveries after every pause (seen in the lmtp bench after 5 s of quiet).
func (dv *Dovecot) mail(ctx context.Context, from string) (*smtpc.Client, error) {
	for {
		c, fresh, err := dv.get(ctx)
		if err != nil {
			return nil, err
		}
		err = c.Mail(from)
		if err == nil {
			return c, nil
		}
		c.Close()
		var se *smtp.SMTPError
		if fresh || errors.As(err, &se) && se.Code != 421 {
			return nil, err
		}
	}
}

// data sends the message and reads the per-recipient answers into res; it reports whether
// the connection can be reused.
func (dv *Dovecot) data(c *smtpc.Client, accepted []string, msg []byte, res map[string]pec.MailboxResult) bool {
	err := c.Data(msg)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		for _, r := range accepted {
			res[r] = smtpResult(se) // DATA refused: nothing sent
		}
		return true
	}
	if err != nil {
		failAll(res, accepted, err, false) // the final dot was never sent whole: nothing stored
		return false
	}
	for i, r := range accepted {
		err := c.Reply()
		switch {
		case err == nil:
			res[r] = pec.Stored
		case errors.As(err, &se) && se.Code == 421:
			// RFC 5321 §3.8: 421 is the server closing the channel (Dovecot shutting down
			// answers it in place of the next recipient's reply), not an answer for r: the
			// message may have been stored. Postfix treats it the same way ("message may be
			// sent more than once").
			for _, r := range accepted[i:] {
				res[r] = pec.MailboxResult{Err: fmt.Errorf("Dovecot closed the session after the data: %d %s", se.Code, se.Message), Unknown: true}
			}
			return false
		case errors.As(err, &se):
			res[r] = smtpResult(se)
		default:
			// The data may have reached Dovecot whole: the answers not read are unknown.
			for _, r := range accepted[i:] {
				res[r] = pec.MailboxResult{Err: fmt.Errorf("no answer after DATA: %w", err), Unknown: true}
			}
			return false
		}
	}
	return true
}

func failAll(res map[string]pec.MailboxResult, rcpts []string, err error, unknown bool) map[string]pec.MailboxResult {
	for _, r := range rcpts {
		if _, ok := res[r]; !ok {
			res[r] = pec.MailboxResult{Err: err, Unknown: unknown}
		}
	}
	return res
}

func smtpResult(se *smtp.SMTPError) pec.MailboxResult {
	return pec.MailboxResult{Code: se.Code, Text: se.Message, Enhanced: smtpc.EnhancedText(se.EnhancedCode)}
}
