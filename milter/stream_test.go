package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// recScanner records every stream it reads to its end, and how the reading ended.
type recScanner struct {
	mu   sync.Mutex
	runs []scanRun
	done chan struct{} // one send per finished scan
}

type scanRun struct {
	got []byte
	err error // the reader's error; nil at EOF
}

func newRecScanner() *recScanner { return &recScanner{done: make(chan struct{}, 16)} }

func (r *recScanner) Scan(_ context.Context, rd io.Reader) (string, error) {
	got, err := io.ReadAll(rd)
	r.mu.Lock()
	r.runs = append(r.runs, scanRun{got: got, err: err})
	r.mu.Unlock()
	r.done <- struct{}{}
	if err != nil {
		return "", err
	}
	return "", nil
}

// wait returns the next finished scan.
func (r *recScanner) wait(t *testing.T) scanRun {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no scan finished")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[len(r.runs)-1]
}

func (r *recScanner) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

// TestStreamScanCarriesTheMessage: past StreamScanFrom the scan is fed while the body
// arrives, and what it reads is exactly the message the engine gets, whether the body is
// written into one buffer (declared SIZE, right or wrong) or kept as chunks and joined; the
// engine gets the stream, finished, in Submission.Scan (the fake engine waits for the scan's
// end as Submit waits for its verdict).
func TestStreamScanCarriesTheMessage(t *testing.T) {
	// About 300 KB: several 64 KiB body chunks from the milter client, as from Postfix.
	msg := []byte(original + strings.Repeat(strings.Repeat("z", 76)+"\r\n", 4000))
	sc := newRecScanner()
	var mu sync.Mutex
	var runs []scanRun
	var streams []*pec.ScanStream
	h := start(t, Config{MaxSize: 1 << 20, StreamScanFrom: 100 << 10}, func(ctx context.Context, s *pec.Submission) (*pec.Submitted, error) {
		var run scanRun
		select {
		case <-sc.done:
			sc.mu.Lock()
			run = sc.runs[len(sc.runs)-1]
			sc.mu.Unlock()
		case <-time.After(10 * time.Second):
			run.err = errors.New("no scan finished")
		}
		mu.Lock()
		streams, runs = append(streams, s.Scan), append(runs, run)
		mu.Unlock()
		return accepted(ctx, s)
	})
	h.eng.scanner = sc
	for i, esmtp := range []string{"", fmt.Sprintf("SIZE=%d", len(msg)), fmt.Sprintf("SIZE=%d", len(msg)/2)} {
		s, macros := h.session(t, RoleAccess)
		r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: msg, esmtp: esmtp})
		if r.act.Type != milter.ActionAccept {
			t.Fatalf("%q: %v", esmtp, r.act)
		}
		mu.Lock()
		run, st := runs[i], streams[i]
		mu.Unlock()
		if run.err != nil || string(run.got) != string(msg) {
			t.Errorf("%q: the scan read %d bytes (error %v), want the %d-byte message", esmtp, len(run.got), run.err, len(msg))
		}
		if st == nil {
			t.Errorf("%q: the engine got no stream", esmtp)
		}
	}
	if n := sc.count(); n != 3 {
		t.Errorf("%d scans for 3 messages", n)
	}
}

// TestStreamScanBelowThreshold: a message smaller than StreamScanFrom is not streamed; the
// engine scans it at end-of-message (Submission.Scan nil).
func TestStreamScanBelowThreshold(t *testing.T) {
	var got *pec.ScanStream
	h := start(t, Config{MaxSize: 1 << 20}, func(ctx context.Context, s *pec.Submission) (*pec.Submitted, error) {
		got = s.Scan
		return accepted(ctx, s)
	})
	sc := newRecScanner()
	h.eng.scanner = sc
	s, macros := h.session(t, RoleAccess)
	if r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)}); r.act.Type != milter.ActionAccept {
		t.Fatal(r.act)
	}
	if got != nil || sc.count() != 0 {
		t.Fatalf("a %d-byte message was streamed (stream %v, %d scans)", len(original), got, sc.count())
	}
}

// TestStreamScanStopsWhenDropped: a stream under way ends with an error, never with the end
// of a message, when the message goes over the hard limit or the client aborts it; the
// engine is not called.
func TestStreamScanStopsWhenDropped(t *testing.T) {
	h := start(t, Config{MaxSize: 200 << 10, StreamScanFrom: 1}, accepted)
	sc := newRecScanner()
	h.eng.scanner = sc

	s, macros := h.session(t, RoleAccess)
	big := original + strings.Repeat(strings.Repeat("q", 98)+"\r\n", 4000)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(big)})
	if r.act == nil || r.act.SMTPCode != 552 {
		t.Fatalf("over the limit: %v", r.act)
	}
	if run := sc.wait(t); !errors.Is(run.err, pec.ErrStreamAborted) {
		t.Errorf("over the limit: the scan ended with %v after %d bytes, want an abort", run.err, len(run.got))
	}

	// A client abort after some of the body.
	s2, macros2 := h.session(t, RoleAccess)
	macros2.Set(milter.MacroAuthAuthen, "alice@pec-a.test")
	if _, err := s2.Mail("<alice@pec-a.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Rcpt("<bruno@pec-b.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.DataStart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.HeaderField("From", " alice@pec-a.test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.BodyChunk([]byte(strings.Repeat("w", 1000))); err != nil {
		t.Fatal(err)
	}
	if err := s2.Abort(nil); err != nil {
		t.Fatal(err)
	}
	if run := sc.wait(t); !errors.Is(run.err, pec.ErrStreamAborted) {
		t.Errorf("client abort: the scan ended with %v after %d bytes, want an abort", run.err, len(run.got))
	}
	if h.eng.calls != 0 {
		t.Errorf("engine called %d times", h.eng.calls)
	}
}
