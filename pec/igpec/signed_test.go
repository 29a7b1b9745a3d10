package igpec

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// signedFixture signs LDIF with provider A's key from an hsmtest keyring.
type signedFixture struct {
	kr     *hsmtest.Keyring
	anchor string // PEM file of the keyring's CA
}

func newSignedFixture(t *testing.T) *signedFixture {
	kr := hsmtest.New(t, "Provider A S.p.A.", "pec-a.test")
	anchor := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(anchor, kr.CA.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &signedFixture{kr: kr, anchor: anchor}
}

func (sf *signedFixture) sign(t *testing.T, ldif []byte) []byte {
	t.Helper()
	key, chain, err := sf.kr.SignerFor("pec-a.test")
	if err != nil {
		t.Fatal(err)
	}
	p7m, err := SignLDIF(ldif, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	return p7m
}

func TestSignedLDIFVerify(t *testing.T) {
	sf := newSignedFixture(t)
	f := newFixture(t)
	ldif := ldifOf(t, f.record(t, "Provider A S.p.A.", "pec-a.test"))
	p7m := sf.sign(t, ldif)
	_, chain, _ := sf.kr.SignerFor("pec-a.test")

	b64 := base64.StdEncoding.EncodeToString(p7m)
	forms := map[string][]byte{
		"DER":    p7m,
		"PEM":    pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: p7m}),
		"base64": []byte(b64[:64] + "\r\n" + b64[64:] + "\n"),
	}
	for name, raw := range forms {
		content, signer, err := VerifySignedLDIF(raw, sf.kr.CA.Pool())
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(content, ldif) || !bytes.Equal(signer.Raw, chain[0].Raw) {
			t.Errorf("%s: wrong content or signer", name)
		}
	}

	// Tampered content: one byte of the signed LDIF changed inside the DER.
	i := bytes.Index(p7m, []byte("pec-a.test"))
	if i < 0 {
		t.Fatal("content not found in the DER")
	}
	tampered := bytes.Clone(p7m)
	tampered[i] = 'X'
	if _, _, err := VerifySignedLDIF(tampered, sf.kr.CA.Pool()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered: err = %v, want ErrBadSignature", err)
	}
	// Signer from another CA.
	other := hsmtest.New(t, "Intruso S.p.A.", "pec-a.test")
	if _, _, err := VerifySignedLDIF(p7m, other.CA.Pool()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other CA: err = %v, want ErrBadSignature", err)
	}
	if _, _, err := VerifySignedLDIF([]byte("not a p7m at all!"), sf.kr.CA.Pool()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("garbage: err = %v, want ErrBadSignature", err)
	}
	if _, _, err := VerifySignedLDIF(p7m, nil); err == nil {
		t.Error("verified without a trust anchor")
	}
}

func TestSignedSourceTamperedKeepsSnapshot(t *testing.T) {
	sf := newSignedFixture(t)
	f := newFixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "igpec.ldif.p7m")
	write := func(b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := f.record(t, "Provider A S.p.A.", "pec-a.test")
	write(sf.sign(t, ldifOf(t, a)))

	reg := prometheus.NewRegistry()
	x, err := New(Config{Source: path, TrustAnchor: sf.anchor}, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if !x.Certified("pec-a.test") {
		t.Fatal("pec-a.test not certified after the first load")
	}

	// The next file adds a domain but was altered after signing.
	b := f.record(t, "Provider B S.p.A.", "pec-b.test")
	p7m := sf.sign(t, ldifOf(t, a, b))
	i := bytes.Index(p7m, []byte("pec-b.test"))
	p7m[i+4] = 'X' // pec-bXtest
	write(p7m)
	if _, err := x.Refresh(context.Background()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Refresh(tampered) err = %v, want ErrBadSignature", err)
	}
	if !x.Certified("pec-a.test") || x.Certified("pec-bxtest") || x.Certified("pec-b.test") {
		t.Error("tampered content reached the snapshot, or the previous one was dropped")
	}
	if n := gauge(t, reg, "pec_index_refresh_failures_total"); n != 1 {
		t.Errorf("failures = %v, want 1", n)
	}

	// A good one again.
	write(sf.sign(t, ldifOf(t, a, b)))
	rep, err := x.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !x.Certified("pec-b.test") || len(rep.Changes.Added) != 1 {
		t.Errorf("after a good refresh: certified %v, report %+v", x.Certified("pec-b.test"), rep)
	}

	// A signed LDIF may not pull local files in.
	write(sf.sign(t, []byte("dn: providerName=Z,o=postacert\nproviderCertificate;binary:< file:///etc/passwd\n")))
	if _, err := x.Refresh(context.Background()); err == nil {
		t.Error("a signed LDIF with a file URL was accepted")
	}

	// A .p7m source without a trust anchor is a configuration error.
	if _, err := New(Config{Source: path}, Deps{}); err == nil {
		t.Error("New accepted a .p7m source without trust_anchor")
	}
}

// TestSignedSourceRollback: once a signed index is loaded, an older validly signed file put
// in its place is refused and the newer snapshot stays.
func TestSignedSourceRollback(t *testing.T) {
	sf := newSignedFixture(t)
	f := newFixture(t)
	a := f.record(t, "Provider A S.p.A.", "pec-a.test")
	b := f.record(t, "Provider B S.p.A.", "pec-b.test")
	old := sf.sign(t, ldifOf(t, a, b))
	time.Sleep(1100 * time.Millisecond) // signingTime has a resolution of one second
	cur := sf.sign(t, ldifOf(t, a))

	path := filepath.Join(t.TempDir(), "igpec.ldif.p7m")
	os.WriteFile(path, cur, 0o644)
	x, err := New(Config{Source: path, TrustAnchor: sf.anchor}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, old, 0o644)
	if _, err := x.Refresh(context.Background()); !errors.Is(err, ErrRollback) {
		t.Fatalf("Refresh(older file) err = %v, want ErrRollback", err)
	}
	if x.Certified("pec-b.test") {
		t.Error("the older index replaced the newer one")
	}
	os.WriteFile(path, cur, 0o644) // the same file again is fine
	if _, err := x.Refresh(context.Background()); err != nil {
		t.Errorf("Refresh(same file): %v", err)
	}
}

// TestSignedLDIFV0: .ldif.p7m files signed before SignLDIF moved to pec/smime (by
// smallstep/pkcs7, RSA and ECDSA keys) still verify.
func TestSignedLDIFV0(t *testing.T) {
	roots, err := LoadTrustAnchor("testdata/v0-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/v0.ldif")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"v0-rsa.ldif.p7m", "v0-ecdsa.ldif.p7m"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		v, err := verifySigned(raw, roots)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(v.content, want) || v.signingTime.Format(time.RFC3339) != "2026-12-02T08:22:32Z" {
			t.Errorf("%s: content equal %v, signed at %v", name, bytes.Equal(v.content, want), v.signingTime)
		}
	}
}
