package hsm_test

import (
	"crypto"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/smime"
)

// TestCMSOpenSSL makes a detached CMS SignedData with the token key through the keyring's
// crypto.Signer (smime.SignCMS, the project's one CMS implementation, which signs PEC
// messages, the seal and the index) and has openssl cms -verify check it, with SHA-1 (what
// PEC peers still emit, pec-spec §8.2) and SHA-256 digests; smime.VerifyCMS agrees.
func TestCMSOpenSSL(t *testing.T) {
	ca := hsmtest.NewCA(t)
	k := newKeys(t, tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")))
	signer, chain, err := k.SignerFor(testDomain)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	body := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nMessaggio di posta certificata\r\n")
	other := append([]byte("X"), body...)
	bodyPath, otherPath, caPath := filepath.Join(dir, "body"), filepath.Join(dir, "other"), filepath.Join(dir, "ca.pem")
	for p, b := range map[string][]byte{bodyPath: body, otherPath: other, caPath: ca.PEM()} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, h := range map[string]crypto.Hash{"sha1": crypto.SHA1, "sha256": crypto.SHA256} {
		t.Run(name, func(t *testing.T) {
			der, err := smime.SignCMS(body, signer, chain, smime.CMSOptions{Hash: h, Detached: true})
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(dir, name+".p7s")
			if err := os.WriteFile(sigPath, der, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", bodyPath, "-CAfile", caPath, "-out", os.DevNull).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl cms -verify: %v\n%s", err, out)
			}
			v, err := smime.VerifyCMS(der, body, smime.VerifyOptions{Roots: ca.Pool()})
			if err != nil || v.Hash != h || !v.Signer.Equal(chain[0]) {
				t.Fatalf("smime.VerifyCMS: %v (hash %v)", err, v)
			}
			// The checks can fail: a changed body does not verify.
			if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", otherPath, "-CAfile", caPath, "-out", os.DevNull).CombinedOutput(); err == nil {
				t.Fatalf("openssl verified a changed body:\n%s", out)
			}
			if _, err := smime.VerifyCMS(der, other, smime.VerifyOptions{Roots: ca.Pool()}); !errors.Is(err, smime.ErrBadSignature) {
				t.Fatalf("smime.VerifyCMS of a changed body: %v", err)
			}
		})
	}
}
