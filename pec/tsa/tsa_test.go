package tsa

import (
	"context"
	"crypto"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startTSA(t *testing.T) (*Authority, *Client, string) {
	t.Helper()
	a, err := NewAuthority("Test TSA")
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := a.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	caFile := filepath.Join(t.TempDir(), "tsa-ca.pem")
	if err := os.WriteFile(caFile, PEM(a.CA), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{URL: url, CA: caFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, c, caFile
}

func TestTimestampRoundTripAndOpenSSL(t *testing.T) {
	_, c, caFile := startTSA(t)
	dir := t.TempDir()
	data := []byte("{\"day\":\"2026-11-20\"}\n{\"seq\":1}\n")
	dataFile := filepath.Join(dir, "export.jsonl")
	os.WriteFile(dataFile, data, 0o644) //nolint:errcheck
	sum := sha256.Sum256(data)
	before := time.Now().Add(-2 * time.Second)
	resp, ts, err := c.Timestamp(context.Background(), sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if ts.Time.Before(before) || ts.Time.After(time.Now().Add(2*time.Second)) {
		t.Errorf("token time %v", ts.Time)
	}
	tsr := filepath.Join(dir, "token.tsr")
	os.WriteFile(tsr, resp, 0o644) //nolint:errcheck
	// Independent check with openssl.
	out, err := exec.Command("openssl", "ts", "-verify", "-data", dataFile, "-in", tsr, "-CAfile", caFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify: %v\n%s", err, out)
	}
	// And openssl refuses other data.
	os.WriteFile(dataFile, append(data, 'x'), 0o644) //nolint:errcheck
	if out, err := exec.Command("openssl", "ts", "-verify", "-data", dataFile, "-in", tsr, "-CAfile", caFile).CombinedOutput(); err == nil {
		t.Fatalf("openssl accepted changed data:\n%s", out)
	}
}

func TestVerifyRejects(t *testing.T) {
	a, c, _ := startTSA(t)
	sum := sha256.Sum256([]byte("x"))
	resp, _, err := c.Timestamp(context.Background(), sum[:])
	if err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("y"))
	if _, err := Verify(resp, other[:], c.roots); err == nil {
		t.Error("token accepted for another digest")
	}
	b, _ := NewAuthority("Other")
	if _, err := Verify(resp, sum[:], b.Server.poolForTest(b.CA)); err == nil {
		t.Error("token accepted under another CA")
	}
	bad := append([]byte(nil), resp...)
	bad[len(bad)-10] ^= 0xff // inside the signature
	if _, err := Verify(bad, sum[:], c.roots); err == nil {
		t.Error("tampered token accepted")
	}
	_ = a
}

func TestVerifyRequiresCriticalEKU(t *testing.T) {
	a, err := newAuthority("Lax TSA", false)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("x"))
	resp, err := a.Server.respond(mustReq(t, sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(resp, sum[:], a.Server.poolForTest(a.CA)); err == nil || !strings.Contains(err.Error(), "critical") {
		t.Errorf("non-critical EKU: %v", err)
	}
}

func mustReq(t *testing.T, digest []byte) []byte { return timestampRequest(t, digest) }

func timestampRequest(t testing.TB, digest []byte) []byte {
	b, err := marshalRequest(crypto.SHA256, digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSaveLoadAuthority(t *testing.T) {
	a, err := NewAuthority("Lab TSA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := LoadAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := b.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := New(Config{URL: url, CA: filepath.Join(dir, "tsa-ca.pem")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("x"))
	if _, _, err := c.Timestamp(context.Background(), sum[:]); err != nil {
		t.Fatal(err)
	}
}
