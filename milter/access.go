package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// access is the handler of the submission listener ({daemon_name} pec-access): the access
// point. One engine call per transaction (pec.Engine.Submit); the busta it returns replaces
// the message in Postfix's queue.
type access struct{ s *Server }

func (access) point() string { return RoleAccess }
func (access) buffers() bool { return true }

func (a access) stream(x *session) *pec.ScanStream { return a.s.eng.StreamScan(x.login, x.rcpts) }

func (a access) endOfMessage(x *session, m milter.Modifier, log *slog.Logger) (*milter.Response, error) {
	s := a.s
	start := time.Now()
	sub := &pec.Submission{QueueID: m.Get(milter.MacroQueueId), Login: x.login, MailFrom: x.from,
		Rcpts: x.rcpts, Message: x.buf, Scan: x.scan}
	// The engine makes copies while it works (the busta, a 7-bit re-encoding): account for
	// them too, so that a few large messages at once cannot exhaust the process (issue 12
	// item 11). Without room, the transaction is temp-failed like an over-budget buffer.
	work := engineWork * int64(len(sub.Message))
	if !s.reserve(work) {
		return x.refuseBusy(m)
	}
	early := &earlyHand{err: errNotHanded}
	side := make(chan func(), 1)
	offered := false // touched only by the engine's goroutine, where Prepared is called
	sub.Prepared = func(busta [][]byte, confirm string) {
		// At most one busta goes early: the engine promises it, and this keeps it true here.
		if !offered {
			offered = true
			side <- func() { early.err = handBack(m, x.fields, busta, confirm) }
		}
	}
	res, err := s.submit(m, sub, side)
	s.release(work)
	if err == nil && time.Since(start) > s.cfg.Timeout {
		// Past the deadline Postfix has given up or is about to: answer 4xx. The late result
		// is held in the store and nothing is attested: without the busta in Postfix's queue
		// its confirmation never comes and the held step expires.
		err = &pec.Temporary{Op: "deadline", Err: fmt.Errorf("end-of-message took %s, above milter.timeout", time.Since(start))}
	}
	if err == nil && res.Discard {
		// A retry of a submission whose busta Postfix already queued: the client gets its
		// 250 and nothing is queued twice.
		x.observe(start, outcomeAccepted)
		log.Info("pec retry of a queued busta: discarded", "identificativo", res.Identificativo, "outcome", outcomeAccepted,
			"mail_from", x.from, "duration", time.Since(start))
		return milter.RespDiscard, nil
	}
	if err == nil {
		if err = early.settle(m, x.fields, res); err != nil {
			// Postfix will not queue the busta as we built it (it refused a modification, or
			// went away): nothing is attested (the accettazione waits for a confirmation that
			// cannot come) and the client is told to retry.
			log.Error("cannot hand the busta to Postfix", "identificativo", res.Identificativo, "error", err)
			resp, outcome := toResponse(&pec.Temporary{Op: "handback", Err: err})
			x.observe(start, outcome)
			return resp, nil
		}
		testHook("after-eom")
		s.eng.Issued(res.Confirm)
		x.observe(start, outcomeAccepted)
		log.Info("pec accepted", "identificativo", res.Identificativo, "outcome", outcomeAccepted, "retry", res.Retry,
			"mail_from", x.from, "rcpts", len(x.rcpts), "certified", len(res.Certified), "external", len(res.External),
			"size", len(sub.Message), "duration", time.Since(start), "stages", res.Timings)
		return milter.RespAccept, nil
	}
	resp, outcome := toResponse(err)
	x.observe(start, outcome)
	x.logFailure(log, outcome, err, len(sub.Message), time.Since(start))
	return resp, nil
}

// submit runs the engine's Submit through call (deadline, progress packets, panics), with the
// early hand-back of the busta (side) between the progress packets.
func (s *Server) submit(m milter.Modifier, sub *pec.Submission, side <-chan func()) (*pec.Submitted, error) {
	res, err := call(s, m, sub.QueueID, side, func(ctx context.Context) (*pec.Submitted, error) { return s.eng.Submit(ctx, sub) })
	if err == nil && (res == nil || (!res.Discard && (len(res.Busta) == 0 || res.Confirm == ""))) {
		return nil, errors.New("engine returned no busta")
	}
	return res, err
}

// earlyHand is the hand-back of a busta sent to Postfix while clamd was still scanning
// (issue 19, P2': at 10 MB, sending the busta back and Postfix's rewrite of its queue file
// take some 200 ms, now alongside the scan instead of after it). The modifications are
// only requests until the final reply: Postfix queues the busta only on accept, and drops
// the message with them on a reject or a temporary failure, so a virus, a refusal or a
// failed commit after them queues nothing and attests nothing (pec-spec.md §7.1 point 7).
type earlyHand struct{ err error }

// errNotHanded: the busta was not handed back early (the engine did not get that far, or
// Submit returned first).
var errNotHanded = errors.New("not handed back early")

// settle completes the hand-back for res, an acceptance: nothing to do when the busta went
// early and whole; the whole hand-back now when nothing went; an error when something else
// went (another busta than res's, after a concurrent retry, or a failed hand-back), which
// the message cannot be accepted with.
func (e *earlyHand) settle(m milter.Modifier, fields []fieldRef, res *pec.Submitted) error {
	switch {
	case errors.Is(e.err, errNotHanded):
		return handBack(m, fields, res.Busta, res.Confirm)
	case e.err != nil:
		return e.err
	case !res.Handed:
		return errors.New("another busta was handed back before this one")
	}
	return nil
}

// handBack replaces the message with the busta and adds the confirmation recipient, with
// NOTIFY=NEVER so that its delivery status never produces a DSN to the sender (pec/confirm.go).
func handBack(m milter.Modifier, fields []fieldRef, busta [][]byte, confirm string) error {
	if err := replaceMessage(m, fields, busta); err != nil {
		return err
	}
	return m.AddRecipient(confirm, "NOTIFY=NEVER")
}

// replaceMessage turns the queued message into the busta: every original header field is
// deleted (last first, so the indexes of the earlier ones stay valid whether or not the MTA
// renumbers after a deletion), the busta's fields are appended in order, and the body is
// replaced, part after part (the original message inside is not copied). The envelope is not
// touched (RFC 6109 §3.1.5).
func replaceMessage(m milter.Modifier, fields []fieldRef, busta [][]byte) error {
	hdr, body, err := pec.SplitParts(busta)
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
	return m.ReplaceBody(body)
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
