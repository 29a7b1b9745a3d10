package pec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
)

// streamed starts f's stream scan for sub and feeds it sub.Message in pieces of about n
// bytes, as the milter does while Postfix sends the message; finish ends it.
func streamed(t *testing.T, f *fixture, sub *pec.Submission, n int, finish bool) *pec.ScanStream {
	t.Helper()
	st := f.ap.StreamScan(sub.Login, sub.Rcpts)
	if st == nil {
		t.Fatal("no stream for a PEC sender")
	}
	t.Cleanup(st.Close)
	for m := sub.Message; len(m) > 0; {
		k := min(n, len(m))
		st.Add(m[:k])
		m = m[k:]
	}
	if finish {
		st.Finish()
	}
	return st
}

// The verdict of a scan streamed while the message arrived is the one Submit uses: one
// stream reaches clamd, not two; a virus in it refuses the message.
func TestSubmitUsesStreamedScan(t *testing.T) {
	ctx := context.Background()
	t.Run("clean", func(t *testing.T) {
		f := newFixture(t, pec.Limits{})
		sub := submission(good)
		sub.Scan = streamed(t, f, sub, 7, true)
		res, err := f.ap.Submit(ctx, sub)
		if err != nil || len(res.Busta) == 0 {
			t.Fatalf("Submit: %v", err)
		}
		if n := f.clamd.Scans(); n != 1 {
			t.Errorf("clamd got %d streams, want the streamed one only", n)
		}
	})
	t.Run("infected", func(t *testing.T) {
		f := newFixture(t, pec.Limits{})
		sub := submission(infectedOfSize("alice@pec-a.test", 300_000, "bruno@pec-b.test"), "bruno@pec-b.test")
		sub.Scan = streamed(t, f, sub, 64<<10, true)
		_, err := f.ap.Submit(ctx, sub)
		var ref *pec.Refused
		if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus || ref.Virus != clamdtest.EICARName {
			t.Fatalf("err = %v, want the avviso per virus", err)
		}
		if n := f.clamd.Scans(); n != 1 {
			t.Errorf("clamd got %d streams, want the streamed one only", n)
		}
	})
}

// A stream that did not carry exactly the message is not trusted: Submit scans the message
// whole. Here the virus is in the part the stream never got: the message is still refused.
func TestSubmitDistrustsPartialStream(t *testing.T) {
	ctx := context.Background()
	infected := infectedOfSize("alice@pec-a.test", 200_000, "bruno@pec-b.test")
	at := bytes.Index(infected, []byte(clamdtest.EICAR))
	if at < 0 {
		t.Fatal("no EICAR in the message")
	}
	for _, tc := range []struct {
		name   string
		feed   []byte
		finish bool
	}{
		{"shorter, finished", infected[:at], true},
		{"whole, not finished", infected, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			sub := submission(infected, "bruno@pec-b.test")
			st := f.ap.StreamScan(sub.Login, sub.Rcpts)
			t.Cleanup(st.Close)
			st.Add(tc.feed)
			if tc.finish {
				st.Finish()
			}
			sub.Scan = st
			_, err := f.ap.Submit(ctx, sub)
			var ref *pec.Refused
			if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus {
				t.Fatalf("err = %v, want the avviso per virus", err)
			}
		})
	}
}

// A stream stops as soon as the message is over the size × envelope recipients limit: clamd
// never gets more than the limit allows, and Submit refuses the message for its size.
func TestStreamScanStopsAtSizeLimit(t *testing.T) {
	lim := pec.Limits{MaxSizeTimesRecipients: 400_000}
	rcpts := []string{"bruno@pec-b.test", "bianca@pec-b.test"}
	f := newFixture(t, lim)
	sub := submission(infectedOfSize("alice@pec-a.test", 300_000, rcpts...), rcpts...)
	st := f.ap.StreamScan(sub.Login, sub.Rcpts)
	defer st.Close()
	for m := sub.Message; len(m) > 0; m = m[min(4096, len(m)):] {
		st.Add(m[:min(4096, len(m))])
		time.Sleep(100 * time.Microsecond) // let the scan read along, as it does while Postfix sends
	}
	st.Finish()
	sub.Scan = st
	_, err := f.ap.Submit(context.Background(), sub)
	var fe *pec.FormalError
	if !errors.As(err, &fe) || fe.Reason != pec.ReasonTooLarge {
		t.Fatalf("err = %v, want the avviso for size × recipients", err)
	}
	time.Sleep(50 * time.Millisecond) // whatever was sent has arrived
	// The client sends 64 KiB chunks: some have gone before the stream stopped.
	if got := f.clamd.MaxReceived(); got == 0 || got > 200_000 {
		t.Errorf("clamd received %d bytes of the stream, want some and at most 200000 (the limit for 2 recipients)", got)
	}
}

