package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// session is one milter connection (one SMTP connection of Postfix). Postfix may run several
// transactions on it; every field below role is per transaction.
type session struct {
	milter.NoOpMilter
	s    *Server
	role string

	from, login string
	rcpts       []string
	fields      []fieldRef     // original header fields, for deleting them
	perName     map[string]int // fields seen so far per lower-case name
	buf         bytes.Buffer   // the message as received, CRLF
	held        int64          // bytes of buf accounted in Server.buffered
	tooLarge    bool
	overBudget  bool // Server.MaxBuffered reached: temp-fail this transaction
}

// fieldRef is one original header field: its name and its 1-based index among the fields of
// the same name (case-insensitive), which is how SMFIR_CHGHEADER addresses it.
type fieldRef struct {
	name  string
	index int
}

func (x *session) reset() {
	if x.held > 0 {
		x.s.release(x.held)
		x.held = 0
	}
	x.from, x.login, x.rcpts, x.fields, x.perName, x.tooLarge, x.overBudget = "", "", nil, nil, nil, false, false
	if x.buf.Cap() > 1<<20 {
		x.buf = bytes.Buffer{} // do not keep a large buffer for an idle connection
	}
	x.buf.Reset()
}

func (x *session) Connect(_, _ string, _ uint16, _ string, m milter.Modifier) (*milter.Response, error) {
	x.role = m.Get(milter.MacroDaemonName)
	return milter.RespContinue, nil
}

func (x *session) MailFrom(from, _ string, m milter.Modifier) (*milter.Response, error) {
	x.reset()
	x.from = milter.RemoveAngle(from)
	x.login = m.Get(milter.MacroAuthAuthen)
	if x.role != RoleAccess && x.role != RoleReception {
		// Misconfiguration: refuse early (4xx), so Postfix keeps nothing it cannot process.
		x.s.log.Error("milter called by a listener with an unknown {daemon_name}: set -o milter_macro_daemon_name=pec-access (submission) or pec-reception (MX) in master.cf",
			"daemon_name", x.role)
		x.s.m.submissions.WithLabelValues(roleLabel(x.role), outcomeMisconfigure).Inc()
		resp, _ := toResponse(errMisconfigured)
		return resp, nil
	}
	return milter.RespContinue, nil
}

func (x *session) RcptTo(rcpt, _ string, _ milter.Modifier) (*milter.Response, error) {
	x.rcpts = append(x.rcpts, milter.RemoveAngle(rcpt))
	return milter.RespContinue, nil
}

func (x *session) Data(_ milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

// Header rebuilds the field as received. With OptHeaderLeadingSpace Postfix sends the value
// exactly as written after the colon; continuation lines come separated by LF, which is put
// back to CRLF (RFC 5322 §2.2.3 folding, SMTP line ends).
func (x *session) Header(name, value string, _ milter.Modifier) (*milter.Response, error) {
	if x.role != RoleAccess || x.tooLarge || x.overBudget {
		return milter.RespContinue, nil
	}
	if x.perName == nil {
		x.perName = map[string]int{}
	}
	key := strings.ToLower(name)
	x.perName[key]++
	x.fields = append(x.fields, fieldRef{name: name, index: x.perName[key]})
	v := lfToCRLF(value)
	if !x.hold(len(name) + len(v) + 3) {
		return milter.RespContinue, nil
	}
	x.buf.WriteString(name)
	x.buf.WriteByte(':')
	x.buf.WriteString(v)
	x.buf.WriteString("\r\n")
	x.checkSize()
	return milter.RespContinue, nil
}

// hold accounts n bytes about to be buffered; false (and the transaction marked) when the
// server's memory budget is exhausted.
func (x *session) hold(n int) bool {
	if x.overBudget {
		return false
	}
	if !x.s.reserve(int64(n)) {
		x.overBudget = true
		x.buf = bytes.Buffer{}
		return false
	}
	x.held += int64(n)
	return true
}

func (x *session) Headers(_ milter.Modifier) (*milter.Response, error) {
	if x.role == RoleAccess && !x.tooLarge && x.hold(2) {
		x.buf.WriteString("\r\n")
	}
	return milter.RespContinue, nil
}

func (x *session) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	if x.role != RoleAccess {
		if m.Protocol()&milter.OptSkip != 0 {
			return milter.RespSkip, nil
		}
		return milter.RespContinue, nil
	}
	if !x.tooLarge && x.hold(len(chunk)) {
		x.buf.Write(chunk)
		x.checkSize()
	}
	if x.tooLarge {
		return x.refuseTooLarge(m)
	}
	if x.overBudget {
		return x.refuseBusy(m)
	}
	return milter.RespContinue, nil
}

