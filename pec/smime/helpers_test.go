package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

// testEntity returns a canonical MIME entity of about n octets shaped like a PEC body.
func testEntity(n int) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=\"inner\"\r\nMIME-Version: 1.0\r\n\r\n")
	b.WriteString("--inner\r\nContent-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "Riga %06d del messaggio di posta certificata, testo di prova=\r\n", i)
	}
	b.WriteString("\r\n--inner--\r\n")
	return b.Bytes()
}

type signerCase struct {
	name   string
	signer crypto.Signer
	chain  []*x509.Certificate
	ca     *hsmtest.CA
}

// signers returns an RSA signer (hsmtest keyring) and an ECDSA signer, both with their CA.
func signers(t testing.TB) []signerCase {
	t.Helper()
	kr := hsmtest.New(t, "Provider A S.p.A.", "pec-a.test")
	rs, rchain, err := kr.SignerFor("pec-a.test")
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ecert := kr.CA.ProviderCert(t, "Provider E S.p.A.", "posta-certificata@pec-e.test", &ek.PublicKey, now.AddDate(0, 0, -30), now.AddDate(1, 0, 0))
	return []signerCase{
		{"rsa", rs, rchain, kr.CA},
		{"ecdsa", ek, []*x509.Certificate{ecert}, kr.CA},
		{"signer-only", onlySigner{rs}, rchain, kr.CA},
	}
}

// onlySigner hides the concrete key type, like a PKCS#11 (crypto11) key: only Public and
// Sign are available.
type onlySigner struct{ s crypto.Signer }

func (o onlySigner) Public() crypto.PublicKey { return o.s.Public() }
func (o onlySigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, d, opts)
}

// message assembles a whole RFC 5322 message from Sign's output.
func message(ct string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: posta-certificata@pec-a.test\r\nTo: alice@pec-b.test\r\nSubject: ACCETTAZIONE: prova\r\nX-Ricevuta: accettazione\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: " + ct + "\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}

// opensslVerify runs openssl cms -verify on msg with ca as the only trust anchor.
func opensslVerify(t *testing.T, msg, caPEM []byte, at time.Time) (string, error) {
	t.Helper()
	dir := t.TempDir()
	mf := filepath.Join(dir, "msg.eml")
	cf := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(mf, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cf, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"cms", "-verify", "-CAfile", cf, "-purpose", "any", "-in", mf, "-out", os.DevNull}
	if !at.IsZero() {
		args = append(args, "-attime", fmt.Sprint(at.Unix()))
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
