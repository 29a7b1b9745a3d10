package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/tsa"
)

func TestTSAServeRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:3180", ":3180", "[::]:3180", "10.1.2.3:3180", "localhost:3180", "example.org:3180", "127.0.0.1"} {
		dir := filepath.Join(t.TempDir(), "tsa")
		var out, errb bytes.Buffer
		if code := runTSA([]string{"serve", "-dir", dir, "-listen", addr}, &out, &errb); code != 1 {
			t.Errorf("%s: exit %d, want 1 (stderr %q)", addr, code, errb.String())
		}
		if !strings.Contains(errb.String(), "-listen") {
			t.Errorf("%s: stderr %q does not name -listen", addr, errb.String())
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s: the authority was created before the address was checked (%v)", addr, err)
		}
	}
}

// TestTSAServe: the served authority issues tokens that verify against the tsa-ca.pem it
// saved, and a second start reuses the same authority.
func TestTSAServe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tsa")
	var out, errb bytes.Buffer
	if code := runTSA([]string{"init", "-dir", dir}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "created") {
		t.Fatalf("init: exit %d, %q %q", code, out.String(), errb.String())
	}
	ca1, err := os.ReadFile(filepath.Join(dir, "tsa-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- serveTSA(ctx, dir, "127.0.0.1:0", pw, io.Discard); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr) //nolint:errcheck
	i := strings.Index(line, "http://")
	if i < 0 {
		t.Fatalf("no URL in %q", line)
	}
	url := strings.Fields(line[i:])[0]

	c, err := tsa.New(tsa.Config{URL: url, CA: filepath.Join(dir, "tsa-ca.pem"), Timeout: 10 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("day"))
	if _, ts, err := c.Timestamp(context.Background(), sum[:]); err != nil || !bytes.Equal(ts.HashedMessage, sum[:]) {
		t.Fatalf("Timestamp: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if code := runTSA([]string{"init", "-dir", dir}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "kept") {
		t.Fatalf("second init: exit %d, %q", code, out.String())
	}
	if ca2, _ := os.ReadFile(filepath.Join(dir, "tsa-ca.pem")); !bytes.Equal(ca1, ca2) {
		t.Error("the authority changed on the second start")
	}
}
