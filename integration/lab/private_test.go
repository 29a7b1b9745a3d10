//go:build integration

package lab

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func open(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func TestPrivateSlapdOutage(t *testing.T) {
	t.Parallel()
	s := PrivateSlapd(t, []byte("dn: o=postacert\nobjectClass: top\nobjectClass: organization\no: postacert\n"))
	addr := "127.0.0.1:" + strconv.Itoa(s.Port)
	if !open(addr) {
		t.Fatal("slapd not listening after start")
	}
	s.Stop()
	if open(addr) {
		t.Fatal("slapd still listening after Stop")
	}
	s.Load([]byte("dn: o=postacert\nobjectClass: top\nobjectClass: organization\no: postacert\n"))
	if !open(addr) {
		t.Fatal("slapd not listening after Load")
	}
}

func TestPrivateClamdPing(t *testing.T) {
	t.Parallel()
	c := PrivateClamd(t)
	conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("zPING\x00"))
	r, err := bufio.NewReader(conn).ReadString(0)
	if err != nil || r != "PONG\x00" {
		t.Fatalf("PING: %q, %v", r, err)
	}
}

func TestPrivateToken(t *testing.T) {
	t.Parallel()
	conf := PrivateToken(t, "test-token", "1234", "test-key", "01")
	if _, err := os.Stat(conf); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(filepath.Dir(conf), "tokens"))
	if len(ents) != 1 {
		t.Fatalf("%d token directories, want 1", len(ents))
	}
}
