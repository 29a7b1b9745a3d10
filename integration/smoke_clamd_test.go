//go:build integration

package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/lab"
)

// eicar is the standard 68-byte antivirus test file.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// instream is a deliberately tiny clamd INSTREAM client (the production one lives in pec/):
// "zINSTREAM\0", then <u32 big-endian length><chunk>..., then a zero length; the reply ends
// with NUL.
func instream(t *testing.T, addr string, data []byte) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriter(conn)
	w.WriteString("zINSTREAM\x00")
	for len(data) > 0 {
		n := min(len(data), 4096)
		binary.Write(w, binary.BigEndian, uint32(n))
		w.Write(data[:n])
		data = data[n:]
	}
	binary.Write(w, binary.BigEndian, uint32(0))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString(0)
	if err != nil {
		t.Fatalf("clamd reply: %v", err)
	}
	return strings.TrimRight(reply, "\x00")
}

// clamd finds EICAR (bare and as a MIME attachment) with the lab's test signatures and passes
// a clean message.
func TestClamd(t *testing.T) {
	t.Parallel()
	l := lab.ForTest(t)
	attached := "From: <oscar@posta.test>\r\nTo: <alice@pec-a.test>\r\nSubject: virus\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=eicar.com\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(eicar)) + "\r\n--b1--\r\n"
	for name, tc := range map[string]struct {
		data  string
		found bool
	}{
		"eicar":      {eicar, true},
		"attachment": {attached, true},
		"clean":      {"From: <oscar@posta.test>\r\nSubject: hello\r\n\r\nNothing to see here.\r\n", false},
		// What the reception point scans of a large busta after its postacert.eml
		// (pec.Engine.scanReceived): the busta with that part's bytes cut out.
		"busta without its message": {"From: per conto di: <alice@pec-a.test>\r\nSubject: POSTA CERTIFICATA: x\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n--s\r\n" +
			"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\n" + eicar + "\r\n" +
			"--m\r\nContent-Type: message/rfc822; name=postacert.eml\r\nContent-Disposition: inline; filename=postacert.eml\r\n\r\n" +
			"\r\n--m--\r\n--s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\r\nMIIB\r\n--s--\r\n", true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := instream(t, l.Clamd.Addr, []byte(tc.data))
			if tc.found && !strings.HasSuffix(got, " FOUND") {
				t.Errorf("clamd says %q, want a FOUND", got)
			}
			if !tc.found && got != "stream: OK" {
				t.Errorf("clamd says %q, want stream: OK", got)
			}
		})
	}
}
