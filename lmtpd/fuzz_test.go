package lmtpd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/smtpc"
)

// FuzzQueueID: the first header field of any message Postfix hands over (untrusted input)
// never panics, and a queue id found is one field of that header.
func FuzzQueueID(f *testing.F) {
	f.Add([]byte("Received: from a by mx (Postfix) with ESMTPS id 4XyZ12ab\r\n\tfor <b>; Tue\r\n\r\n"))
	f.Add([]byte("Received: id\r\n\r\n"))
	f.Add([]byte("received: x id ;\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		id := queueID(msg)
		if id != "" && (strings.ContainsAny(id, " \t\r\n") || !strings.Contains(string(msg), id)) {
			t.Fatalf("queueID = %q", id)
		}
	})
}

// FuzzParseSearch: any answer of the doveadm API is either a verdict or an error, never a
// panic; a malformed one is never read as "found".
func FuzzParseSearch(f *testing.F) {
	f.Add([]byte(`[["doveadmResponse",[{"mailbox-guid":"x","uid":"1"}],"s"]]`))
	f.Add([]byte(`[["doveadmResponse",[],"s"]]`))
	f.Add([]byte(`[["error",{"type":"exitCode","exitCode":67},"s"]]`))
	f.Add([]byte(`[[]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		found, err := parseSearch(b)
		if err != nil && found {
			t.Fatal("found with an error")
		}
		// A second path: found only for a one-element answer whose first element is the
		// string "doveadmResponse" (however JSON escapes it) followed by a non-empty list.
		if found {
			var v [][]any
			if json.Unmarshal(b, &v) != nil || len(v) != 1 || len(v[0]) < 2 || v[0][0] != "doveadmResponse" {
				t.Fatalf("found in %q", b)
			}
			if hits, ok := v[0][1].([]any); !ok || len(hits) == 0 {
				t.Fatalf("found without hits in %q", b)
			}
		}
	})
}

// FuzzDataRoundTrip: a message of CRLF lines, written by the delivery point's LMTP client
// (smtpc.WriteDotStuffed) and read by the package's LMTP server (dataReader), comes out as it went
// in, however its lines begin with dots.
func FuzzDataRoundTrip(f *testing.F) {
	f.Add([]byte("a\n.\n..\n.b\n"))
	f.Add([]byte(""))
	f.Add([]byte(".\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		lines := strings.Split(strings.ReplaceAll(string(in), "\r", ""), "\n")
		msg := []byte(strings.Join(lines, "\r\n") + "\r\n")
		srv, cli := net.Pipe()
		defer srv.Close()
		go func() {
			w := bufio.NewWriter(cli)
			_ = smtpc.WriteDotStuffed(w, msg)
			_ = w.Flush()
			cli.Close()
		}()
		c := &lmtpConn{s: &lmtpServer{opt: lmtpOptions{readTimeout: 5 * time.Second}}, conn: srv, r: bufio.NewReaderSize(srv, 16)}
		got, err := io.ReadAll(&dataReader{c: c, start: true})
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%q came back as %q (%v)", msg, got, err)
		}
	})
}
