package smtpc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// WriteDotStuffed gives the very bytes net/textproto's dot writer (what go-smtp's client
// used) gives, for messages with dot lines, bare LFs, a missing last line end: random ones
// whose CRs all belong to a CRLF, as Postfix hands them over.
func TestWriteDotStuffed(t *testing.T) {
	cases := []string{".", "..", "a", "a\r\n", ".a\r\n.\r\nb", "a\nb\n", "\r\n.\r\n", ".\n.\n", "x\r\n..y\r\n.", "\n\n."}
	rnd := rand.New(rand.NewPCG(1, 2))
	tokens := []string{"a", "b", ".", "\n", "\r\n"}
	for range 3000 {
		var b strings.Builder
		for range 1 + rnd.IntN(30) {
			b.WriteString(tokens[rnd.IntN(len(tokens))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		var want bytes.Buffer
		tw := textproto.NewWriter(bufio.NewWriter(&want))
		dw := tw.DotWriter()
		dw.Write([]byte(c))
		dw.Close()
		tw.W.Flush()
		if got := dotStuffed(t, c); got != want.String() {
			t.Errorf("%q: got %q, textproto %q", c, got, want.String())
		}
	}
	// Bare CRs stay; a last CR gets its LF; an empty message is the dot alone.
	for in, want := range map[string]string{"a\rb\r\n": "a\rb\r\n.\r\n", "a\r": "a\r\n.\r\n", "\r\r\n": "\r\r\n.\r\n", "": ".\r\n"} {
		if got := dotStuffed(t, in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func dotStuffed(t *testing.T, msg string) string {
	var got bytes.Buffer
	w := bufio.NewWriter(&got)
	if err := WriteDotStuffed(w, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	return got.String()
}

// Replies as Dovecot and other servers write them: multi-line, enhanced codes on every line,
// codes other than the one expected, and malformed ones, which break the connection.
func TestClientReplies(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		lines   int
		code    int // an *smtp.SMTPError with this code; 0: none
		enh     smtp.EnhancedCode
		message string
		broken  bool
	}{
		{in: "250 2.1.0 OK\r\n", want: 250, lines: 1},
		{in: "250-host\r\n250-PIPELINING\r\n250 8BITMIME\r\n", want: 250, lines: 3},
		{in: "251 2.1.5 forwarded\r\n", want: 25, lines: 1},
		{in: "552-5.2.2 Mailbox\r\n552 5.2.2 full\r\n", want: 2, code: 552, enh: smtp.EnhancedCode{5, 2, 2}, message: "Mailbox\nfull"},
		{in: "451 try later\r\n", want: 2, code: 451, enh: smtp.NoEnhancedCode, message: "try later"},
		{in: "550 5.1.1 <x@y> User doesn't exist\r\n", want: 25, code: 550, enh: smtp.EnhancedCode{5, 1, 1}, message: "<x@y> User doesn't exist"},
		{in: "250\r\n", want: 250, lines: 1},
		{in: "25 short\r\n", want: 250, broken: true},
		{in: "abc def\r\n", want: 250, broken: true},
		{in: "250-a\r\n251 b\r\n", want: 250, broken: true},
		{in: "250x\r\n", want: 250, broken: true},
		{in: "250-a\r\n", want: 250, broken: true}, // cut off
		{in: "", want: 250, broken: true},
	} {
		srv, cli := net.Pipe()
		go func() { srv.Write([]byte(tc.in)); srv.Close() }()
		c := &Client{conn: cli, r: bufio.NewReader(cli), w: bufio.NewWriter(cli), timeout: time.Second}
		lines, err := c.expect(tc.want)
		cli.Close()
		var se *smtp.SMTPError
		switch {
		case tc.broken:
			if err == nil || errors.As(err, &se) {
				t.Errorf("%q: got %v, %v; want a broken connection", tc.in, lines, err)
			}
		case tc.code != 0:
			if !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enh || se.Message != tc.message {
				t.Errorf("%q: got %#v, want %d %v %q", tc.in, err, tc.code, tc.enh, tc.message)
			}
		case err != nil || len(lines) != tc.lines:
			t.Errorf("%q: got %q, %v; want %d lines", tc.in, lines, err, tc.lines)
		}
	}
}

// The data of a 1 MB consegna completa (base64 lines) written dot-stuffed: this client
// against net/textproto's dot writer, which go-smtp's client used.
func BenchmarkDotStuff(b *testing.B) {
	msg := []byte(strings.Repeat(strings.Repeat("QUJD", 19)+"\r\n", 1<<20/78))
	b.Run("smtpc", func(b *testing.B) {
		w := bufio.NewWriterSize(io.Discard, 64<<10)
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			_ = WriteDotStuffed(w, msg)
		}
	})
	b.Run("textproto", func(b *testing.B) {
		tw := textproto.NewWriter(bufio.NewWriterSize(io.Discard, 64<<10))
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			dw := tw.DotWriter()
			_, _ = dw.Write(msg)
			_ = dw.Close()
		}
	})
}
