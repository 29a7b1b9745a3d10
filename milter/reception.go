package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// reception is the handler of the MX listener ({daemon_name} pec-reception): the reception
// point. One engine call per transaction (pec.Engine.Receive); what it returns becomes the
// milter's answer: accept unchanged (a valid receipt, a valid busta with the confirmation
// recipient that releases the presa in carico), replace the message (the busta di anomalia),
// redirect to the service mailbox, discard (an infected busta, a retry of a busta already
// queued), or refuse (pec.Reply).
type reception struct{ s *Server }

func (reception) point() string { return RoleReception }
func (reception) buffers() bool { return true }

// stream: the reception point scans at end-of-message (pec.Engine.Receive).
func (reception) stream(*session) *pec.ScanStream { return nil }

func (r reception) endOfMessage(x *session, m milter.Modifier, log *slog.Logger) (*milter.Response, error) {
	s := r.s
	start := time.Now()
	in := &pec.Incoming{QueueID: m.Get(milter.MacroQueueId), MailFrom: x.from, Rcpts: x.rcpts, Message: x.buf}
	res, err := call(s, m, in.QueueID, nil, func(ctx context.Context) (*pec.Received, error) { return s.eng.Receive(ctx, in) })
	switch {
	case err == nil && res == nil:
		err = errors.New("engine returned no outcome")
	case err == nil && time.Since(start) > s.cfg.Timeout:
		// Past the deadline Postfix has given up or is about to: answer 4xx. A held presa in
		// carico expires unconfirmed; the sending MTA retries.
		err = &pec.Temporary{Op: "deadline", Err: fmt.Errorf("end-of-message took %s, above milter.timeout", time.Since(start))}
	}
	if err == nil {
		err = apply(m, x, res)
	}
	if err != nil {
		resp, outcome := toResponse(err)
		x.observe(start, outcome)
		var rej *pec.Rejected
		class, reason := "unknown", ""
		if errors.As(err, &rej) {
			class, reason = rej.Class, rej.Reason
		}
		s.m.observeReception(class, outcome, reason, res)
		x.logFailure(log, outcome, err, len(in.Message), time.Since(start))
		return resp, nil
	}
	if res.Confirm != "" {
		s.eng.Issued(res.Confirm)
	}
	x.observe(start, res.Outcome)
	s.m.observeReception(res.Class, res.Outcome, res.Reason, res)
	attrs := []any{"class", res.Class, "outcome", res.Outcome, "kind", res.Kind.String(), "mail_from", x.from,
		"rcpts", len(x.rcpts), "local", len(res.Local), "size", len(in.Message), "duration", time.Since(start), "stages", res.Timings}
	if res.Identificativo != "" {
		attrs = append(attrs, "identificativo", res.Identificativo)
	}
	if res.Reason != "" {
		attrs = append(attrs, "reason", res.Reason, "detail", res.Detail)
	}
	if res.Virus != "" {
		attrs = append(attrs, "virus", res.Virus)
	}
	if res.Flags != "" {
		attrs = append(attrs, "content_flags", res.Flags)
	}
	if res.Redirect != "" || len(res.Drop) > 0 {
		attrs = append(attrs, "redirect", res.Redirect, "dropped", len(res.Drop))
	}
	log.Info("pec received", append(attrs, "retry", res.Retry)...)
	if res.Discard {
		return milter.RespDiscard, nil
	}
	return milter.RespAccept, nil
}

// apply makes Postfix queue what Receive decided: the busta di anomalia in place of the
// message, the service mailbox in place of users, the confirmation recipient (NOTIFY=NEVER, so
// its delivery status never produces a DSN; pec/confirm.go). The envelope sender is never
// changed (RFC 6109 §3.2.2: routing data stay unchanged).
func apply(m milter.Modifier, x *session, res *pec.Received) error {
	if res.Discard {
		return nil
	}
	if res.Replace != nil {
		if err := replaceMessage(m, x.fields, res.Replace); err != nil {
			return err
		}
	}
	for _, r := range res.Drop {
		if err := m.DeleteRecipient(r); err != nil {
			return err
		}
	}
	if res.Redirect != "" {
		if err := m.AddRecipient(res.Redirect, ""); err != nil {
			return err
		}
	}
	if res.Confirm != "" {
		return m.AddRecipient(res.Confirm, "NOTIFY=NEVER")
	}
	return nil
}
