package smime

import (
	"bytes"
	"crypto"
	"testing"
	"time"
)

func TestSignOpenSSL(t *testing.T) {
	for _, sc := range signers(t) {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA1} {
			t.Run(sc.name+"/"+h.String(), func(t *testing.T) {
				ct, body, err := Sign(testEntity(2000), sc.signer, sc.chain, SignOptions{Hash: h})
				if err != nil {
					t.Fatal(err)
				}
				msg := message(ct, body)
				if out, err := opensslVerify(t, msg, sc.ca.PEM(), noTime); err != nil {
					t.Fatalf("openssl cms -verify: %v\n%s\n%s", err, out, msg)
				}
				bad := bytes.Replace(msg, []byte("Riga 000010"), []byte("Riga 000011"), 1)
				if out, err := opensslVerify(t, bad, sc.ca.PEM(), noTime); err == nil {
					t.Fatalf("openssl accepted a tampered message: %s", out)
				}
			})
		}
	}
}

var noTime time.Time

func TestParseHash(t *testing.T) {
	for in, want := range map[string]crypto.Hash{"": crypto.SHA256, "SHA256": crypto.SHA256, "sha-256": crypto.SHA256, "sha1": crypto.SHA1, "SHA-1": crypto.SHA1, " sha512 ": crypto.SHA512} {
		if h, err := ParseHash(in); err != nil || h != want {
			t.Errorf("%q: %v %v", in, h, err)
		}
	}
	if _, err := ParseHash("md5"); err == nil {
		t.Error("md5 accepted")
	}
}
