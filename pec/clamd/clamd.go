// Package clamd is a small client for the ClamAV daemon's INSTREAM command (clamd(8),
// "INSTREAM"). It is all the PEC access and reception points need: send a message, learn
// whether it carries a virus and which one.
//
// Protocol: the client sends "zINSTREAM\0", then the data as chunks "<u32 big-endian
// length><bytes>", then a zero-length chunk "<0,0,0,0>", and reads the reply up to "\0":
// "stream: OK", "stream: <signature> FOUND" or "<text> ERROR" (for example "INSTREAM size
// limit exceeded. ERROR" when the stream is over clamd's StreamMaxLength).
package clamd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Config is the clamd section of the configuration file.
type Config struct {
	// Addr is host:port of clamd's TCPSocket, or "unix:/path" for its LocalSocket.
	Addr string `yaml:"addr"`
	// Timeout bounds one whole scan (connect, send, wait for the verdict). Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// ChunkSize is the size of the INSTREAM chunks. Default 64 KiB. It must stay below clamd's
	// StreamMaxLength.
	ChunkSize int `yaml:"chunk_size"`
}

// Defaults applied by New.
const (
	DefaultTimeout   = 30 * time.Second
	DefaultChunkSize = 64 * 1024
)

// ErrUnavailable is wrapped by every error that means "clamd could not give a verdict now":
// connection refused, timeout, a broken reply, clamd's own ERROR replies (including the
// stream size limit). Callers answer with a temporary failure.
var ErrUnavailable = errors.New("clamd: unavailable")

// Error is a temporary scanning failure. It wraps ErrUnavailable and the cause.
type Error struct {
	Op  string // "dial", "send", "read", "reply"
	Err error
}

func (e *Error) Error() string   { return "clamd: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Temporary reports that the scan may succeed later.
func (e *Error) Temporary() bool { return true }

// Client scans streams with clamd. It is safe for concurrent use: each scan opens its own
// connection (clamd serves one command per connection unless IDSESSION is used).
type Client struct {
	network, addr string
	timeout       time.Duration
	chunk         int
	dialer        net.Dialer
}

// New validates cfg and returns a client. It does not connect.
func New(cfg Config) (*Client, error) {
	c := &Client{timeout: cfg.Timeout, chunk: cfg.ChunkSize}
	switch {
	case cfg.Addr == "":
		return nil, errors.New("clamd.addr: required")
	case strings.HasPrefix(cfg.Addr, "unix:"):
		c.network, c.addr = "unix", strings.TrimPrefix(cfg.Addr, "unix:")
		if c.addr == "" {
			return nil, fmt.Errorf("clamd.addr: %q: empty socket path", cfg.Addr)
		}
	default:
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			return nil, fmt.Errorf("clamd.addr: %q: %v", cfg.Addr, err)
		}
		c.network, c.addr = "tcp", cfg.Addr
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.timeout < 0 {
		return nil, fmt.Errorf("clamd.timeout: %v: must be positive", cfg.Timeout)
	}
	if c.chunk == 0 {
		c.chunk = DefaultChunkSize
	}
	if c.chunk < 0 || c.chunk > 1<<24 {
		return nil, fmt.Errorf("clamd.chunk_size: %d: must be between 1 and 16 MiB", cfg.ChunkSize)
	}
	return c, nil
}

// Scan streams r to clamd. It returns the signature name when clamd found a virus, "" when
// the stream is clean, and an error wrapping ErrUnavailable when clamd gave no verdict.
func (c *Client) Scan(ctx context.Context, r io.Reader) (virus string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.dialer.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return "", &Error{Op: "dial", Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Closing the connection interrupts a blocked read or write when ctx is cancelled early.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	sendErr := c.send(conn, r)
	// clamd answers "INSTREAM size limit exceeded. ERROR" and closes the connection as soon as
	// the limit is passed, so a failed write may still have a reply waiting: read it first.
	reply, readErr := readReply(conn)
	if readErr != nil {
		if sendErr != nil {
			return "", &Error{Op: "send", Err: sendErr}
		}
		if ctx.Err() != nil {
			return "", &Error{Op: "read", Err: ctx.Err()}
		}
		return "", &Error{Op: "read", Err: readErr}
	}
	return parseReply(reply)
}

func (c *Client) send(conn net.Conn, r io.Reader) error {
	w := bufio.NewWriterSize(conn, c.chunk+4)
	if _, err := w.WriteString("zINSTREAM\x00"); err != nil {
		return err
	}
	buf := make([]byte, c.chunk)
	var hdr [4]byte
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			if _, werr := w.Write(hdr[:]); werr != nil {
				return werr
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the message: %w", err)
		}
	}
	binary.BigEndian.PutUint32(hdr[:], 0)
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	return w.Flush()
}

// maxReply bounds the reply; real replies are one short line.
const maxReply = 4096

func readReply(conn net.Conn) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(conn, maxReply), 512)
	b, err := br.ReadBytes(0)
	if err != nil {
		if err == io.EOF && len(b) > 0 {
			// clamd without the "z" prefix would end with "\n"; accept a reply cut at EOF.
			return strings.TrimRight(string(b), "\n"), nil
		}
		return "", err
	}
	return string(bytes.TrimSuffix(b, []byte{0})), nil
}

// parseReply reads one INSTREAM verdict.
func parseReply(reply string) (string, error) {
	reply = strings.TrimSpace(reply)
	// Replies may carry a session id prefix ("1: stream: OK") with IDSESSION; not used here but
	// harmless to accept.
	rest, ok := strings.CutPrefix(reply, "stream: ")
	if !ok {
		if i := strings.Index(reply, ": stream: "); i >= 0 {
			rest, ok = reply[i+len(": stream: "):], true
		}
	}
	switch {
	case strings.HasSuffix(reply, " ERROR"):
		return "", &Error{Op: "reply", Err: errors.New(reply)}
	case !ok:
		return "", &Error{Op: "reply", Err: fmt.Errorf("unexpected reply %q", reply)}
	case rest == "OK":
		return "", nil
	case strings.HasSuffix(rest, " FOUND"):
		name := virusName(strings.TrimSuffix(rest, " FOUND"))
		if name == "" {
			return "", &Error{Op: "reply", Err: fmt.Errorf("unexpected reply %q", reply)}
		}
		return name, nil
	default:
		return "", &Error{Op: "reply", Err: fmt.Errorf("unexpected reply %q", reply)}
	}
}

// virusName makes the signature name of a FOUND reply printable: every control character
// (NUL included) and every byte that is not UTF-8 becomes "?". The verdict stands (clamd said
// FOUND: the message is infected), but the name goes into the legal log, the avviso's
// errore-esteso and its text, where such bytes are not allowed (XML 1.0 §2.2 forbids NUL
// in daticert.xml). "" when nothing printable is left.
func virusName(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if strings.Trim(s, "?") == "" {
		return ""
	}
	return s
}
