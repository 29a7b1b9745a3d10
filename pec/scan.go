package pec

import (
	"bytes"
	"context"
	"time"
)

// The antivirus verdict beside the rest of the access point's decision (issue 19). Inside
// one end-of-message the scan is a wait on clamd, another process, while the content
// inspection and the signing of the busta and the accettazione are this process's work, so
// they overlap: the scan starts as soon as the message is parsed and its size allowed, the
// rest is built meanwhile, and the verdict is awaited before anything is decided, answered
// or committed. On a virus, or when clamd gives no verdict, what was built is dropped
// unseen: it never reaches the store, the outbox or Postfix (pec-spec.md §7.1 point 7: the
// scan precedes any accettazione; DESIGN.md "Durability").

// scanJob is one scan under way.
type scanJob struct {
	done       chan struct{}
	virus      string
	err        error
	start, end time.Time
}

// startScan sends raw to the antivirus in the background. Cancelling ctx ends the scan.
func (e *Engine) startScan(ctx context.Context, raw []byte) *scanJob {
	return startScanOf(ctx, e.deps.Scanner, bytes.NewReader(raw))
}

// verdict waits for the scan (nil: the message was not scanned, being over the size limit)
// and records how long clamd took within this Submit (a scan streamed while the message
// arrived counts from Submit's start: the time before it was the transfer's, not a wait).
// A scan without a verdict is a temporary failure.
func (s *step) verdict(j *scanJob) (string, error) {
	if j == nil {
		return "", nil
	}
	waiting := time.Now()
	<-j.done
	from := j.start
	if from.Before(s.begun) { // streamed: it ran ahead of Submit
		s.tm.Ahead += s.begun.Sub(from)
		from = s.begun
	}
	s.tm.Scan += j.end.Sub(from)
	s.tm.Waited += time.Since(waiting)
	if j.err != nil {
		return "", &Temporary{Op: "scan", Err: j.err}
	}
	return j.virus, nil
}

// prepared is the work of an acceptance done before the verdict: the busta and, for a new
// transaction, the accettazione, built and signed, with their errors (reported only if the
// message is accepted: a virus wins over them, as it wins over a formal exception).
type prepared struct {
	busta, acc       *Message
	bustaErr, accErr error
	took             time.Duration
}

// prepare builds and signs the busta and the accettazione (a retry of a waiting step reuses
// its held accettazione: only the busta is rebuilt), and hands the busta out (handOut).
func (s *step) prepare() {
	start := time.Now()
	p := &prepared{}
	p.busta, p.bustaErr = s.busta()
	if p.bustaErr == nil && s.again == nil {
		p.acc, p.accErr = s.bd.Accettazione(s.ref, s.tx)
	}
	p.took = time.Since(start)
	s.pre = p
	s.handOut()
}