// refuseBusy temp-fails a transaction that would pass the memory budget: the client retries
// when other large messages are through.
func (x *session) refuseBusy(m milter.Modifier) (*milter.Response, error) {
	resp, outcome := toResponse(errBusy)
	x.s.m.submissions.WithLabelValues(RoleAccess, outcome).Inc()
	x.s.log.Warn("message temp-failed: milter.max_buffered reached", "queue_id", m.Get(milter.MacroQueueId),
		"max_buffered", x.s.cfg.MaxBuffered, "mail_from", x.from)
	x.reset()
	return resp, nil
}

func (x *session) checkSize() {
	if int64(x.buf.Len()) > x.s.cfg.MaxSize {
		x.tooLarge = true
		x.buf = bytes.Buffer{}
	}
}

func (x *session) refuseTooLarge(m milter.Modifier) (*milter.Response, error) {
	err := errTooLarge{limit: x.s.cfg.MaxSize}
	resp, outcome := toResponse(err)
	x.s.m.submissions.WithLabelValues(RoleAccess, outcome).Inc()
	x.s.log.Info("message refused", "queue_id", m.Get(milter.MacroQueueId), "outcome", outcome,
		"error", err.Error(), "mail_from", x.from, "rcpts", len(x.rcpts))
	x.reset()
	return resp, nil
}

func (x *session) Abort(_ milter.Modifier) error {
	x.reset()
	return nil
}

func (x *session) Cleanup(_ milter.Modifier) {
	x.reset()
}

// EndOfMessage makes the one engine call of the transaction and answers Postfix.
func (x *session) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	defer x.reset()
	start := time.Now()
	log := x.s.log.With("queue_id", m.Get(milter.MacroQueueId), "role", roleLabel(x.role))
	if x.role == RoleReception {
		// The reception point is a later issue: pass the message through untouched.
		log.Warn("reception point not implemented yet: message accepted unchanged")
		x.s.m.submissions.WithLabelValues(RoleReception, outcomePassthrough).Inc()
		return milter.RespAccept, nil
	}
	if x.role != RoleAccess {
		resp, _ := toResponse(errMisconfigured)
		return resp, nil
	}
	if x.tooLarge {
		return x.refuseTooLarge(m)
	}
	if x.overBudget {
		return x.refuseBusy(m)
	}
	if !x.s.begin() {
		log.Warn("shutting down: transaction temp-failed")
		x.s.m.submissions.WithLabelValues(RoleAccess, outcomeTempfail).Inc()
		resp, _ := toResponse(errors.New("shutting down"))
		return resp, nil
	}
	defer x.s.inflight.Done()
	x.s.m.inflight.Inc()
	defer x.s.m.inflight.Dec()

	sub := &pec.Submission{QueueID: m.Get(milter.MacroQueueId), Login: x.login, MailFrom: x.from,
		Rcpts: x.rcpts, Message: x.buf.Bytes()}
	res, err := x.s.submit(m, sub)
	if err == nil {
		if err = replaceMessage(m, x.fields, res.Busta); err != nil {
			// The accettazione is committed but Postfix will not get our answer: it will
			// temp-fail and the client will retry (a second transaction).
			log.Error("cannot hand the busta to Postfix after commit", "identificativo", res.Identificativo, "error", err)
			x.observe(start, outcomeTempfail)
			return nil, err
		}
		x.observe(start, outcomeAccepted)
		log.Info("pec accepted", "identificativo", res.Identificativo, "outcome", outcomeAccepted,
			"mail_from", x.from, "rcpts", len(x.rcpts), "certified", len(res.Certified), "external", len(res.External),
			"size", len(sub.Message), "duration", time.Since(start), "stages", res.Timings)
		return milter.RespAccept, nil
	}
	resp, outcome := toResponse(err)
	x.observe(start, outcome)
	x.logFailure(log, outcome, err, len(sub.Message), time.Since(start))
	return resp, nil
}

