package lmtpd

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/internal/smtpc"
	"github.com/gestore-pec/gestore/lmtpd/dovecottest"
)

// A message whose lines begin with dots, or end with a bare LF, is stored as it was (Dovecot
// played by go-smtp's server, which removes the stuffing), and the client sends BODY=8BITMIME
// as go-smtp's did.
func TestDovecotStoresDotLines(t *testing.T) {
	dv := dovecottest.New(t, "bruno@pec-b.test")
	c := dovecotClient(t, dv.Addr())
	body := ".\r\n..\r\n.a\r\nline\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 3000) + ".\r\n"
	msg := []byte("Message-ID: <d@x>\r\n\r\n" + body)
	if res := c.Deliver(context.Background(), "a@x", []string{"bruno@pec-b.test"}, msg); res["bruno@pec-b.test"].Code != 250 {
		t.Fatalf("%+v", res)
	}
	got := dv.Messages("bruno@pec-b.test")
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatalf("stored %d messages; the first differs from what was sent", len(got))
	}
}

// After a quiet spell Dovecot has dropped every idle connection: the next delivery goes
// through all of them to a fresh one instead of answering 451 (it gave up after the second).
func TestDovecotAllIdleGone(t *testing.T) {
	dv := dovecottest.New(t, "bruno@pec-b.test")
	c := dovecotClient(t, dv.Addr())
	var conns []*smtpc.Client
	for range 4 {
		lc, fresh, err := c.get(context.Background())
		if err != nil || !fresh {
			t.Fatalf("dial: %v (fresh %v)", err, fresh)
		}
		conns = append(conns, lc)
	}
	for _, lc := range conns {
		c.put(lc)
		lc.Close() // Dovecot dropped it
	}
	msg := []byte("Message-ID: <q@x>\r\n\r\nhi\r\n")
	if res := c.Deliver(context.Background(), "a@x", []string{"bruno@pec-b.test"}, msg); res["bruno@pec-b.test"].Code != 250 {
		t.Fatalf("with every idle connection gone: %+v", res)
	}
}
