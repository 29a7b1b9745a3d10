package mailtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeIMAP serves one connection with canned replies: for each command line it receives it
// writes the reply whose key is the command name (without tag), ending with "<tag> OK".
func fakeIMAP(t *testing.T, replies map[string]string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				fmt.Fprint(conn, "* OK fake ready\r\n")
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					tag, cmd, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
					verb := strings.Fields(cmd)[0]
					if verb == "UID" {
						verb += " " + strings.Fields(cmd)[1]
					}
					if verb == "LOGIN" && !strings.Contains(cmd, `"s\"ecret"`) {
						fmt.Fprintf(conn, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag)
						continue
					}
					fmt.Fprint(conn, replies[verb])
					fmt.Fprintf(conn, "%s OK done\r\n", tag)
					if verb == "LOGOUT" {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func TestWaitForReadsLiterals(t *testing.T) {
	body := "Subject: POSTA CERTIFICATA: hi tok-1\r\n\r\nline {3}\r\n"
	addr := fakeIMAP(t, map[string]string{
		"SELECT":     "* 2 EXISTS\r\n* OK [UIDVALIDITY 1] x\r\n",
		"UID SEARCH": "* SEARCH 7\r\n",
		"UID FETCH":  fmt.Sprintf("* 2 FETCH (UID 7 BODY[] {%d}\r\n%s)\r\n", len(body), body),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := Mailbox{Addr: addr, User: "u@x.test", Pass: `s"ecret`}.WaitFor(ctx, "tok-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || string(msgs[0]) != body {
		t.Fatalf("got %q, want %q", msgs, body)
	}
}

func TestLoginFailureIsAnError(t *testing.T) {
	addr := fakeIMAP(t, nil)
	c, err := DialIMAP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("u@x.test", "wrong")
	if err == nil || !strings.Contains(err.Error(), "AUTHENTICATIONFAILED") {
		t.Fatalf("Login with a wrong password: err = %v", err)
	}
}

func TestWaitForGivesUp(t *testing.T) {
	addr := fakeIMAP(t, map[string]string{"SELECT": "* 0 EXISTS\r\n", "UID SEARCH": "* SEARCH\r\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := (Mailbox{Addr: addr, User: "u", Pass: `s"ecret`}).WaitFor(ctx, "nope", 1); err == nil {
		t.Fatal("WaitFor found a message that is not there")
	}
}

func TestLiteralSize(t *testing.T) {
	for s, want := range map[string]int{"* 1 FETCH (BODY[] {12}": 12, "a {0}": 0, "no literal": -1, "x {a}": -1} {
		n, ok := literalSize(s)
		if (want >= 0) != ok || (ok && n != want) {
			t.Errorf("literalSize(%q) = %d, %v; want %d", s, n, ok, want)
		}
	}
}

func TestUIDNextAndSearch(t *testing.T) {
	addr := fakeIMAP(t, map[string]string{
		"STATUS":     "* STATUS INBOX (UIDNEXT 4711)\r\n",
		"UID SEARCH": "* SEARCH 4711 4712\r\n",
	})
	c, err := DialIMAP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("u@x.test", `s"ecret`); err != nil {
		t.Fatal(err)
	}
	n, err := c.UIDNext("INBOX")
	if err != nil || n != 4711 {
		t.Fatalf("UIDNext = %d, %v; want 4711", n, err)
	}
	uids, err := c.UIDSearch(`UID 4711:* TEXT "tok"`)
	if err != nil || len(uids) != 2 || uids[0] != 4711 || uids[1] != 4712 {
		t.Fatalf("UIDSearch = %v, %v", uids, err)
	}
}

func TestUIDNextMissing(t *testing.T) {
	addr := fakeIMAP(t, map[string]string{"STATUS": "* STATUS INBOX (MESSAGES 3)\r\n"})
	c, err := DialIMAP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.UIDNext("INBOX"); err == nil {
		t.Fatal("STATUS without UIDNEXT accepted")
	}
}
