package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// nullMilter is the access point's milter traffic without its work (issue 19, P2): what
// Postfix and the milter protocol cost at end-of-message when the milter answers at once.
// It negotiates pec-milter's protocol options (milter/server.go: no reply to any event but
// MAIL FROM and end-of-message), keeps the header and the body as pec-milter does, and at
// end-of-message makes the modifications of pec-milter's hand-back of a busta
// (milter/access.go, handBack): every header field deleted, a busta's fields added, the body
// replaced by as many bytes as a busta's, and a recipient added (the message's own, which
// Postfix's cleanup drops as a duplicate; pec-milter's confirmation recipient is delivered
// later, off the end-of-message path). No scan, no signature, no commit: the listener
// behind it is the floor under the access point's end-of-message latency that only the
// milter protocol and Postfix's rewrite of its queue file set.
//
// With also set, the message also goes to that address, and Postfix and Dovecot deliver
// it there: the work a PEC submission brings about after its end-of-message (the busta to
// its recipient, the accettazione to the sender's mailbox), less the delivery of the
// confirmation to pec-lmtpd, with none of our processes' own. Under a closed loop that
// saturates the two cores, every session waits for the deliveries of the earlier messages,
// so this listener is the floor under P2 at 4 sessions if pec-milter and pec-lmtpd cost
// nothing.
//
// With a scanner, the milter also has clamd scan the message as pec-milter does: streamed
// while Postfix sends it from milter.stream_scan_from's default on (milter/session.go), whole
// at end-of-message below, the modifications sent before the verdict (the early hand-back)
// and the reply after it. That listener is pec-milter less our work (no index, no content
// policy, no signature, no commit): the floor under P2' that the protocol, Postfix and
// clamd set together, with the contention of the same run.
type nullMilter struct {
	ln   net.Listener
	srv  *milter.Server
	sock string
}

// bustaExtra is how much longer than the submission its busta is, header fields aside: a
// 10,773-byte submission of this bench became a 17,906-byte busta in the lab (December
// 2026), about 1 KB of it header fields; the text part, daticert.xml and the signature with
// its certificates add the rest whatever the submission's size.
const bustaExtra = 6200

// bustaFields are header fields shaped like a busta's (pec/busta.go), so that the milter
// adds as many as pec-milter does.
var bustaFields = [][2]string{
	{"Subject", " POSTA CERTIFICATA: bench"}, {"X-Riferimento-Message-ID", " <bench@bench>"},
	{"Date", " Thu, 3 Dec 2026 12:00:00 +0100"}, {"Message-ID", " <opec.20261203120000.bench@pec-a.test>"},
	{"Reply-To", " alice@pec-a.test"}, {"X-Trasporto", " posta-certificata"}, {"To", " oscar@posta.test"},
	{"From", " \"Per conto di: alice@pec-a.test\" <posta-certificata@pec-a.test>"},
	{"X-TipoRicevuta", " completa"}, {"MIME-Version", " 1.0"},
	{"Content-Type", " multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=\"sha-256\";\n\tboundary=\"----bench.s\""},
}

// startNullMilter serves the null milter on a unix socket in a directory of its own that
// Postfix's smtpd can reach.
func startNullMilter(also string, scanner pec.Scanner) (*nullMilter, error) {
	dir, err := os.MkdirTemp("", "bench-nullmilter-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	n := &nullMilter{sock: filepath.Join(dir, "milter.sock")}
	if n.ln, err = net.Listen("unix", n.sock); err != nil {
		return nil, err
	}
	if err := os.Chmod(n.sock, 0o666); err != nil {
		n.ln.Close()
		return nil, err
	}
	n.srv = milter.NewServer(
		milter.WithMilter(func() milter.Milter { return &nullSession{also: also, scanner: scanner} }),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptChangeBody|milter.OptAddRcpt|milter.OptAddRcptWithArgs),
		milter.WithProtocols(milter.OptHeaderLeadingSpace|milter.OptNoUnknown|milter.OptNoHelo|milter.OptNoData|
			milter.OptNoConnReply|milter.OptNoRcptReply|milter.OptNoHeaderReply|milter.OptNoEOHReply|milter.OptNoBodyReply),
	)
	go func() {
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, milter.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "bench: null milter:", err)
		}
	}()
	return n, nil
}

