// Package mailtest has the client side that the lab's integration tests share: submitting mail
// over SMTP (STARTTLS + AUTH, as a user's mail client does) and reading mailboxes back over
// IMAP. It is plain library code with no lab knowledge; tests pass it addresses and passwords
// from lab.json.
package mailtest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"time"
)

// Timeout bounds every SMTP and IMAP exchange of this package.
const Timeout = 60 * time.Second

// TLSConfig trusts exactly the PEM certificate in certFile (the lab's self-signed server
// certificate) for serverName.
func TLSConfig(certFile, serverName string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("mailtest: no certificate in %s", certFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// Submission describes how to reach a submission (or any SMTP) listener.
type Submission struct {
	Addr string      // host:port, or unix:/path
	TLS  *tls.Config // nil: no STARTTLS
	User string      // empty: no AUTH
	Pass string
	// LocalAddr, when set, is the client's source IP (the lab's hosts are lo aliases); TCP
	// only.
	LocalAddr string
	// Timeout bounds the whole session; 0 is Timeout (60s). A 100 MB upload on a loaded
	// machine needs more.
	Timeout time.Duration
	// Helo is the EHLO name; default client.mailtest.invalid. Postfix writes it into its
	// Received field, where a test can find a message again without touching its content.
	Helo string
	// DeclareSize gives the message's size in MAIL FROM (RFC 1870 SIZE=), as mail clients
	// do when the server offers SIZE; net/smtp alone never does.
	DeclareSize bool
}

// StepError says which SMTP step failed. Code is the server's reply code (0 when the failure
// was not a reply, e.g. a network error).
type StepError struct {
	Step string // "connect", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"
	Code int
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("SMTP %s: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

func stepErr(step string, err error) error {
	se := &StepError{Step: step, Err: err}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		se.Code = tp.Code
	}
	return se
}

// Dial connects, says EHLO, and does STARTTLS and AUTH PLAIN when s asks for them. The caller
// owns the returned client.
//
// A STARTTLS refused with 454 is tried again on a new connection a few times, as a mail
// client would retry a temporary failure: the integration tests add and remove listeners
// with "postfix reload" while others submit, and an smtpd started while master restarts
// tlsmgr gets "Connection reset by peer" from it and serves its sessions without TLS ("454
// 4.7.0 TLS not available due to local problem"; seen once in CI, December 2026). Such an
// smtpd lives on until it is idle after the next reload, so the attempts span several
// seconds.
func (s Submission) Dial() (*smtp.Client, error) {
	for attempt := 1; ; attempt++ {
		c, err := s.dial()
		var se *StepError
		if err == nil || attempt == tlsAttempts || !errors.As(err, &se) || se.Step != "STARTTLS" || se.Code != 454 {
			return c, err
		}
		time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
	}
}

// tlsAttempts bounds the connections Dial opens when STARTTLS is refused with 454.
const tlsAttempts = 6

func (s Submission) dial() (*smtp.Client, error) {
	d := net.Dialer{Timeout: Timeout}
	network, addr, host := "tcp", s.Addr, ""
	if p, ok := strings.CutPrefix(s.Addr, "unix:"); ok {
		network, addr, host = "unix", p, "localhost"
	} else {
		host, _, _ = net.SplitHostPort(s.Addr)
		if s.LocalAddr != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(s.LocalAddr)}
		}
	}
	conn, err := d.Dial(network, addr)
	if err != nil {
		return nil, stepErr("connect", err)
	}
	limit := s.Timeout
	if limit == 0 {
		limit = Timeout
	}
	_ = conn.SetDeadline(time.Now().Add(limit))
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, stepErr("connect", err)
	}
	helo := s.Helo
	if helo == "" {
		helo = "client.mailtest.invalid"
	}
	if err := c.Hello(helo); err != nil {
		c.Close()
		return nil, stepErr("EHLO", err)
	}
	if s.TLS != nil {
		if err := c.StartTLS(s.TLS); err != nil {
			c.Close()
			return nil, stepErr("STARTTLS", err)
		}
	}
	if s.User != "" {
		// net/smtp's PlainAuth refuses to send the password unless the connection is TLS (or
		// to localhost), which is the behaviour a mail client must have. Its host argument
		// must be the name given to NewClient.
		if err := c.Auth(smtp.PlainAuth("", s.User, s.Pass, host)); err != nil {
			c.Close()
			return nil, stepErr("AUTH", err)
		}
	}
	return c, nil
}

// Send submits msg from the envelope sender to the recipients. On failure the error is a
// *StepError naming the step the server refused.
func (s Submission) Send(from string, to []string, msg []byte) error {
	c, err := s.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := s.mail(c, from, len(msg)); err != nil {
		return stepErr("MAIL", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return stepErr("RCPT", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return stepErr("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return stepErr("DATA", err)
	}
	if err := w.Close(); err != nil {
		return stepErr("DATA", err)
	}
	_ = c.Quit()
	return nil
}

// mail says MAIL FROM, with SIZE= when s.DeclareSize.
func (s Submission) mail(c *smtp.Client, from string, size int) error {
	if !s.DeclareSize {
		return c.Mail(from)
	}
	id, err := c.Text.Cmd("MAIL FROM:<%s> SIZE=%d", from, size)
	if err != nil {
		return err
	}
	c.Text.StartResponse(id)
	defer c.Text.EndResponse(id)
	_, _, err = c.Text.ReadResponse(250)
	return err
}

// SendDroppingReply submits msg like Send but closes the connection right after the final
// ".", without reading the server's reply: a client whose reply was lost. Postfix may or may
// not have queued the message; the client cannot know and retries.
func (s Submission) SendDroppingReply(from string, to []string, msg []byte) error {
	c, err := s.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(from); err != nil {
		return stepErr("MAIL", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return stepErr("RCPT", err)
		}
	}
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return stepErr("DATA", err)
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return stepErr("DATA", err)
	}
	w := c.Text.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return stepErr("DATA", err)
	}
	return w.Close() // writes the final dot; the reply is never read
}

// Token returns a unique token to put in a Subject and find the message again.
func Token(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Message builds a small RFC 5322 text message with CRLF line ends.
func Message(from string, to []string, subject, body string) []byte {
	var b strings.Builder
	domain := from[strings.LastIndexByte(from, '@')+1:]
	fmt.Fprintf(&b, "From: <%s>\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", "<"+strings.Join(to, ">, <")+">")
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", Token("mailtest"), domain)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
	b.WriteString(strings.ReplaceAll(strings.TrimRight(body, "\n"), "\n", "\r\n"))
	b.WriteString("\r\n")
	return []byte(b.String())
}
