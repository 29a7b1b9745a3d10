package tsa

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzVerify: a TSA answer is input from the network. Verify must never panic on it, and what
// it accepts agrees with two other paths. The seed is the one token the TSA signed over sum:
// whatever the fuzzer changes, an accepted answer carries that same token (genTime, serial
// number, imprint, policy, signer), because its TSTInfo is signed; and openssl ts -verify
// accepts it too. An answer is never accepted for another digest or without the TSA's roots.
func FuzzVerify(f *testing.F) {
	a, err := NewAuthority("Fuzz TSA")
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256([]byte("seed"))
	other := sha256.Sum256([]byte("other"))
	req := timestampRequest(f, sum[:])
	resp, err := a.Server.respond(req)
	if err != nil {
		f.Fatal(err)
	}
	pool := a.Server.poolForTest(a.CA)
	seed, err := Verify(resp, sum[:], pool)
	if err != nil {
		f.Fatal(err)
	}
	stranger, err := NewAuthority("Other TSA")
	if err != nil {
		f.Fatal(err)
	}
	otherPool := stranger.Server.poolForTest(stranger.CA)
	dir := f.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, PEM(a.CA), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Add(resp)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Verify(b, sum[:], pool)
		if _, err2 := Verify(b, other[:], pool); err2 == nil {
			t.Fatal("accepted for a digest the TSA never stamped")
		}
		if _, err2 := Verify(b, sum[:], otherPool); err2 == nil {
			t.Fatal("accepted with another TSA's roots")
		}
		if _, err2 := Verify(b, sum[:], x509.NewCertPool()); err2 == nil {
			t.Fatal("accepted with no roots")
		}
		if err != nil {
			return
		}
		if !tok.Time.Equal(seed.Time) || tok.SerialNumber.Cmp(seed.SerialNumber) != 0 || !bytes.Equal(tok.HashedMessage, sum[:]) ||
			!tok.Policy.Equal(seed.Policy) || !tok.Signer.Equal(seed.Signer) || tok.HashAlgorithm != seed.HashAlgorithm {
			t.Fatalf("accepted a token that is not the one the TSA signed: %+v, want %+v", tok, seed)
		}
		// The second path: openssl ts -verify on the same bytes.
		in := filepath.Join(t.TempDir(), "resp.tsr")
		if err := os.WriteFile(in, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("openssl", "ts", "-verify", "-digest", hexString(sum[:]), "-in", in, "-CAfile", caFile).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Verification: OK") {
			t.Fatalf("Verify accepts what openssl ts -verify refuses: %v\n%s", err, out)
		}
	})
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// FuzzRespond: a request body is input from the network; the lab TSA must never panic on it,
// and a token it grants for a SHA-256 imprint with certReq verifies (Verify, the client's
// path) for the digest that was asked, with the request's nonce.
func FuzzRespond(f *testing.F) {
	a, err := NewAuthority("Fuzz TSA")
	if err != nil {
		f.Fatal(err)
	}
	pool := a.Server.poolForTest(a.CA)
	sum := sha256.Sum256([]byte("seed"))
	f.Add(timestampRequest(f, sum[:]))
	withNonce, err := marshalRequest(crypto.SHA256, sum[:], big.NewInt(42))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withNonce)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := a.Server.respond(b)
		if err != nil {
			return
		}
		req, mi, err := parseRequest(b)
		if err != nil {
			t.Fatalf("granted a request that does not parse: %v", err)
		}
		if h, _ := mi.hash(); h != crypto.SHA256 || !req.CertReq {
			return
		}
		tok, err := Verify(resp, mi.HashedMessage, pool)
		if err != nil {
			t.Fatalf("the token granted does not verify: %v", err)
		}
		if (tok.Nonce == nil) != (req.Nonce == nil) || (tok.Nonce != nil && tok.Nonce.Cmp(req.Nonce) != 0) {
			t.Fatalf("nonce %v, asked %v", tok.Nonce, req.Nonce)
		}
	})
}
