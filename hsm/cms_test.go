package hsm_test

import (
	"encoding/asn1"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/smallstep/pkcs7"
)

// TestCMSOpenSSL makes a detached CMS SignedData with the token key through the keyring's
// crypto.Signer (smallstep/pkcs7, as pec/smime does) and has openssl cms -verify check it,
// with SHA-1 (what PEC peers still emit, pec-spec §8.2) and SHA-256 digests.
func TestCMSOpenSSL(t *testing.T) {
	ca := hsmtest.NewCA(t)
	k := newKeys(t, tokenConfig("pec-main", "rsa", goodCert(t, ca, "pec-main", "rsa")))
	signer, chain, err := k.SignerFor(testDomain)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	body := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nMessaggio di posta certificata\r\n")
	bodyPath := filepath.Join(dir, "body")
	caPath := filepath.Join(dir, "ca.pem")
	os.WriteFile(bodyPath, body, 0o600)
	os.WriteFile(caPath, ca.PEM(), 0o600)
	for name, oid := range map[string]asn1.ObjectIdentifier{"sha1": pkcs7.OIDDigestAlgorithmSHA1, "sha256": pkcs7.OIDDigestAlgorithmSHA256} {
		t.Run(name, func(t *testing.T) {
			sd, err := pkcs7.NewSignedData(body)
			if err != nil {
				t.Fatal(err)
			}
			sd.SetDigestAlgorithm(oid)
			if err := sd.AddSignerChain(chain[0], signer, chain[1:], pkcs7.SignerInfoConfig{}); err != nil {
				t.Fatal(err)
			}
			sd.Detach()
			der, err := sd.Finish()
			if err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(dir, name+".p7s")
			os.WriteFile(sigPath, der, 0o600)
			out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", bodyPath, "-CAfile", caPath, "-out", os.DevNull).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl cms -verify: %v\n%s", err, out)
			}
			// The check can fail: a changed body does not verify.
			os.WriteFile(filepath.Join(dir, "other"), append([]byte("X"), body...), 0o600)
			if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", filepath.Join(dir, "other"), "-CAfile", caPath, "-out", os.DevNull).CombinedOutput(); err == nil {
				t.Fatalf("openssl verified a changed body:\n%s", out)
			}
		})
	}
}
