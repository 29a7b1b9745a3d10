package tsa

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// TestVerifyV0Token: a token made by the lab TSA before it moved from
// digitorus/timestamp to pec/smime still verifies (seals on disk keep verifying).
func TestVerifyV0Token(t *testing.T) {
	resp, err := os.ReadFile("testdata/v0.tsr")
	if err != nil {
		t.Fatal(err)
	}
	roots, err := LoadPool("testdata/v0-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("pec-log-seal/1"))
	ts, err := Verify(resp, sum[:], roots)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Time.Format(time.RFC3339) != "2026-12-02T08:22:32Z" || ts.Nonce == nil || ts.Accuracy != time.Second || ts.Signer == nil {
		t.Errorf("token %+v", ts)
	}
}

// TestVerifyOpenSSLToken: tokens from another TSA implementation (openssl ts -reply), with
// the ESS signingCertificate (SHA-1, RFC 2634) or signingCertificateV2 (SHA-256, RFC 5035).
func TestVerifyOpenSSLToken(t *testing.T) {
	a, err := NewAuthority("OpenSSL TSA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.WriteFile(data, []byte("pec-log-seal/1\n"), 0o600) //nolint:errcheck
	sum := sha256.Sum256([]byte("pec-log-seal/1\n"))
	for _, essAlg := range []string{"sha1", "sha256"} {
		t.Run(essAlg, func(t *testing.T) {
			cnf := filepath.Join(dir, essAlg+".cnf")
			os.WriteFile(cnf, []byte(`[ tsa ]
default_tsa = tsa1
[ tsa1 ]
serial = `+filepath.Join(dir, "serial")+`
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.2
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = `+essAlg+`
`), 0o600) //nolint:errcheck
			tsq, tsr := filepath.Join(dir, essAlg+".tsq"), filepath.Join(dir, essAlg+".tsr")
			for _, args := range [][]string{
				{"ts", "-query", "-data", data, "-sha256", "-cert", "-out", tsq},
				{"ts", "-reply", "-config", cnf, "-queryfile", tsq, "-signer", filepath.Join(dir, "tsa-cert.pem"),
					"-inkey", filepath.Join(dir, "tsa-key.pem"), "-out", tsr},
			} {
				if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
					t.Fatalf("openssl %v: %v\n%s", args[:2], err, out)
				}
			}
			resp, _ := os.ReadFile(tsr)
			ts, err := Verify(resp, sum[:], a.Server.poolForTest(a.CA))
			if err != nil {
				t.Fatal(err)
			}
			if !ts.Policy.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}) {
				t.Errorf("policy %v", ts.Policy)
			}
		})
	}
}

// TestServerRefuses: the answers of the lab TSA to requests it does not grant.
func TestServerRefuses(t *testing.T) {
	a, err := NewAuthority("Strict TSA")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("x"))
	sha1Req, _ := marshalRequest(crypto.SHA1, sum[:20], nil)
	mi, _ := asn1.Marshal(messageImprint{HashAlgorithm: algSHA256(), HashedMessage: sum[:]})
	policyReq, _ := asn1.Marshal(request{Version: 1, MessageImprint: asn1.RawValue{FullBytes: mi}, ReqPolicy: asn1.ObjectIdentifier{1, 2, 3}})
	for name, c := range map[string]struct {
		req []byte
		bit int
	}{
		"garbage":    {[]byte("GET / HTTP/1.0"), failBadDataFormat},
		"sha1":       {sha1Req, failBadAlg},
		"policy":     {policyReq, failUnacceptedPolicy},
		"short hash": {mustReqBytes(t, sum[:16]), failBadAlg},
	} {
		_, err := a.Server.respond(c.req)
		var rej *rejection
		if !errors.As(err, &rej) || rej.bit != c.bit {
			t.Errorf("%s: %v, want failInfo bit %d", name, err, c.bit)
		}
		if _, err := Verify(errorResponse(c.bit), sum[:], a.Server.poolForTest(a.CA)); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: Verify of the rejection: %v", name, err)
		}
	}
	// Without certReq the token carries no certificate (RFC 3161 §2.4.1).
	noCert, _ := asn1.Marshal(request{Version: 1, MessageImprint: asn1.RawValue{FullBytes: mi}})
	resp, err := a.Server.respond(noCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(resp, sum[:], a.Server.poolForTest(a.CA)); err == nil || !strings.Contains(err.Error(), "certificate not in the CMS") {
		t.Errorf("token without certificates: %v", err)
	}
}

func algSHA256() (a pkix.AlgorithmIdentifier) {
	a.Algorithm = oidSHA256
	return a
}

func mustReqBytes(t *testing.T, imprint []byte) []byte {
	mi, _ := asn1.Marshal(messageImprint{HashAlgorithm: algSHA256(), HashedMessage: imprint})
	b, err := asn1.Marshal(request{Version: 1, MessageImprint: asn1.RawValue{FullBytes: mi}, CertReq: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forge signs a TSTInfo over digest with the authority's key, as the lab server does,
// then lets change the CMS options before signing.
func forge(t *testing.T, a *Authority, digest []byte, change func(*smime.CMSOptions)) []byte {
	t.Helper()
	mi, _ := asn1.Marshal(messageImprint{HashAlgorithm: algSHA256(), HashedMessage: digest})
	now := time.Now().UTC().Truncate(time.Second)
	info, err := asn1.Marshal(tstInfo{Version: 1, Policy: defaultPolicy, MessageImprint: asn1.RawValue{FullBytes: mi},
		SerialNumber: big.NewInt(7), GenTime: now})
	if err != nil {
		t.Fatal(err)
	}
	opts := smime.CMSOptions{ContentType: oidTSTInfo, SigningTime: now, Attributes: []smime.Attribute{signingCertificateV2Attr(a.Server.Cert)}}
	change(&opts)
	token, err := smime.SignCMS(info, a.Server.Signer, []*x509.Certificate{a.Server.Cert}, opts)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := asn1.Marshal(response{Status: pkiStatusInfo{Status: statusGranted}, TimeStampToken: asn1.RawValue{FullBytes: token}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestVerifyRejectsForgedTokens(t *testing.T) {
	a, err := NewAuthority("Forge TSA")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewAuthority("Other TSA")
	if err != nil {
		t.Fatal(err)
	}
	pool := a.Server.poolForTest(a.CA)
	sum := sha256.Sum256([]byte("x"))
	if _, err := Verify(forge(t, a, sum[:], func(*smime.CMSOptions) {}), sum[:], pool); err != nil {
		t.Fatalf("the unforged token: %v", err)
	}
	for name, c := range map[string]struct {
		change func(*smime.CMSOptions)
		want   string
	}{
		"no ESS attribute":  {func(o *smime.CMSOptions) { o.Attributes = nil }, "lacks the ESS"},
		"ESS of other cert": {func(o *smime.CMSOptions) { o.Attributes = []smime.Attribute{signingCertificateV2Attr(b.Server.Cert)} }, "another certificate"},
		"id-data content":   {func(o *smime.CMSOptions) { o.ContentType = nil }, "not a TSTInfo"},
	} {
		if _, err := Verify(forge(t, a, sum[:], c.change), sum[:], pool); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	// A token of a TSA whose chain does not reach the roots.
	if _, err := Verify(forge(t, b, sum[:], func(o *smime.CMSOptions) {
		o.Attributes = []smime.Attribute{signingCertificateV2Attr(b.Server.Cert)}
	}), sum[:], pool); !errors.Is(err, smime.ErrUntrusted) {
		t.Errorf("other TSA: %v", err)
	}
}
