package pec

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// A scan fed while the message arrives (issue 19, P2'). Postfix's cleanup server sends the
// message to the milter only once it has all of it (the client's final dot came first), and
// at 10 MB that transfer takes about as long as clamd's scan. Started when the message is
// still arriving, the scan runs during the transfer instead of after it, and end-of-message
// waits only for what is left of it.
//
// The stream never copies the message: it keeps references to the bytes the caller holds
// anyway (the header as collected, then each body chunk, or the region of one buffer a chunk
// was written to) and the scan reads them as they come. Its reader can be rewound (io.Seeker),
// so that clamd.Client can send the stream once more on a new connection when an idle session
// turns out closed (pec/clamd), as it does for a whole message.
//
// The verdict is used only if the stream carried exactly the message Submit decides on:
// Finish was called and the stream's length is the message's. Anything else (a stream cut,
// aborted or of another length) is dropped and the message is scanned whole, as without a
// stream. A message refused for its size is not scanned: the stream stops as soon as the
// message is known to be over Limits.MaxSizeTimesRecipients for its envelope recipients
// alone (CheckSize counts at least those), and Submit aborts it when CheckSize refuses the
// message. So clamd gets at most that limit, and never more than limits.hard_max_size,
// which the milter stops collecting at and the daemon checks clamd's StreamMaxLength
// against at start-up.

// ErrStreamAborted ends the reader of an aborted stream (ScanStream.Close, or a message
// over the limit).
var ErrStreamAborted = errors.New("scan stream aborted")

// ScanStream is an antivirus scan of a message fed while it arrives. It is safe for one
// writer (Add, Rebase, Finish) and Close from any goroutine; Submit reads its verdict.
type ScanStream struct {
	mu       sync.Mutex
	more     *sync.Cond // signalled when bytes are added, the stream ends or is aborted
	segs     [][]byte
	total    int
	limit    int // the stream is aborted past this many bytes (0: no limit)
	gen      int // bumped by Rebase: readers find their place again
	finished bool
	aborted  bool

	cancel context.CancelFunc
	job    *scanJob
}

// StreamScan starts the scan of a submission by login whose message is about to arrive: the
// caller feeds it with Add as the bytes come, calls Finish when they are all there and passes
// it in Submission.Scan, and calls Close once Submit has returned (or when the message is
// abandoned). It returns nil when Submit would not scan the message of this login (no login,
// or not a PEC mailbox of this provider): the stream would be wasted work for clamd. rcpts
// are the envelope recipients.
func (e *Engine) StreamScan(login string, rcpts []string) *ScanStream {
	if login == "" {
		return nil
	}
	if _, ok := e.IdentityFor(login); !ok {
		return nil
	}
	limit := 0
	if lim := e.cfg.Limits.MaxSizeTimesRecipients; lim > 0 {
		n := int64(len(Envelope{Rcpts: rcpts}.distinct()))
		limit = int(lim / max(n, 1))
	}
	return NewScanStream(e.deps.Scanner, limit)
}

// NewScanStream starts a stream scanned by sc, aborted past limit bytes (0: no limit).
// Engine.StreamScan is what the PEC points use; this is the same stream for callers' tests.
func NewScanStream(sc Scanner, limit int) *ScanStream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &ScanStream{cancel: cancel, limit: limit}
	st.more = sync.NewCond(&st.mu)
	st.job = startScanOf(ctx, sc, &streamReader{st: st})
	return st
}

// Add appends p to the stream. The stream keeps p, without a copy, until Rebase or the scan's
// end: the caller must not change those bytes.
func (st *ScanStream) Add(p []byte) {
	if len(p) == 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finished || st.aborted {
		return
	}
	if st.limit > 0 && st.total+len(p) > st.limit {
		st.abortLocked() // CheckSize will refuse the message: clamd need not see more
		return
	}
	st.segs = append(st.segs, p[:len(p):len(p)])
	st.total += len(p)
	st.more.Broadcast()
}

// Rebase replaces what the stream holds with msg, the same bytes in one buffer (the caller
// joined its chunks): the chunks can be let go while the scan reads its tail. msg must be
// as long as the stream so far; otherwise the stream is aborted.
func (st *ScanStream) Rebase(msg []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(msg) != st.total {
		st.abortLocked()
		return
	}
	st.segs = [][]byte{msg[:len(msg):len(msg)]}
	st.gen++
}

// Finish ends the stream: the message is all there.
func (st *ScanStream) Finish() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.finished = true
	st.more.Broadcast()
}

// Close aborts the scan if it is still under way and lets go of the bytes. It may be called
// more than once.
func (st *ScanStream) Close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.abortLocked()
}

func (st *ScanStream) abortLocked() {
	if !st.aborted {
		st.aborted = true
		st.segs = nil // the caller's bytes are theirs again
		st.cancel()
		st.more.Broadcast()
	}
}

// Wait blocks until the scan ends and returns its verdict, for a caller that uses the stream
// without Submit (the bench's reference milter, integration/bench).
func (st *ScanStream) Wait() (virus string, err error) {
	<-st.job.done
	return st.job.virus, st.job.err
}

// scanOf is the stream's scan if it carried exactly raw: finished, not aborted, as long.
func (st *ScanStream) scanOf(raw []byte) *scanJob {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.finished || st.aborted || st.total != len(raw) {
		return nil
	}
	return st.job
}

// streamReader reads a ScanStream from its start, waiting for the bytes not there yet.
type streamReader struct {
	st       *ScanStream
	pos      int // bytes read
	seg, off int // where pos is: segs[seg][off], valid for generation gen
	gen      int
}

func (r *streamReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st := r.st
	st.mu.Lock()
	for r.pos >= st.total && !st.finished && !st.aborted {
		st.more.Wait()
	}
	if st.aborted {
		st.mu.Unlock()
		return 0, ErrStreamAborted
	}
	if r.pos >= st.total {
		st.mu.Unlock()
		return 0, io.EOF
	}
	if r.gen != st.gen {
		r.locate()
	}
	// What a segment holds never changes once added: copy it without the lock.
	segs := st.segs[r.seg:]
	st.mu.Unlock()
	n := 0
	for _, s := range segs {
		c := copy(p[n:], s[r.off:])
		n += c
		r.pos += c
		if r.off += c; r.off == len(s) {
			r.seg, r.off = r.seg+1, 0
		}
		if n == len(p) {
			break
		}
	}
	return n, nil
}

// locate finds the segment of pos after a Rebase (st.mu held).
func (r *streamReader) locate() {
	r.gen, r.seg, r.off = r.st.gen, 0, r.pos
	for r.seg < len(r.st.segs) && r.off >= len(r.st.segs[r.seg]) {
		r.off -= len(r.st.segs[r.seg])
		r.seg++
	}
}

// Seek rewinds the reader (clamd.Client sends a stream again when clamd closed an idle
// session under it). Only positions already added can be reached.
func (r *streamReader) Seek(offset int64, whence int) (int64, error) {
	st := r.st
	st.mu.Lock()
	defer st.mu.Unlock()
	to := offset
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		to += int64(r.pos)
	default:
		return 0, errors.New("scan stream: seek from the end is not supported")
	}
	if to < 0 || to > int64(st.total) {
		return 0, errors.New("scan stream: seek out of range")
	}
	r.pos = int(to)
	r.locate()
	return to, nil
}

// startScanOf scans r with sc in the background; cancelling ctx ends the scan.
func startScanOf(ctx context.Context, sc Scanner, r io.Reader) *scanJob {
	j := &scanJob{done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(j.done)
		j.virus, j.err = sc.Scan(ctx, r)
		j.end = time.Now()
	}()
	return j
}