// No stream for a login that is not a PEC mailbox here: Submit would not scan its message.
func TestStreamScanOnlyForPECSenders(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	for _, login := range []string{"", "mario@posta.test"} {
		if st := f.ap.StreamScan(login, []string{"bruno@pec-b.test"}); st != nil {
			st.Close()
			t.Errorf("a stream for login %q", login)
		}
	}
}

// When clamd closed the idle session the streamed scan lands on, the stream is sent again on
// a new connection from its start (the reader rewinds), and the verdict stands.
func TestStreamScanRewindsOnClosedSession(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, pec.Limits{})
	if _, err := f.ap.Submit(ctx, submission(good)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, f.clamd)
	sub := submission(infectedOfSize("alice@pec-a.test", 100_000, "bruno@pec-b.test"), "bruno@pec-b.test")
	sub.Scan = streamed(t, f, sub, 10_000, true)
	_, err := f.ap.Submit(ctx, sub)
	var ref *pec.Refused
	if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus {
		t.Fatalf("err = %v, want the avviso per virus", err)
	}
	if n := f.clamd.Conns(); n != 2 {
		t.Errorf("%d connections to clamd, want 2 (the dropped session and the new one)", n)
	}
}

// waitIdle drops the session the last scan put back, once clamd's fake sees it idle.
func waitIdle(t *testing.T, c *clamdtest.Server) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c.DropIdle() > 0 {
			return
		}
	}
	t.Fatal("no idle session to drop")
}

// collect is a Scanner that reads a stream with reads of random sizes and hands over what it
// read.
type collect struct {
	got chan []byte
	err chan error
	rnd *rand.Rand
}

func (c collect) Scan(_ context.Context, r io.Reader) (string, error) {
	var out []byte
	for {
		p := make([]byte, 1+c.rnd.IntN(5000))
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			c.got <- out
			return "", nil
		}
		if err != nil {
			c.err <- err
			return "", err
		}
	}
}

// The stream's reader gives back exactly what was added, in order, whatever the sizes of the
// pieces and of the reads, while the writer adds concurrently and rebases the stream onto one
// buffer half-way (the milter joins its chunks), and after a rewind.
func TestScanStreamReader(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		msg := make([]byte, 1+rnd.IntN(300_000))
		for i := range msg {
			msg[i] = byte(rnd.IntN(256))
		}
		c := collect{got: make(chan []byte, 1), err: make(chan error, 1), rnd: rand.New(rand.NewPCG(uint64(round), 9))}
		st := pec.NewScanStream(c, 0)
		added := 0
		for added < len(msg) {
			k := min(1+rnd.IntN(70_000), len(msg)-added)
			st.Add(msg[added : added+k])
			added += k
			if round%2 == 0 && added > len(msg)/2 && added < len(msg) {
				st.Rebase(msg[:added]) // the same bytes, joined
			}
		}
		st.Finish()
		select {
		case got := <-c.got:
			if !bytes.Equal(got, msg) {
				t.Fatalf("round %d: read %d bytes, not the %d added", round, len(got), len(msg))
			}
		case err := <-c.err:
			t.Fatalf("round %d: %v", round, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the reader did not finish", round)
		}
		st.Close()
	}
}

// Close ends a reader that waits for more bytes with ErrStreamAborted; a limit does the same
// as soon as the bytes added pass it.
func TestScanStreamAbort(t *testing.T) {
	c := collect{got: make(chan []byte, 1), err: make(chan error, 1), rnd: rand.New(rand.NewPCG(3, 4))}
	st := pec.NewScanStream(c, 0)
	st.Add([]byte("some bytes"))
	st.Close()
	if err := <-c.err; !errors.Is(err, pec.ErrStreamAborted) {
		t.Fatalf("after Close: %v", err)
	}
	c = collect{got: make(chan []byte, 1), err: make(chan error, 1), rnd: rand.New(rand.NewPCG(3, 4))}
	st = pec.NewScanStream(c, 100)
	defer st.Close()
	st.Add(make([]byte, 60))
	st.Add(make([]byte, 60))
	st.Finish()
	select {
	case err := <-c.err:
		if !errors.Is(err, pec.ErrStreamAborted) {
			t.Fatalf("past the limit: %v", err)
		}
	case got := <-c.got:
		t.Fatalf("past the limit, the stream ended normally after %d bytes", len(got))
	}
}