func (x *session) observe(start time.Time, outcome string) {
	x.s.m.submissions.WithLabelValues(RoleAccess, outcome).Inc()
	x.s.m.eom.WithLabelValues(RoleAccess).Observe(time.Since(start).Seconds())
}

func (x *session) logFailure(log *slog.Logger, outcome string, err error, size int, d time.Duration) {
	attrs := []any{"outcome", outcome, "mail_from", x.from, "login", x.login, "rcpts", len(x.rcpts), "size", size, "duration", d}
	var ref *pec.Refused
	if errors.As(err, &ref) {
		attrs = append(attrs, "identificativo", ref.Identificativo, "reason", ref.Reason, "stages", ref.Timings)
		if ref.Virus != "" {
			attrs = append(attrs, "virus", ref.Virus)
		}
		log.Info("pec not accepted", attrs...)
		return
	}
	attrs = append(attrs, "error", err.Error())
	if outcome == outcomeTempfail {
		log.Error("pec temporary failure", attrs...)
		return
	}
	log.Info("pec rejected", attrs...)
}

// submit runs the engine with a deadline, sending progress packets so that Postfix keeps
// waiting. If Postfix goes away, the engine's context is cancelled (nothing is committed
// after that point unless the commit had already started).
func (s *Server) submit(m milter.Modifier, sub *pec.Submission) (*pec.Submitted, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	type result struct {
		res *pec.Submitted
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("engine panic", "panic", fmt.Sprint(p), "queue_id", sub.QueueID)
				ch <- result{nil, fmt.Errorf("engine panic: %v", p)}
			}
		}()
		r, err := s.eng.Submit(ctx, sub)
		ch <- result{r, err}
	}()
	t := time.NewTicker(s.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			if r.err == nil && (r.res == nil || len(r.res.Busta) == 0) {
				return nil, errors.New("engine returned no busta")
			}
			return r.res, r.err
		case <-t.C:
			if err := m.Progress(); err != nil && !errors.Is(err, milter.ErrVersionTooLow) {
				cancel()
				r := <-ch
				if r.err == nil {
					return nil, fmt.Errorf("postfix went away after the commit: %w", err)
				}
				return nil, r.err
			}
		}
	}
}

// replaceMessage turns the queued message into the busta: every original header field is
// deleted (last first, so the indexes of the earlier ones stay valid whether or not the MTA
// renumbers after a deletion), the busta's fields are appended in order, and the body is
// replaced. The envelope is not touched (RFC 6109 §3.1.5).
func replaceMessage(m milter.Modifier, fields []fieldRef, busta []byte) error {
	hdr, body, err := pec.SplitHeader(busta)
	if err != nil {
		return fmt.Errorf("busta: %w", err)
	}
	for i := len(fields) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(fields[i].index, fields[i].name, ""); err != nil {
			return err
		}
	}
	for _, f := range hdr {
		// With OptHeaderLeadingSpace the value is sent as written after the colon, without
		// the final CRLF; the folding CRLFs become LF on the wire (milter protocol).
		v := string(bytes.TrimSuffix(f.Raw[len(f.Name)+1:], []byte("\r\n")))
		if err := m.AddHeader(f.Name, v); err != nil {
			return err
		}
	}
	return m.ReplaceBody(bytes.NewReader(body))
}

// lfToCRLF turns the LF line separators of a milter header value into CRLF.
func lfToCRLF(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	v = strings.ReplaceAll(v, "\r\n", "\n")
	return strings.ReplaceAll(v, "\n", "\r\n")
}
