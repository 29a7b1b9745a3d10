// Package lmtpd is the LMTP adapter of the engine: the listeners Postfix delivers to over
// LMTP. The confirmation listener (confirm.go) receives the confirmation recipients the
// milter adds to every busta it hands back, the proof that Postfix queued it
// (pec/confirm.go); the delivery point between Postfix and Dovecot comes next to it. go-smtp
// types stay inside this package, and replies come from pec.Reply, the engine's one table.
package lmtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
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
type ConfirmServer struct {
	eng     Confirmer
	log     *slog.Logger
	srv     *smtp.Server
	metrics *prometheus.CounterVec
}

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
	// MaxMessageBytes 0: the busta is read and dropped whatever its size.
	c.srv = newLMTPServer(c, hostname, 5*time.Minute, 1000, 0, c.log)
	return c, nil
}

// newLMTPServer is the LMTP server both listeners of this package run: backend's sessions,
// errors to log, a minute to write a reply.
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
func (c *ConfirmServer) Serve(ln net.Listener) error { return serve(c.srv, ln) }

// Shutdown stops accepting and waits for the sessions under way until ctx ends.
func (c *ConfirmServer) Shutdown(ctx context.Context) error { return c.srv.Shutdown(ctx) }

// NewSession implements smtp.Backend.
func (c *ConfirmServer) NewSession(_ *smtp.Conn) (smtp.Session, error) {
	return &confirmSession{c: c}, nil
}

type confirmSession struct {
	c     *ConfirmServer
	rcpts []string
}

func (s *confirmSession) Reset()        { s.rcpts = nil }
func (s *confirmSession) Logout() error { return nil }

func (s *confirmSession) Mail(string, *smtp.MailOptions) error { s.rcpts = nil; return nil }

func (s *confirmSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if !s.c.eng.IsConfirmation(to) {
		s.c.metrics.WithLabelValues("unknown").Inc()
		return toSMTP(pec.ErrUnknownConfirmation)
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *confirmSession) Data(r io.Reader) error {
	return errors.New("lmtpd: the confirmation listener speaks LMTP only")
}

// LMTPData releases the held step of each recipient once the whole message has arrived (a
// confirmation for a message Postfix could not deliver whole is no proof).
func (s *confirmSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	for _, rcpt := range s.rcpts {
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
		status.SetStatus(rcpt, toSMTP(err))
	}
	return nil
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
