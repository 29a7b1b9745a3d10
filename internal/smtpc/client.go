// Package smtpc is the client side of SMTP (RFC 5321) and LMTP (RFC 2033) as our processes
// speak it to Postfix and Dovecot: the commands a mail transaction needs, each answered before
// the next, and the message written dot-stuffed from whole buffers. go-smtp's client wrote the
// data through net/textproto's dot writer one byte at a time: about a quarter of pec-lmtpd's
// CPU for a 1 MB consegna completa (issue 19), and the same cost again in the drainer that
// reinjects it. Replies other than the expected ones come back as *smtp.SMTPError, as
// go-smtp gave them (callers tell a refusal from a broken connection with errors.As);
// anything else is a broken connection.
package smtpc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Client is one SMTP or LMTP connection. It is not safe for concurrent use.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration // each command's round trip, and the wait for each reply after the data
	ext     map[string]bool
}

// maxLine bounds a reply line (RFC 5321 §4.5.3.1.5: 512; Postfix's and Dovecot's are short).
const maxLine = 4096

// Dial reads the greeting of conn and says LHLO (lmtp) or EHLO hostname. Every command and
// every reply after the data has timeout, set as conn's deadline (a caller that bounds a
// whole transaction caps the deadlines in its net.Conn).
func Dial(conn net.Conn, lmtp bool, hostname string, timeout time.Duration) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriterSize(conn, 64<<10), timeout: timeout, ext: map[string]bool{}}
	c.deadline()
	if _, err := c.expect(220); err != nil {
		return nil, err
	}
	hello := "EHLO "
	if lmtp {
		hello = "LHLO "
	}
	if err := validLine(hostname); err != nil {
		return nil, err
	}
	lines, err := c.cmd(250, hello+hostname)
	if err != nil {
		return nil, err
	}
	for _, l := range lines[1:] {
		kw, _, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(kw)] = true
	}
	return c, nil
}

func (c *Client) deadline() { _ = c.conn.SetDeadline(time.Now().Add(c.timeout)) }

// Mail starts a transaction (BODY=8BITMIME when the server offers it: the message may carry
// 8-bit text).
func (c *Client) Mail(from string) error {
	if err := validLine(from); err != nil {
		return err
	}
	cmd := "MAIL FROM:<" + from + ">"
	if c.ext["8BITMIME"] {
		cmd += " BODY=8BITMIME"
	}
	_, err := c.cmd(250, cmd)
	return err
}

// Rcpt adds a recipient (250 or 251).
func (c *Client) Rcpt(to string) error {
	if err := validLine(to); err != nil {
		return err
	}
	_, err := c.cmd(25, "RCPT TO:<"+to+">") // 250 or 251
	return err
}

// Reset aborts the transaction under way.
func (c *Client) Reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

// Quit says QUIT and closes the connection.
func (c *Client) Quit() error {
	_, err := c.cmd(221, "QUIT")
	c.conn.Close()
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Data sends DATA and, on 354, the message and the final dot; the replies are read with
// Reply (LMTP: one per accepted recipient; SMTP: one). An *smtp.SMTPError is the server's
// refusal of DATA (nothing sent); any other error a broken connection.
func (c *Client) Data(msg []byte) error {
	if _, err := c.cmd(354, "DATA"); err != nil {
		return err
	}
	c.deadline()
	if err := WriteDotStuffed(c.w, msg); err != nil {
		return err
	}
	return c.w.Flush()
}

// Reply reads the next reply after the data: nil for 2xx, an *smtp.SMTPError for the others,
// any other error when none could be read.
func (c *Client) Reply() error {
	c.deadline()
	_, err := c.expect(2)
	return err
}

// cmd sends one command line and reads its reply, which must begin with want (a whole code
// such as 250, or its leading digits such as 2 or 25).
func (c *Client) cmd(want int, line string) ([]string, error) {
	c.deadline()
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	return c.expect(want)
}

// expect reads one reply, single or multi-line, and checks its code against want.
func (c *Client) expect(want int) ([]string, error) {
	var lines []string
	code := 0
	for {
		b, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxLine {
			return nil, errors.New("smtpc: reply line too long")
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		l := strings.TrimRight(string(b), "\r\n")
		n, cerr := strconv.Atoi(l[:min(3, len(l))])
		if len(l) < 3 || cerr != nil || n < 100 || n > 599 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') || (code != 0 && n != code) {
			return nil, fmt.Errorf("smtpc: malformed reply %q", l)
		}
		code = n
		lines = append(lines, strings.TrimSpace(l[min(4, len(l)):]))
		if len(l) == 3 || l[3] == ' ' {
			break
		}
	}
	if !codeIs(code, want) {
		return lines, ReplyError(code, lines)
	}
	return lines, nil
}

// codeIs: the code begins with the digits of want.
func codeIs(code, want int) bool {
	for d := code; d > 0; d /= 10 {
		if d == want {
			return true
		}
	}
	return false
}

// ReplyError is the *smtp.SMTPError of a reply; an enhanced status code (RFC 3463) opening
// its text is parsed out of it.
func ReplyError(code int, lines []string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: strings.Join(lines, "\n")}
	enh, rest, ok := strings.Cut(lines[0], " ")
	if !ok {
		return e
	}
	var ec smtp.EnhancedCode
	parts := strings.Split(enh, ".")
	if len(parts) != 3 {
		return e
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return e
		}
		ec[i] = n
	}
	e.EnhancedCode = ec
	rest = strings.Join(append([]string{rest}, lines[1:]...), "\n")
	e.Message = strings.ReplaceAll(rest, "\n"+enh+" ", "\n")
	return e
}

// EnhancedText is an enhanced status code as a reply writes it ("5.1.1"); "" for none.
func EnhancedText(ec smtp.EnhancedCode) string {
	if ec == smtp.NoEnhancedCode || ec == (smtp.EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
}

func validLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("smtpc: a command argument contains CR or LF")
	}
	return nil
}

// WriteDotStuffed writes msg as the data of a mail transaction (RFC 5321 §4.5.2): a line
// beginning with a dot gets a second one, a bare LF becomes CRLF (as net/textproto's dot
// writer did), the last line is ended if it was not, then the line holding a single dot. A
// bare CR inside a line is left as it is (the messages here come from Postfix, canonical
// CRLF; net/textproto added a CR before the LF of "\r\r\n"). It works a line at a time with a
// vectorised search for the line end.
func WriteDotStuffed(w *bufio.Writer, msg []byte) error {
	for len(msg) > 0 {
		if msg[0] == '.' {
			w.WriteByte('.')
		}
		i := bytes.IndexByte(msg, '\n')
		if i < 0 {
			w.Write(msg)
			if msg[len(msg)-1] == '\r' {
				w.WriteByte('\n')
			} else {
				w.WriteString("\r\n")
			}
			break
		}
		if i > 0 && msg[i-1] == '\r' {
			w.Write(msg[:i+1])
		} else {
			w.Write(msg[:i])
			w.WriteString("\r\n")
		}
		msg = msg[i+1:]
	}
	_, err := w.WriteString(".\r\n")
	return err
}
