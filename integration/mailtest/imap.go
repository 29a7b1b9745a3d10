package mailtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// IMAP is a minimal IMAP4rev1 client (RFC 3501): LOGIN, SELECT, UID SEARCH, UID FETCH and
// LOGOUT over a plaintext connection, enough to read a lab mailbox back. It is not safe for
// concurrent use.
type IMAP struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

// Response is one untagged response line; the contents of any literals ({n} followed by n
// bytes) are in Literals, in order, and replaced by "{n}" in Line.
type Response struct {
	Line     string
	Literals [][]byte
}

// DialIMAP connects and reads the server greeting.
func DialIMAP(addr string) (*IMAP, error) {
	conn, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		return nil, err
	}
	c := &IMAP{conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(Timeout))
	greet, err := c.readResponse()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("imap: greeting: %w", err)
	}
	if !strings.HasPrefix(greet.Line, "* OK") && !strings.HasPrefix(greet.Line, "* PREAUTH") {
		conn.Close()
		return nil, fmt.Errorf("imap: greeting %q", greet.Line)
	}
	return c, nil
}

// Close closes the connection without LOGOUT.
func (c *IMAP) Close() error { return c.conn.Close() }

// Quote makes an IMAP quoted string (RFC 3501 §4.3).
func Quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Command sends one command and returns its untagged responses. A tagged NO or BAD is an error
// carrying the server's text.
func (c *IMAP) Command(format string, args ...any) ([]Response, error) {
	c.tag++
	tag := "m" + strconv.Itoa(c.tag)
	cmd := fmt.Sprintf(format, args...)
	_ = c.conn.SetDeadline(time.Now().Add(Timeout))
	if _, err := io.WriteString(c.conn, tag+" "+cmd+"\r\n"); err != nil {
		return nil, err
	}
	var out []Response
	for {
		resp, err := c.readResponse()
		if err != nil {
			return out, err
		}
		if rest, ok := strings.CutPrefix(resp.Line, tag+" "); ok {
			if strings.HasPrefix(rest, "OK") {
				return out, nil
			}
			verb, _, _ := strings.Cut(cmd, " ")
			return out, fmt.Errorf("imap: %s: %s", verb, rest)
		}
		out = append(out, resp)
	}
}

// readResponse reads one response line, following literals.
func (c *IMAP) readResponse() (Response, error) {
	var resp Response
	var line strings.Builder
	for {
		s, err := c.r.ReadString('\n')
		if err != nil {
			return resp, err
		}
		s = strings.TrimRight(s, "\r\n")
		line.WriteString(s)
		n, ok := literalSize(s)
		if !ok {
			resp.Line = line.String()
			return resp, nil
		}
		lit := make([]byte, n)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			return resp, err
		}
		resp.Literals = append(resp.Literals, lit)
	}
}

