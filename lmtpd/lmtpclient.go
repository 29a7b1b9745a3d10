package lmtpd

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

// lmtpClient is one LMTP connection of the delivery point to Dovecot (RFC 2033): the commands
// the delivery needs, each answered before the next, and the message written dot-stuffed
// from whole buffers. go-smtp's client wrote it through net/textproto's dot writer one byte
// at a time, about a quarter of pec-lmtpd's CPU for a 1 MB consegna completa (issue 19).
// Replies other than the expected ones come back as *smtp.SMTPError, as go-smtp gave them;
// anything else is a broken connection.
type lmtpClient struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration // each command's round trip, and the wait for each reply after the data
	ext     map[string]bool
}

// lmtpMaxLine bounds a reply line (RFC 5321 §4.5.3.1.5: 512; Dovecot's are short).
const lmtpMaxLine = 4096

// dialLMTP reads the greeting of conn and says LHLO hostname.
func dialLMTP(conn net.Conn, hostname string, timeout time.Duration) (*lmtpClient, error) {
	c := &lmtpClient{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriterSize(conn, 64<<10), timeout: timeout, ext: map[string]bool{}}
	c.deadline()
	if _, err := c.expect(220); err != nil {
		return nil, err
	}
	lines, err := c.cmd(250, "LHLO "+hostname)
	if err != nil {
		return nil, err
	}
	for _, l := range lines[1:] {
		kw, _, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(kw)] = true
	}
	return c, nil
}

func (c *lmtpClient) deadline() { _ = c.conn.SetDeadline(time.Now().Add(c.timeout)) }

// mail starts a transaction (BODY=8BITMIME when Dovecot offers it, as go-smtp's client did:
// the message may carry 8-bit text).
func (c *lmtpClient) mail(from string) error {
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

func (c *lmtpClient) rcpt(to string) error {
	if err := validLine(to); err != nil {
		return err
	}
	_, err := c.cmd(25, "RCPT TO:<"+to+">") // 250 or 251
	return err
}

func (c *lmtpClient) reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

// quit says QUIT and closes the connection.
func (c *lmtpClient) quit() error {
	_, err := c.cmd(221, "QUIT")
	c.conn.Close()
	return err
}

func (c *lmtpClient) close() error { return c.conn.Close() }

// data sends DATA and, on 354, the message and the final dot. An *smtp.SMTPError is the
// server's refusal of DATA (nothing sent); any other error a broken connection.
func (c *lmtpClient) data(msg []byte) error {
	if _, err := c.cmd(354, "DATA"); err != nil {
		return err
	}
	c.deadline()
	if err := writeDotStuffed(c.w, msg); err != nil {
		return err
	}
	return c.w.Flush()
}

// reply reads the next reply after the data (one per accepted recipient): nil for 2xx, an
// *smtp.SMTPError for the others, any other error when none could be read.
func (c *lmtpClient) reply() error {
	c.deadline()
	_, err := c.expect(2)
	return err
}

// cmd sends one command line and reads its reply, which must begin with want (a whole code
// such as 250, or its leading digits such as 2 or 25).
func (c *lmtpClient) cmd(want int, line string) ([]string, error) {
	c.deadline()
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	return c.expect(want)
}

// expect reads one reply, single or multi-line, and checks its code against want.
func (c *lmtpClient) expect(want int) ([]string, error) {
	var lines []string
	code := 0
	for {
		b, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(b) > lmtpMaxLine {
			return nil, errors.New("lmtp: reply line too long")
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
			return nil, fmt.Errorf("lmtp: malformed reply %q", l)
		}
		code = n
		lines = append(lines, strings.TrimSpace(l[min(4, len(l)):]))
		if len(l) == 3 || l[3] == ' ' {
			break
		}
	}
	if !codeIs(code, want) {
		return lines, replyError(code, lines)
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

// replyError is the *smtp.SMTPError of a reply; an enhanced status code (RFC 3463) opening
// its text is parsed out of it.
func replyError(code int, lines []string) *smtp.SMTPError {
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

// enhancedText is an enhanced status code as a reply writes it ("5.1.1"); "" for none.
func enhancedText(ec smtp.EnhancedCode) string {
	if ec == smtp.NoEnhancedCode || ec == (smtp.EnhancedCode{}) {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
}

func validLine(s string) error {
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("lmtp: a command argument contains CR or LF")
	}
	return nil
}

// writeDotStuffed writes msg as the data of a mail transaction (RFC 5321 §4.5.2): a line
// beginning with a dot gets a second one, a bare LF becomes CRLF (as net/textproto's dot
// writer did), the last line is ended if it was not, then the line holding a single dot. A
// bare CR inside a line is left as it is (the messages here come from Postfix, canonical
// CRLF; net/textproto added a CR before the LF of "\r\r\n"). It works a line at a time with a
// vectorised search for the line end.
func writeDotStuffed(w *bufio.Writer, msg []byte) error {
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
