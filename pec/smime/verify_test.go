package smime

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var signedAt = time.Date(2026, 3, 1, 10, 11, 12, 0, time.UTC)

func TestRoundTrip(t *testing.T) {
	for _, sc := range signers(t) {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1, crypto.SHA512} {
			t.Run(sc.name+"/"+h.String(), func(t *testing.T) {
				entity := testEntity(5000)
				ct, body, err := Sign(entity, sc.signer, sc.chain, SignOptions{Hash: h, SigningTime: signedAt.Add(123 * time.Millisecond)})
				if err != nil {
					t.Fatal(err)
				}
				v, err := Verify(message(ct, body), VerifyOptions{Roots: sc.ca.Pool(), At: time.Now()})
				if err != nil {
					t.Fatal(err)
				}
				_, micalg, _ := hashOID(h)
				switch {
				case !bytes.Equal(v.Entity, entity):
					t.Fatal("Entity differs from what was signed")
				case !v.Signer.Equal(sc.chain[0]) || len(v.Certs) != len(sc.chain):
					t.Fatal("wrong signer or certificates")
				case v.Hash != h || v.Micalg != micalg || v.Protocol != Protocol:
					t.Fatalf("hash %v micalg %q protocol %q", v.Hash, v.Micalg, v.Protocol)
				case !v.SigningTime.Equal(signedAt):
					t.Fatalf("signing time %v, want %v", v.SigningTime, signedAt)
				case len(v.Chains) != 1 || !v.Chains[0][1].Equal(sc.ca.Cert):
					t.Fatalf("chains %v", v.Chains)
				case v.Header.Get("X-Ricevuta") != "accettazione":
					t.Fatal("top-level header not exposed")
				}
				// Outside the signer certificate's validity the chain does not build.
				if _, err := Verify(message(ct, body), VerifyOptions{Roots: sc.ca.Pool(), At: time.Now().AddDate(2, 0, 0)}); !errors.Is(err, ErrExpired) || !errors.Is(err, ErrUntrusted) {
					t.Fatalf("in two years: %v", err)
				}
				// A different CA does not anchor it.
				other := signers(t)[0].ca
				if _, err := Verify(message(ct, body), VerifyOptions{Roots: other.Pool(), At: time.Now()}); !errors.Is(err, ErrUntrusted) || errors.Is(err, ErrExpired) {
					t.Fatalf("other CA: %v", err)
				}
			})
		}
	}
}

