// Package lmtpd is the LMTP adapter of the engine: the listeners Postfix delivers to over
// LMTP. The confirmation listener (confirm.go) receives the confirmation recipients the
// milter adds to every busta it hands back, the proof that Postfix queued it
// (pec/confirm.go); the delivery point (delivery.go) stands between Postfix and Dovecot. Both
// run on the package's own LMTP server (lmtpserver.go), and the delivery point talks to
// Dovecot with the project's own LMTP client (internal/smtpc): both move the message a line
// at a time rather than a byte at a time. go-smtp's error type carries the replies inside
// this package only, and the engine's replies come from pec.Reply, its one table.
package lmtpd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

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
// unknown token). The message body is read and dropped: the token is the proof. Every busta
// is delivered here whole, so the body is skipped a line at a time (lmtpserver.go).
type ConfirmServer struct {
	eng     Confirmer
	log     *slog.Logger
	metrics *prometheus.CounterVec
	srv     *lmtpServer
}

// Limits of the confirmation listener.
const (
	confirmReadTimeout = 5 * time.Minute // a command, or a piece of the body
	confirmMaxRcpts    = 1000
)

// NewConfirmServer builds the listener. hostname is the LMTP greeting name.
func NewConfirmServer(eng Confirmer, hostname string, log *slog.Logger, reg prometheus.Registerer) (*ConfirmServer, error) {
	if eng == nil {
		return nil, errors.New("lmtpd: no engine")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &ConfirmServer{eng: eng, log: log.With("component", "confirm"),
		metrics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pec_confirmations_total",
			Help: "Confirmation recipients delivered by Postfix, by result (released, again, late, unknown, tempfail).",
		}, []string{"result"})}
	if reg != nil {
		if err := reg.Register(c.metrics); err != nil {
			return nil, err
		}
	}
	c.srv = newLMTPServer(c, lmtpOptions{hostname: hostname, greeting: "LMTP confirmation listener ready",
		readTimeout: confirmReadTimeout, maxRcpts: confirmMaxRcpts}, c.log)
	return c, nil
}

// Serve accepts LMTP connections on ln until Shutdown.
func (c *ConfirmServer) Serve(ln net.Listener) error { return c.srv.serve(ln) }

// Shutdown stops accepting and waits for the transactions under way until ctx ends; then it
// closes them (a confirmation not answered is retried by Postfix).
func (c *ConfirmServer) Shutdown(ctx context.Context) error { return c.srv.shutdown(ctx) }

// rcpt accepts the confirmation recipients only.
func (c *ConfirmServer) rcpt(addr string) error {
	if !c.eng.IsConfirmation(addr) {
		c.metrics.WithLabelValues("unknown").Inc()
		return pec.ErrUnknownConfirmation
	}
	return nil
}

// data skips the message and then releases the held step of each recipient, once the whole
// message has arrived (a confirmation for a message Postfix could not deliver whole is no
// proof).
func (c *ConfirmServer) data(tx *lmtpTx, body *dataReader) []error {
	if err := body.Skip(); err != nil {
		c.log.Warn("lmtp: message not received whole: nothing confirmed", "error", err.Error())
		return nil
	}
	out := make([]error, len(tx.rcpts))
	for i, rcpt := range tx.rcpts {
		out[i] = c.confirm(rcpt)
	}
	return out
}

// confirm releases one recipient's held step and counts and logs the result.
func (c *ConfirmServer) confirm(rcpt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h, err := c.eng.Confirm(ctx, rcpt)
	cancel()
	result := "released"
	switch {
	case err != nil && pec.Reply(err).Temporary():
		result = "tempfail"
		c.log.Error("confirmation not recorded; Postfix retries", "rcpt", rcpt, "error", err)
	case err != nil:
		result = "unknown"
		c.log.Warn("confirmation with an unknown token", "rcpt", rcpt)
	case !h.Now:
		result = "again"
	case h.Late:
		result = "late"
		c.log.Warn("held step confirmed after its expiry: released late", "identificativo", h.Identificativo)
	}
	if err == nil {
		c.log.Info("held step released", "identificativo", h.Identificativo, "result", result)
	}
	c.metrics.WithLabelValues(result).Inc()
	return err
}
