package clamd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// ErrStreamLimit is wrapped by a *StreamLimitError.
var ErrStreamLimit = errors.New("clamd: stream over StreamMaxLength")

// StreamLimitError is clamd's "INSTREAM size limit exceeded": the stream is longer than
// StreamMaxLength in clamd.conf. For the message it is a temporary failure like any other
// missing verdict (it wraps ErrUnavailable too); for the provider it is a configuration
// error, which CheckStreamLimit finds at start-up so that no message meets it.
type StreamLimitError struct {
	Size int64 // the stream's size, as far as it is known (the bytes sent, or the size probed)
}

func (e *StreamLimitError) Error() string {
	return fmt.Sprintf("clamd: INSTREAM size limit exceeded: a stream of %d bytes is over StreamMaxLength in clamd.conf", e.Size)
}

// Unwrap gives ErrStreamLimit and ErrUnavailable.
func (e *StreamLimitError) Unwrap() []error { return []error{ErrStreamLimit, ErrUnavailable} }

// Temporary reports true: the message may be scanned once clamd is reconfigured.
func (e *StreamLimitError) Temporary() bool { return true }

// CheckStreamLimit asks clamd whether its StreamMaxLength admits a stream of size bytes: nil
// when it does, a *StreamLimitError when it does not, an *Error (ErrUnavailable) when clamd
// does not answer.
//
// It sends the INSTREAM command and one chunk length of size bytes, then ends its side of the
// connection without sending the data. clamd compares a chunk's declared length with what is
// left of StreamMaxLength as soon as it reads the length (clamd/server-th.c, handle_stream:
// "chunksize > quota"), and answers "INSTREAM size limit exceeded" at once; a length within
// the limit makes it wait for the data, and the end of our stream makes it drop the
// connection without a reply ("client read error or EOF on read"). The length is always read
// before the end of the stream, so the answer does not depend on timing, and nothing is
// scanned or kept: 14 bytes instead of a probe stream as large as the largest message.
// Reading StreamMaxLength from clamd is not possible (no command reports the configuration),
// and a copy of the value in our configuration could drift from clamd.conf; the probe asks
// the clamd that will do the scans.
func (c *Client) CheckStreamLimit(ctx context.Context, size int64) error {
	if size <= 0 || size > math.MaxUint32 {
		return fmt.Errorf("clamd: stream size %d: want 1 to %d bytes", size, uint32(math.MaxUint32))
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return &Error{Op: "dial", Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	msg := make([]byte, 0, 14)
	msg = append(msg, "zINSTREAM\x00"...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(size))
	if _, err := conn.Write(msg); err != nil {
		return &Error{Op: "send", Err: err}
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok {
		return &Error{Op: "send", Err: fmt.Errorf("%T cannot half-close", conn)}
	}
	if err := cw.CloseWrite(); err != nil {
		return &Error{Op: "send", Err: err}
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxReply))
	if err != nil {
		return &Error{Op: "read", Err: err}
	}
	reply := strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
	switch {
	case reply == "":
		return nil
	case strings.HasPrefix(reply, "INSTREAM size limit exceeded"):
		return &StreamLimitError{Size: size}
	}
	return &Error{Op: "reply", Err: fmt.Errorf("unexpected reply %q to a chunk length of %d bytes", reply, size)}
}
