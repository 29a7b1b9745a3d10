// Command peerprobe connects to a unix socket, optionally sends some bytes, and prints one JSON
// line saying what happened. The integration tests run it as another user (postfix, nobody)
// to check who may use the PEC sockets: pec-milter's milter and confirmation sockets, which
// admit only Postfix's user by its credentials, and Postfix's reinjection socket, which file
// permissions close to everybody but root, postfix and group postdrop.
//
//	peerprobe -socket /tmp/pec-lab/a/run/milter.sock -send 0000000d4f00000006000001ff001fffff
//
// Output: {"connect":"ok" or the error, "reply":"what the server sent (at most -read bytes)",
// "closed":true when the server closed the connection without sending anything}.
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"time"
)

type result struct {
	Connect string `json:"connect"`
	Reply   string `json:"reply"`
	Closed  bool   `json:"closed"`
	PID     int    `json:"pid"`
}

func main() {
	sock := flag.String("socket", "", "unix socket path")
	send := flag.String("send", "", "bytes to send first, in hex")
	n := flag.Int("read", 64, "read at most this many bytes")
	flag.Parse()
	r := result{Connect: "ok", PID: os.Getpid()}
	out := json.NewEncoder(os.Stdout)
	c, err := net.DialTimeout("unix", *sock, 5*time.Second)
	if err != nil {
		r.Connect = err.Error()
		out.Encode(r) //nolint:errcheck
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	if *send != "" {
		b, err := hex.DecodeString(*send)
		if err != nil {
			os.Exit(2)
		}
		c.Write(b) //nolint:errcheck // a refused connection may be closed already; the read says so
	}
	buf := make([]byte, *n)
	k, err := io.ReadAtLeast(c, buf, 1)
	r.Reply = string(buf[:k])
	r.Closed = k == 0 && (errors.Is(err, io.EOF) || isReset(err))
	out.Encode(r) //nolint:errcheck
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
