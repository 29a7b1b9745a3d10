package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/internal/corpus"
)

// binaryContent is content that S/MIME canonicalisation would change: bare LF, bare CR,
// NUL and 8-bit octets. SignCMS and VerifyCMS must hash it as it is.
var binaryContent = []byte("{\"day\":\"2026-11-20\"}\n{\"seq\":1}\r\x00\xff\xfe\nlast line without end")

// writeFiles writes name/content pairs in a temporary directory and returns their paths.
func writeFiles(t *testing.T, files map[string][]byte) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]string{}
	for name, b := range files {
		paths[name] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[name], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// opensslCMSVerify runs openssl cms -verify on a DER SignedData (detached when content is
// not nil) and returns the content openssl recovered.
func opensslCMSVerify(t *testing.T, p7, content, caPEM []byte) ([]byte, error) {
	t.Helper()
	files := map[string][]byte{"sig.p7m": p7, "ca.pem": caPEM}
	if content != nil {
		files["content"] = content
	}
	p := writeFiles(t, files)
	out := filepath.Join(filepath.Dir(p["ca.pem"]), "out")
	args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", p["sig.p7m"], "-CAfile", p["ca.pem"],
		"-purpose", "any", "-out", out}
	if content != nil {
		args = append(args, "-content", p["content"])
	}
	if msg, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		return nil, errors.New(strings.TrimSpace(string(msg)))
	}
	return os.ReadFile(out)
}

func TestSignCMSRoundTripAndOpenSSL(t *testing.T) {
	at := time.Date(2026, 11, 21, 1, 0, 0, 500, time.UTC)
	for _, sc := range signers(t) {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
			for _, detached := range []bool{false, true} {
				name := sc.name + "/" + h.String() + "/attached"
				if detached {
					name = sc.name + "/" + h.String() + "/detached"
				}
				t.Run(name, func(t *testing.T) {
					p7, err := SignCMS(binaryContent, sc.signer, sc.chain, CMSOptions{Hash: h, Detached: detached, SigningTime: at})
					if err != nil {
						t.Fatal(err)
					}
					var given []byte
					if detached {
						given = binaryContent
						if bytes.Contains(p7, binaryContent) {
							t.Fatal("a detached signature carries the content")
						}
					}
					v, err := VerifyCMS(p7, given, VerifyOptions{Roots: sc.ca.Pool()})
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(v.Entity, binaryContent) || !v.Signer.Equal(sc.chain[0]) || v.Hash != h ||
						!v.SigningTime.Equal(at.Truncate(time.Second)) || !v.ContentType.Equal(oidData) || v.Signers != 1 ||
						len(v.Chains) == 0 || !v.VerifiedAt.Equal(v.SigningTime) {
						t.Fatalf("verified: %+v", v)
					}
					got, err := opensslCMSVerify(t, p7, given, sc.ca.PEM())
					if err != nil || !bytes.Equal(got, binaryContent) {
						t.Fatalf("openssl cms -verify: %v (content equal: %v)", err, bytes.Equal(got, binaryContent))
					}
					// One changed octet of content fails both verifiers.
					if detached {
						bad := bytes.Clone(binaryContent)
						bad[3] ^= 1
						if _, err := VerifyCMS(p7, bad, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
							t.Errorf("changed content: %v", err)
						}
						if _, err := opensslCMSVerify(t, p7, bad, sc.ca.PEM()); err == nil {
							t.Error("openssl verified changed content")
						}
						return
					}
					bad := bytes.Clone(p7)
					bad[bytes.Index(bad, binaryContent)+3] ^= 1
					if _, err := VerifyCMS(bad, nil, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
						t.Errorf("changed content: %v", err)
					}
					if _, err := opensslCMSVerify(t, bad, nil, sc.ca.PEM()); err == nil {
						t.Error("openssl verified changed content")
					}
				})
			}
		}
	}
}