// literalSize reports whether a line ends with a literal announcement "{n}".
func literalSize(s string) (int, bool) {
	if !strings.HasSuffix(s, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(s, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(s[i+1 : len(s)-1])
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Login authenticates with LOGIN.
func (c *IMAP) Login(user, pass string) error {
	_, err := c.Command("LOGIN %s %s", Quote(user), Quote(pass))
	return err
}

// Select opens a mailbox and returns its message count.
func (c *IMAP) Select(mailbox string) (int, error) {
	rs, err := c.Command("SELECT %s", Quote(mailbox))
	if err != nil {
		return 0, err
	}
	for _, r := range rs {
		f := strings.Fields(r.Line)
		if len(f) == 3 && f[0] == "*" && f[2] == "EXISTS" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("imap: SELECT without EXISTS")
}

// SearchHeader returns the UIDs of the messages whose header field contains value
// (case-insensitive substring, RFC 3501 §6.4.4).
func (c *IMAP) SearchHeader(field, value string) ([]uint32, error) {
	return c.UIDSearch("HEADER " + Quote(field) + " " + Quote(value))
}

// UIDSearch runs UID SEARCH with criteria as given (RFC 3501 §6.4.4, for example
// `UID 17:* TEXT "token"`) and returns the UIDs found.
func (c *IMAP) UIDSearch(criteria string) ([]uint32, error) {
	rs, err := c.Command("UID SEARCH %s", criteria)
	if err != nil {
		return nil, err
	}
	var uids []uint32
	for _, r := range rs {
		rest, ok := strings.CutPrefix(r.Line, "* SEARCH")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			n, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("imap: bad SEARCH response %q", r.Line)
			}
			uids = append(uids, uint32(n))
		}
	}
	return uids, nil
}

// UIDNext returns the UID the next message delivered to mailbox will get (STATUS UIDNEXT,
// RFC 3501 §6.3.10): messages from then on are those with a UID at least this.
func (c *IMAP) UIDNext(mailbox string) (uint32, error) {
	rs, err := c.Command("STATUS %s (UIDNEXT)", Quote(mailbox))
	if err != nil {
		return 0, err
	}
	for _, r := range rs {
		_, rest, ok := strings.Cut(r.Line, "(UIDNEXT ")
		if !strings.HasPrefix(r.Line, "* STATUS") || !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), ")"), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("imap: bad STATUS response %q", r.Line)
		}
		return uint32(n), nil
	}
	return 0, errors.New("imap: STATUS without UIDNEXT")
}

// Fetch returns the whole message with the given UID, byte for byte (BODY.PEEK[], so the
// \Seen flag is not set).
func (c *IMAP) Fetch(uid uint32) ([]byte, error) {
	rs, err := c.Command("UID FETCH %d BODY.PEEK[]", uid)
	if err != nil {
		return nil, err
	}
	for _, r := range rs {
		if strings.Contains(r.Line, "FETCH") && strings.Contains(r.Line, "BODY[]") && len(r.Literals) > 0 {
			return r.Literals[0], nil
		}
	}
	return nil, fmt.Errorf("imap: no body for UID %d", uid)
}

// Logout says goodbye and closes the connection.
func (c *IMAP) Logout() error {
	_, err := c.Command("LOGOUT")
	cerr := c.conn.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return cerr
}

// Mailbox is an IMAP account to read.
type Mailbox struct {
	Addr string // host:port of the IMAP server
	User string
	Pass string
}

// WaitFor polls the INBOX until messages whose Subject contains token arrive, and returns
// them (raw bytes, in UID order). It returns as soon as at least min are there, or fails
// when ctx ends. Match on a token, not on the whole subject: in PEC wiring the message
// arrives as a busta di trasporto whose subject is "POSTA CERTIFICATA: <original>".
func (m Mailbox) WaitFor(ctx context.Context, token string, min int) ([][]byte, error) {
	return m.WaitForHeader(ctx, "Subject", token, min)
}

// WaitForHeader is WaitFor on another header field: for messages whose content a test must not
// touch (signed PEC messages from elsewhere), the token can ride in the EHLO name that Postfix
// writes into its Received field (Submission.Helo).
func (m Mailbox) WaitForHeader(ctx context.Context, field, token string, min int) ([][]byte, error) {
	var last error
	for {
		msgs, err := m.find(field, token)
		if err == nil && len(msgs) >= min {
			return msgs, nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("%d of %d messages with %q in %s", len(msgs), min, token, field)
		}
		select {
		case <-ctx.Done():
			return msgs, fmt.Errorf("mailtest: %s INBOX at %s: %w (last: %v)", m.User, m.Addr, ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (m Mailbox) find(field, token string) ([][]byte, error) {
	c, err := DialIMAP(m.Addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.Login(m.User, m.Pass); err != nil {
		return nil, err
	}
	if _, err := c.Select("INBOX"); err != nil {
		return nil, err
	}
	uids, err := c.SearchHeader(field, token)
	if err != nil {
		return nil, err
	}
	var msgs [][]byte
	for _, u := range uids {
		b, err := c.Fetch(u)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, b)
	}
	_ = c.Logout()
	return msgs, nil
}
