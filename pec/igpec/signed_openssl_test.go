package igpec

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSignedLDIFOpenSSL checks interoperability both ways: openssl verifies what SignLDIF
// writes, and VerifySignedLDIF accepts what openssl cms and openssl smime write (DER and PEM),
// as the central index or another provider may use either tool.
func TestSignedLDIFOpenSSL(t *testing.T) {
	sf := newSignedFixture(t)
	f := newFixture(t)
	ldif := ldifOf(t, f.record(t, "Provider A S.p.A.", "pec-a.test"))
	dir := t.TempDir()
	in := filepath.Join(dir, "a.ldif")
	os.WriteFile(in, ldif, 0o644)

	ours := filepath.Join(dir, "ours.ldif.p7m")
	os.WriteFile(ours, sf.sign(t, ldif), 0o644)
	out, err := exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", ours, "-CAfile", sf.anchor, "-binary").Output()
	if err != nil || !bytes.Equal(out, ldif) {
		t.Fatalf("openssl cms -verify of SignLDIF output: %v", err)
	}

	key, chain, _ := sf.kr.SignerFor("pec-a.test")
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw}), 0o644)
	for _, args := range [][]string{
		{"cms", "-sign", "-nodetach", "-binary", "-outform", "DER", "-md", "sha256"},
		{"cms", "-sign", "-nodetach", "-binary", "-outform", "PEM", "-md", "sha1"},
		{"smime", "-sign", "-nodetach", "-binary", "-outform", "DER"},
	} {
		p7m := filepath.Join(dir, "openssl.p7m")
		cmd := exec.Command("openssl", append(args, "-in", in, "-signer", certFile, "-inkey", keyFile, "-out", p7m)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		raw, _ := os.ReadFile(p7m)
		content, signer, err := VerifySignedLDIF(raw, sf.kr.CA.Pool())
		if err != nil || !bytes.Equal(content, ldif) || !bytes.Equal(signer.Raw, chain[0].Raw) {
			t.Errorf("openssl %v: %v", args, err)
		}
	}
}