// Close stops the milter and removes its socket.
func (n *nullMilter) Close() {
	_ = n.srv.Close()
	_ = os.RemoveAll(filepath.Dir(n.sock))
}

// nullSession is one SMTP session of the null milter.
type nullSession struct {
	milter.NoOpMilter
	also    string
	scanner pec.Scanner     // nil: no scan
	stream  *pec.ScanStream // the scan fed as the body comes
	rcpt    string
	fields  []nullField
	perName map[string]int
	msg     []byte
}

type nullField struct {
	name  string
	index int
}

func (x *nullSession) RcptTo(rcptTo string, _ string, _ milter.Modifier) (*milter.Response, error) {
	x.rcpt = rcptTo
	return milter.RespContinue, nil
}

func (x *nullSession) Header(name, value string, _ milter.Modifier) (*milter.Response, error) {
	if x.perName == nil {
		x.perName = map[string]int{}
	}
	k := strings.ToLower(name)
	x.perName[k]++
	x.fields = append(x.fields, nullField{name, x.perName[k]})
	// As pec-milter rebuilds it (milter/session.go): the folding LFs back to CRLF, so that
	// clamd parses the same message.
	value = strings.ReplaceAll(strings.ReplaceAll(value, "\r\n", "\n"), "\n", "\r\n")
	x.msg = append(append(append(append(x.msg, name...), ':'), value...), '\r', '\n')
	return milter.RespContinue, nil
}

// Headers ends the header with its empty line, as pec-milter does: without it clamd would
// not see a mail with a body and a base64 part, and would scan less than it does for
// pec-milter.
func (x *nullSession) Headers(milter.Modifier) (*milter.Response, error) {
	x.msg = append(x.msg, '\r', '\n')
	return milter.RespContinue, nil
}

// streamFrom is pec-milter's default milter.stream_scan_from.
const streamFrom = 256 << 10

func (x *nullSession) BodyChunk(chunk []byte, _ milter.Modifier) (*milter.Response, error) {
	x.msg = append(x.msg, chunk...)
	switch {
	case x.scanner == nil:
	case x.stream != nil:
		x.stream.Add(chunk) // go-milter reads every packet into a buffer of its own
	case len(x.msg) >= streamFrom:
		x.stream = pec.NewScanStream(x.scanner, 0)
		x.stream.Add(bytes.Clone(x.msg))
	}
	return milter.RespContinue, nil
}

// verdict is the scan's: the stream's, or a scan of the whole message.
func (x *nullSession) verdict() (string, error) {
	if x.stream == nil {
		return x.scanner.Scan(context.Background(), bytes.NewReader(x.msg))
	}
	x.stream.Finish()
	return x.stream.Wait()
}

func (x *nullSession) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	defer x.reset()
	for i := len(x.fields) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(x.fields[i].index, x.fields[i].name, ""); err != nil {
			return nil, err
		}
	}
	for _, f := range bustaFields {
		if err := m.AddHeader(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	if err := m.ReplaceBody(bytes.NewReader(busta(len(x.msg)))); err != nil {
		return nil, err
	}
	if err := m.AddRecipient(x.rcpt, "NOTIFY=NEVER"); err != nil {
		return nil, err
	}
	if x.also != "" {
		if err := m.AddRecipient(x.also, "NOTIFY=NEVER"); err != nil {
			return nil, err
		}
	}
	if x.scanner != nil {
		switch virus, err := x.verdict(); {
		case err != nil:
			return milter.RespTempFail, nil
		case virus != "":
			return milter.RespReject, nil
		}
	}
	return milter.RespAccept, nil
}

func (x *nullSession) Abort(milter.Modifier) error {
	x.reset()
	return nil
}

func (x *nullSession) reset() {
	if x.stream != nil {
		x.stream.Close()
		x.stream = nil
	}
	x.fields, x.perName, x.msg = nil, nil, x.msg[:0]
}

// busta is a body as long as the busta of a size-byte submission: base64-like lines.
func busta(size int) []byte {
	n := size + bustaExtra
	line := strings.Repeat("QUJD", 19) + "\r\n"
	b := bytes.Repeat([]byte(line), n/len(line)+1)
	return b[:n-n%len(line)]
}
