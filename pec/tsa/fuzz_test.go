package tsa

import (
	"crypto/sha256"
	"testing"
)

// FuzzVerify: a TSA answer is input from the network; Verify must never panic on it.
func FuzzVerify(f *testing.F) {
	a, err := NewAuthority("Fuzz TSA")
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256([]byte("seed"))
	req := timestampRequest(f, sum[:])
	resp, err := a.Server.respond(req)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(resp)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x02})
	pool := a.Server.poolForTest(a.CA)
	f.Fuzz(func(t *testing.T, b []byte) {
		Verify(b, sum[:], pool) //nolint:errcheck
	})
}

// FuzzRespond: a request body is input from the network; the lab TSA must never panic on it.
func FuzzRespond(f *testing.F) {
	a, err := NewAuthority("Fuzz TSA")
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256([]byte("seed"))
	f.Add(timestampRequest(f, sum[:]))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		a.Server.respond(b) //nolint:errcheck
	})
}