// TestSignCMSContentTypeAndAttributes: another eContentType (version 3 SignedData) and extra
// signed attributes, as an RFC 3161 token has.
func TestSignCMSContentTypeAndAttributes(t *testing.T) {
	sc := signers(t)[1]
	oidTSTInfo := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	oidExtra := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	val := der(tagSequence, der(tagSequence, der(tagSequence, der(tagOctetString, []byte("hash")))))
	p7, err := SignCMS(binaryContent, sc.signer, sc.chain, CMSOptions{ContentType: oidTSTInfo,
		Attributes: []Attribute{{Type: oidExtra, Values: [][]byte{val}}}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := VerifyCMS(p7, nil, VerifyOptions{Roots: sc.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if !v.ContentType.Equal(oidTSTInfo) {
		t.Errorf("content type %v", v.ContentType)
	}
	found := false
	for _, a := range v.Attributes {
		found = found || a.Type.Equal(oidExtra) && len(a.Values) == 1 && bytes.Equal(a.Values[0], val)
	}
	if !found {
		t.Errorf("extra attribute missing: %+v", v.Attributes)
	}
	sd, err := parseSignedData(p7)
	if err != nil {
		t.Fatal(err)
	}
	if v := p7[bytes.Index(p7, []byte{tagInteger, 1})+2]; v != 3 || !sd.eContentType.Equal(oidTSTInfo) {
		t.Errorf("SignedData version %d, want 3 (RFC 5652 §5.1)", v)
	}
	if _, err := opensslCMSVerify(t, p7, nil, sc.ca.PEM()); err != nil {
		t.Errorf("openssl cms -verify: %v", err)
	}
}

func TestSignCMSRejects(t *testing.T) {
	sc := signers(t)[0]
	other := signers(t)[1]
	for name, c := range map[string]struct {
		signer crypto.Signer
		chain  []*x509.Certificate
		opts   CMSOptions
	}{
		"no signer":       {nil, sc.chain, CMSOptions{}},
		"no certificate":  {sc.signer, nil, CMSOptions{}},
		"key mismatch":    {sc.signer, other.chain, CMSOptions{}},
		"md5":             {sc.signer, sc.chain, CMSOptions{Hash: crypto.MD5}},
		"own attribute":   {sc.signer, sc.chain, CMSOptions{Attributes: []Attribute{{Type: oidAttrSigningTime, Values: [][]byte{{5, 0}}}}}},
		"attribute empty": {sc.signer, sc.chain, CMSOptions{Attributes: []Attribute{{Type: asn1.ObjectIdentifier{1, 2, 3}}}}},
	} {
		if _, err := SignCMS([]byte("x"), c.signer, c.chain, c.opts); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestVerifyCMSContentMisuse(t *testing.T) {
	sc := signers(t)[1]
	attached, _ := SignCMS(binaryContent, sc.signer, sc.chain, CMSOptions{})
	detached, _ := SignCMS(binaryContent, sc.signer, sc.chain, CMSOptions{Detached: true})
	if _, err := VerifyCMS(attached, binaryContent, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("attached with content: %v", err)
	}
	if _, err := VerifyCMS(detached, nil, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("detached without content: %v", err)
	}
	empty, _ := SignCMS(nil, sc.signer, sc.chain, CMSOptions{Detached: true})
	if _, err := VerifyCMS(empty, []byte{}, VerifyOptions{}); err != nil {
		t.Errorf("empty detached content: %v", err)
	}
	if _, err := VerifyCMS([]byte("not DER"), nil, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v", err)
	}
}

func TestVerifyCMSChain(t *testing.T) {
	sc := signers(t)[1]
	signed := time.Now().Add(-time.Hour)
	p7, err := SignCMS(binaryContent, sc.signer, sc.chain, CMSOptions{SigningTime: signed})
	if err != nil {
		t.Fatal(err)
	}
	other := hsmtest.NewCA(t)
	cases := []struct {
		name string
		opts VerifyOptions
		want error
	}{
		{"other CA", VerifyOptions{Roots: other.Pool()}, ErrUntrusted},
		{"after expiry", VerifyOptions{Roots: sc.ca.Pool(), At: sc.chain[0].NotAfter.Add(time.Hour)}, ErrExpired},
		{"before validity", VerifyOptions{Roots: sc.ca.Pool(), At: sc.chain[0].NotBefore.Add(-time.Hour)}, ErrExpired},
		{"wrong EKU", VerifyOptions{Roots: sc.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}, ErrUntrusted},
		{"any EKU", VerifyOptions{Roots: sc.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, nil},
		{"integrity only", VerifyOptions{}, nil},
	}
	for _, c := range cases {
		v, err := VerifyCMS(p7, nil, c.opts)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.name == "integrity only" {
			if err := v.VerifyChain(VerifyOptions{}); !errors.Is(err, ErrUntrusted) {
				t.Errorf("VerifyChain without roots: %v", err)
			}
			if err := v.VerifyChain(VerifyOptions{Roots: sc.ca.Pool()}); err != nil || !v.VerifiedAt.Equal(signed.Truncate(time.Second)) {
				t.Errorf("VerifyChain at the signing time: %v, at %v", err, v.VerifiedAt)
			}
		}
	}
}

// TestVerifyCMSOpenSSLSigned: .p7m and detached signatures written by openssl cms and
// openssl smime (PKCS #7), DER and BER (-stream), verify.
func TestVerifyCMSOpenSSLSigned(t *testing.T) {
	sc := signers(t)[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(sc.signer)
	if err != nil {
		t.Fatal(err)
	}
	p := writeFiles(t, map[string][]byte{
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sc.chain[0].Raw}),
		"content":  binaryContent,
	})
	for name, args := range map[string][]string{
		"cms-attached-sha256": {"cms", "-nodetach", "-md", "sha256"},
		"cms-attached-sha1":   {"cms", "-nodetach", "-md", "sha1"},
		"cms-attached-ber":    {"cms", "-nodetach", "-stream", "-md", "sha256"},
		"cms-detached":        {"cms", "-md", "sha256"},
		"smime-attached":      {"smime", "-nodetach"},
	} {
		t.Run(name, func(t *testing.T) {
			out := p["content"] + "." + name
			cmd := append(args[:1:1], "-sign", "-binary", "-outform", "DER", "-in", p["content"], "-signer", p["cert.pem"],
				"-inkey", p["key.pem"], "-out", out)
			if msg, err := exec.Command("openssl", append(cmd, args[1:]...)...).CombinedOutput(); err != nil {
				t.Fatalf("openssl: %v\n%s", err, msg)
			}
			p7, _ := os.ReadFile(out)
			var given []byte
			if strings.Contains(name, "detached") {
				given = binaryContent
			}
			v, err := VerifyCMS(p7, given, VerifyOptions{Roots: sc.ca.Pool()})
			if err != nil || !bytes.Equal(v.Entity, binaryContent) {
				t.Fatalf("VerifyCMS: %v", err)
			}
		})
	}
}

// TestVerifyCMSULibLogs: the signed daily logs of another PEC product (2007, SHA-1, RSA)
// verify for integrity; their chain is long expired and not ours to trust.
func TestVerifyCMSULibLogs(t *testing.T) {
	paths, _ := filepath.Glob(corpus.Path("ulib-pec-log", "*", "*", "*.log.p7m"))
	if len(paths) != 2 {
		t.Fatalf("%d signed logs in the corpus", len(paths))
	}
	for _, path := range paths {
		p7, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := VerifyCMS(p7, nil, VerifyOptions{})
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		if v.Hash != crypto.SHA1 || v.SigningTime.Year() != 2007 || !bytes.Contains(v.Entity, []byte("PEC_Milter")) {
			t.Errorf("%s: hash %v, signed %v", filepath.Base(path), v.Hash, v.SigningTime)
		}
		bad := bytes.Clone(p7)
		bad[bytes.Index(bad, []byte("PEC_Milter"))] ^= 1
		if _, err := VerifyCMS(bad, nil, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s tampered: %v", filepath.Base(path), err)
		}
	}
}

// TestNodeSize: the one-allocation builder predicts its length for every length form.
func TestNodeSize(t *testing.T) {
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		nd := tlv(tagSequence, raw([]byte{5, 0}), tlv(tagCtx0, tlv(tagOctetString, raw(make([]byte, n)))))
		b := nd.appendTo(nil)
		if len(b) != nd.size() || !bytes.Equal(b, der(tagSequence, []byte{5, 0}, der(tagCtx0, der(tagOctetString, make([]byte, n))))) {
			t.Errorf("content %d: size %d, encoded %d", n, nd.size(), len(b))
		}
	}
}