// TestSignDeterministic: with an injected boundary, time and randomness, RSA output is
// byte-stable (PKCS #1 v1.5 is deterministic), which golden files in pec/ rely on.
func TestSignDeterministic(t *testing.T) {
	sc := signers(t)[0]
	opts := SignOptions{Boundary: "----PEC-TEST-BOUNDARY", SigningTime: signedAt, Rand: bytes.NewReader(make([]byte, 64))}
	ct1, b1, err := Sign(testEntity(300), sc.signer, sc.chain, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Rand = bytes.NewReader(make([]byte, 64))
	ct2, b2, err := Sign(testEntity(300), sc.signer, sc.chain, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Rand = bytes.NewReader(make([]byte, 64))
	ct3, head, tail, err := SignParts(testEntity(300), sc.signer, sc.chain, opts)
	if err != nil || ct3 != ct1 || !bytes.Equal(b1, slices.Concat(head, testEntity(300), tail)) {
		t.Fatalf("SignParts differs from Sign: %v", err)
	}
	want := `multipart/signed; protocol="application/x-pkcs7-signature"; micalg=sha-256; boundary="----PEC-TEST-BOUNDARY"`
	if ct1 != want || ct2 != ct1 || !bytes.Equal(b1, b2) {
		t.Fatalf("not deterministic or wrong Content-Type %q", ct1)
	}
	for _, line := range strings.Split(string(b1), "\r\n") {
		if len(line) > 76 && !strings.HasPrefix(line, "Riga") {
			t.Fatalf("line longer than 76: %q", line)
		}
	}
	if !bytes.Contains(b1, []byte("\r\n--"+opts.Boundary+"\r\n"+string(testEntity(300))+"\r\n--"+opts.Boundary+"\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\n")) {
		t.Fatal("first part is not the entity byte for byte")
	}
}

func TestSignRejects(t *testing.T) {
	sc := signers(t)
	good := testEntity(300)
	cases := map[string]func() error{
		"bare LF": func() error {
			_, _, err := Sign([]byte("Content-Type: text/plain\r\n\r\nciao\nmondo\r\n"), sc[0].signer, sc[0].chain, SignOptions{})
			return err
		},
		"bare CR": func() error {
			_, _, err := Sign([]byte("Content-Type: text/plain\r\n\r\nciao\r"), sc[0].signer, sc[0].chain, SignOptions{})
			return err
		},
		"boundary in entity": func() error {
			_, _, err := Sign(append(good, "--abc\r\n"...), sc[0].signer, sc[0].chain, SignOptions{Boundary: "abc"})
			return err
		},
		"bad boundary": func() error {
			_, _, err := Sign(good, sc[0].signer, sc[0].chain, SignOptions{Boundary: "a\"b"})
			return err
		},
		"key does not match certificate": func() error {
			_, _, err := Sign(good, sc[0].signer, sc[1].chain, SignOptions{})
			return err
		},
		"MD5": func() error {
			_, _, err := Sign(good, sc[0].signer, sc[0].chain, SignOptions{Hash: crypto.MD5})
			return err
		},
		"no chain": func() error {
			_, _, err := Sign(good, sc[0].signer, nil, SignOptions{})
			return err
		},
	}
	for name, f := range cases {
		if err := f(); err == nil {
			t.Errorf("%s: Sign succeeded", name)
		}
	}
}

func signedMessage(t testing.TB, sc signerCase, h crypto.Hash, size int) []byte {
	t.Helper()
	ct, body, err := Sign(testEntity(size), sc.signer, sc.chain, SignOptions{Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	return message(ct, body)
}

// TestTamperEntity changes single bytes of the signed entity (every 97th, plus its header
// and the end of its body): Verify must report ErrBadSignature. Top-level header fields are
// not signed (pec-spec §4.1), so changing them must not matter.
func TestTamperEntity(t *testing.T) {
	for _, sc := range signers(t) {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
			msg := signedMessage(t, sc, h, 20000)
			v, err := Verify(msg, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			start := bytes.Index(msg, v.Entity)
			if start < 0 {
				t.Fatal("entity not found")
			}
			positions := []int{start, start + 1, start + 14, start + len(v.Entity) - 1, start + len(v.Entity) - 3}
			for i := start; i < start+len(v.Entity); i += 97 {
				positions = append(positions, i)
			}
			for _, i := range positions {
				for _, x := range []byte{0x01, 0x20} {
					bad := bytes.Clone(msg)
					bad[i] ^= x
					if _, err := Verify(bad, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
						t.Fatalf("%s/%v: byte %d (%q) ^ %#x: got %v, want ErrBadSignature", sc.name, h, i-start, msg[i], x, err)
					}
				}
			}
			unsigned := bytes.Replace(msg, []byte("ACCETTAZIONE: prova"), []byte("ACCETTAZIONE: prove"), 1)
			if _, err := Verify(unsigned, VerifyOptions{Roots: sc.ca.Pool()}); err != nil {
				t.Fatalf("top-level header change: %v", err)
			}
		}
	}
}

// replaceP7S rebuilds msg with the signature part carrying der.
func replaceP7S(t testing.TB, msg []byte, der []byte) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("filename=\"smime.p7s\"\r\n\r\n"))
	j := bytes.LastIndex(msg, []byte("\r\n--"))
	if i < 0 || j < i {
		t.Fatal("signature part not found")
	}
	i += len("filename=\"smime.p7s\"\r\n\r\n")
	out := append(bytes.Clone(msg[:i]), appendBase64Lines(nil, der)...)
	return append(out, msg[j:]...)
}

func p7sOf(t testing.TB, msg []byte) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("filename=\"smime.p7s\"\r\n\r\n"))
	j := bytes.LastIndex(msg, []byte("\r\n--"))
	der, err := decodeTransfer("base64", msg[i+len("filename=\"smime.p7s\"\r\n\r\n"):j])
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestTamperP7S flips a bit in every octet of the DER signature: with the chain checked,
// nothing may verify (the strict parser leaves no unchecked byte).
func TestTamperP7S(t *testing.T) {
	for _, sc := range signers(t) {
		msg := signedMessage(t, sc, crypto.SHA256, 1000)
		der := p7sOf(t, msg)
		if _, err := Verify(replaceP7S(t, msg, der), VerifyOptions{Roots: sc.ca.Pool()}); err != nil {
			t.Fatal(err)
		}
		for i := range der {
			for _, x := range []byte{0x01, 0x80} {
				bad := bytes.Clone(der)
				bad[i] ^= x
				if _, err := Verify(replaceP7S(t, msg, bad), VerifyOptions{Roots: sc.ca.Pool()}); err == nil {
					t.Errorf("%s: DER byte %d of %d ^ %#x still verifies", sc.name, i, len(der), x)
				}
			}
		}
		// A changed character of the base64 text fails too.
		b64 := bytes.Index(msg, []byte("filename=\"smime.p7s\"\r\n\r\n")) + 30
		bad := bytes.Clone(msg)
		bad[b64] = map[bool]byte{true: 'B', false: 'A'}[bad[b64] == 'A']
		if _, err := Verify(bad, VerifyOptions{}); err == nil {
			t.Errorf("%s: changed base64 still verifies", sc.name)
		}
	}
}

// TestLFStored: a copy stored with LF line ends (like the corpus files) verifies, and Entity
// is the CRLF form that was signed.
func TestLFStored(t *testing.T) {
	for _, sc := range signers(t) {
		msg := signedMessage(t, sc, crypto.SHA1, 3000)
		lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		v, err := Verify(lf, VerifyOptions{Roots: sc.ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v.Entity, testEntity(3000)) {
			t.Fatal("Entity is not the canonical signed entity")
		}
		lf[bytes.Index(lf, []byte("Riga 000007"))+5] = '8'
		if _, err := Verify(lf, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered LF copy: %v", err)
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	sc := signers(t)[0]
	good := signedMessage(t, sc, crypto.SHA256, 500)
	ct := string(good[bytes.Index(good, []byte("Content-Type: ")):bytes.Index(good, []byte("\r\n\r\n"))])
	boundary := ct[strings.Index(ct, `boundary="`)+10 : len(ct)-1]
	cases := []struct {
		name string
		msg  string
		want error
	}{
		{"plain", "From: a@b\r\nSubject: x\r\n\r\nciao\r\n", ErrNotSigned},
		{"no header end", "From: a@b\r\nSubject: x", ErrMalformed},
		{"pgp", "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", ErrNotSigned},
		{"enveloped", "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nAAAA\r\n", ErrNotSigned},
		{"no protocol", "Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", ErrMalformed},
		{"no boundary", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\r\n\r\n", ErrMalformed},
		{"one part", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", ErrMalformed},
		{"no close", strings.TrimSuffix(string(good), "--"+boundary+"--\r\n"), ErrMalformed},
		{"three parts", strings.Replace(string(good), "--"+boundary+"--\r\n", "--"+boundary+"\r\n\r\nx\r\n--"+boundary+"--\r\n", 1), ErrMalformed},
		{"bad base64", strings.Replace(string(good), "filename=\"smime.p7s\"\r\n\r\nM", "filename=\"smime.p7s\"\r\n\r\n*", 1), ErrMalformed},
		{"empty p7s", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n--b--\r\n", ErrMalformed},
		{"opaque garbage", "Content-Type: application/x-pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMAA=\r\n", ErrMalformed},
	}
	for _, c := range cases {
		if _, err := Verify([]byte(c.msg), VerifyOptions{}); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// TestOpenSSLSigned verifies messages signed by OpenSSL: multipart/signed and opaque
// signed-data (BER, indefinite lengths), with the same test key and CA.
func TestOpenSSLSigned(t *testing.T) {
	sc := signers(t)[0]
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(sc.signer)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	cert := write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sc.chain[0].Raw}))
	entity := testEntity(4000)
	in := write("entity", entity)
	for _, mode := range []struct {
		name string
		args []string
		mt   string
	}{
		{"detached-sha1", []string{"-md", "sha1"}, "pkcs7-signature"},
		{"detached-sha256", []string{"-md", "sha256"}, "pkcs7-signature"},
		{"opaque", []string{"-nodetach", "-md", "sha256"}, "pkcs7-mime"},
		{"opaque-sha1", []string{"-nodetach", "-md", "sha1"}, "pkcs7-mime"},
		// openssl cms -stream writes BER: indefinite lengths, constructed OCTET STRING.
		{"opaque-ber", []string{"-nodetach", "-stream", "-md", "sha256"}, "pkcs7-mime"},
		{"detached-ber", []string{"-stream", "-md", "sha256"}, "pkcs7-signature"},
		// -keyid: SignerInfo version 3 with subjectKeyIdentifier (RFC 5652 §5.3).
		{"detached-keyid", []string{"-keyid", "-md", "sha256"}, "pkcs7-signature"},
		// -noattr: no signed attributes, the signature covers the content digest (RFC 5652 §5.4).
		{"detached-noattr", []string{"-noattr", "-md", "sha1"}, "pkcs7-signature"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tool := "smime"
			if strings.HasSuffix(mode.name, "-ber") || strings.HasSuffix(mode.name, "-keyid") || strings.HasSuffix(mode.name, "-noattr") {
				tool = "cms"
			}
			args := append([]string{tool, "-sign", "-binary", "-in", in, "-signer", cert, "-inkey", key, "-out", filepath.Join(dir, mode.name)}, mode.args...)
			if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl: %v\n%s", err, out)
			}
			msg, err := os.ReadFile(filepath.Join(dir, mode.name))
			if err != nil {
				t.Fatal(err)
			}
			v, err := Verify(msg, VerifyOptions{Roots: sc.ca.Pool()})
			if err != nil {
				t.Fatalf("%v\n%s", err, msg[:min(len(msg), 600)])
			}
			if !bytes.Equal(v.Entity, entity) || !strings.HasSuffix(v.Protocol, mode.mt) {
				t.Fatalf("entity equal %v, protocol %q", bytes.Equal(v.Entity, entity), v.Protocol)
			}
			if mode.mt == "pkcs7-signature" {
				bad := bytes.Replace(msg, []byte("Riga 000003"), []byte("Riga 000004"), 1)
				if _, err := Verify(bad, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("tampered detached: %v", err)
				}
			}
			if mode.mt == "pkcs7-mime" {
				// Flip a bit inside the encapsulated content: the digest no longer matches.
				i := bytes.Index(msg, []byte("\n\n")) + 2
				if j := bytes.Index(msg, []byte("\r\n\r\n")); j > 0 && j+4 < i {
					i = j + 4
				}
				der, err := decodeTransfer("base64", msg[i:])
				if err != nil {
					t.Fatal(err)
				}
				k := bytes.Index(der, []byte("Riga 000003"))
				der[k+5] ^= 1
				bad := append(bytes.Clone(msg[:i]), base64.StdEncoding.EncodeToString(der)...)
				if _, err := Verify(bad, VerifyOptions{}); !errors.Is(err, ErrBadSignature) {
					t.Fatalf("tampered opaque: %v", err)
				}
			}
		})
	}
}

// TestHeaderSpellings: micalg and protocol spellings seen in real traffic are accepted
// (pec-spec §8.2); micalg is a hint the CMS overrides (RFC 5751 §3.4.3.2).
func TestHeaderSpellings(t *testing.T) {
	sc := signers(t)[0]
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		msg := string(signedMessage(t, sc, h, 400))
		_, micalg, _ := hashOID(h)
		for _, repl := range []string{"micalg=sha1", "micalg=\"sha1\"", "micalg=SHA-1", "micalg=sha-256", "micalg=sha256", "micalg=\"SHA256\"", "x-micalg=none"} {
			for _, proto := range []string{Protocol, "application/pkcs7-signature", "Application/X-PKCS7-Signature"} {
				m := strings.Replace(msg, "micalg="+micalg, repl, 1)
				m = strings.Replace(m, `protocol="`+Protocol+`"`, `protocol="`+proto+`"`, 1)
				v, err := Verify([]byte(m), VerifyOptions{Roots: sc.ca.Pool()})
				if err != nil {
					t.Fatalf("%s %s: %v", repl, proto, err)
				}
				if v.Hash != h || v.Protocol != strings.ToLower(proto) {
					t.Fatalf("hash %v protocol %q", v.Hash, v.Protocol)
				}
			}
		}
	}
}

func TestLenientParams(t *testing.T) {
	for in, want := range map[string]map[string]string{
		`multipart/signed; protocol="application/x-pkcs7-signature"; micalg=sha1; boundary=----=_Part_1`: {"protocol": "application/x-pkcs7-signature", "micalg": "sha1", "boundary": "----=_Part_1"},
		`multipart/signed; Boundary="a;b"; ; x`:                                                          {"boundary": "a;b"},
		`multipart/signed; micalg = "sha-256" ;protocol=application/pkcs7-signature`:                     {"micalg": "sha-256", "protocol": "application/pkcs7-signature"},
	} {
		mt, got, err := mediaType(in)
		if err != nil || mt != "multipart/signed" || len(got) != len(want) {
			t.Fatalf("%s: %q %v %v", in, mt, got, err)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: %s=%q, want %q", in, k, got[k], v)
			}
		}
	}
	// And a whole message with such a header verifies.
	sc := signers(t)[0]
	ct, body, err := Sign(testEntity(200), sc.signer, sc.chain, SignOptions{Boundary: "----=_Part_7_1"})
	if err != nil {
		t.Fatal(err)
	}
	ct = strings.Replace(ct, `"----=_Part_7_1"`, "----=_Part_7_1", 1)
	if _, err := Verify(message(ct, body), VerifyOptions{Roots: sc.ca.Pool()}); err != nil {
		t.Fatalf("%s: %v", ct, err)
	}
}
