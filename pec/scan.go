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

// splitScanFrom is the size of postacert.eml from which the reception point scans it apart
// from the rest of the busta (scanReceived). Below it the second round trip to clamd would
// cost more than clamd's second unpacking saves.
const splitScanFrom = 256 << 10

// scanReceived scans a busta received from another provider, whose postacert.eml is
// postacert as carried (Classified.Postacert), and returns the antivirus verdict and how
// many streams clamd got.
//
// clamd unpacks a message/rfc822 part as a file of its own and then unpacks the message in
// it again, so a whole busta costs it about twice what the message it carries costs (a 10 MB
// busta on the lab's clamd: 1.09 s against 0.54 s for its postacert.eml alone). From
// splitScanFrom on, the message is scanned by itself, then the busta with that part's bytes
// cut out: every byte the peer sent is scanned once, each part in its MIME context, and a
// virus in either scan is the verdict. When postacert.eml is not a region of raw as it
// stands (transfer-encoded, which RFC 2046 §5.2.1 does not allow a message/rfc822 part),
// the busta is scanned whole, as below the threshold.
func (e *Engine) scanReceived(ctx context.Context, raw, postacert []byte) (virus string, scans int, err error) {
	sc := e.deps.Scanner
	var rest []byte
	split := len(postacert) >= splitScanFrom
	if split {
		rest, split = cutOut(raw, postacert)
	}
	if !split {
		virus, err = sc.Scan(ctx, bytes.NewReader(raw))
		return virus, 1, err
	}
	if virus, err = sc.Scan(ctx, bytes.NewReader(postacert)); virus != "" || err != nil {
		return virus, 1, err
	}
	virus, err = sc.Scan(ctx, bytes.NewReader(rest))
	return virus, 2, err
}

// cutOut returns a copy of raw without the first region that holds exactly the bytes of
// part (found by its first KiB, then compared whole), and whether there is one. A region
// that repeats part's first KiB but not the rest answers false: the caller then scans raw
// whole, which is slower, never less.
func cutOut(raw, part []byte) ([]byte, bool) {
	if len(part) == 0 {
		return nil, false
	}
	i := bytes.Index(raw, part[:min(len(part), 1024)])
	if i < 0 || len(raw)-i < len(part) || !bytes.Equal(raw[i:i+len(part)], part) {
		return nil, false
	}
	rest := make([]byte, 0, len(raw)-len(part))
	rest = append(rest, raw[:i]...)
	return append(rest, raw[i+len(part):]...), true
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
