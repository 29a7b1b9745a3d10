package igpec

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

	// Two signers, each valid: refused, the index has one author.
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecert := sf.kr.CA.ProviderCert(t, "Provider A S.p.A.", "posta-certificata@pec-a.test", &ek.PublicKey, time.Now().AddDate(0, 0, -1), time.Now().AddDate(1, 0, 0))
	eder, _ := x509.MarshalPKCS8PrivateKey(ek)
	ekeyFile, ecertFile := filepath.Join(dir, "ekey.pem"), filepath.Join(dir, "ecert.pem")
	os.WriteFile(ekeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: eder}), 0o600)
	os.WriteFile(ecertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ecert.Raw}), 0o644)
	two := filepath.Join(dir, "two.p7m")
	cmd := exec.Command("openssl", "cms", "-sign", "-nodetach", "-binary", "-outform", "DER", "-in", in,
		"-signer", certFile, "-inkey", keyFile, "-signer", ecertFile, "-inkey", ekeyFile, "-out", two)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -sign with two signers: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(two)
	if _, _, err := VerifySignedLDIF(raw, sf.kr.CA.Pool()); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "2 signers") {
		t.Errorf("two signers: %v", err)
	}
}
