package hsm_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/hsm"
)

func TestParseURI(t *testing.T) {
	u, err := hsm.ParseURI("pkcs11:token=Provider%20A;object=provider-a;id=%01%AB;type=private;serial=1234?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/gestore/pin")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "Provider A" || u.Object != "provider-a" || !bytes.Equal(u.ID, []byte{1, 0xab}) ||
		u.ModulePath != "/usr/lib/softhsm/libsofthsm2.so" || u.PINSource != "/etc/gestore/pin" {
		t.Fatalf("%+v", u)
	}
	for uri, want := range map[string]string{
		"token=x":                            "must start with pkcs11",
		"pkcs11:token=x?pin-value=1234":      "pin-value is refused",
		"pkcs11:tokn=x":                      "unknown path attribute",
		"pkcs11:token=x;object=%zz":          "attribute object",
		"pkcs11:token=x;type=cert":           "type=private",
		"pkcs11:token=x?pin-source=http://a": "only file:",
		"pkcs11:token":                       "want name=value",
	} {
		if _, err := hsm.ParseURI(uri); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", uri, err, want)
		}
	}
}

// TestURIConfig loads the key through a pkcs11: URI with the PIN in a file.
func TestURIConfig(t *testing.T) {
	pinFile := t.TempDir() + "/pin"
	if err := writeFile(pinFile, testPIN+"\n"); err != nil {
		t.Fatal(err)
	}
	cfg := hsm.Config{
		PKCS11:      hsm.PKCS11Config{URI: "pkcs11:token=pec-main;id=%01?module-path=" + softhsmModule + "&pin-source=file:" + pinFile},
		Certificate: goodCert(t, newCA(t), "pec-main", "rsa"),
	}
	k := newKeys(t, cfg)
	s, _, _ := k.SignerFor(testDomain)
	if err := signOnce(s); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseURI: no input panics, and a URI carrying a PIN is never accepted.
func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=a;object=b;id=%01?module-path=/m.so&pin-source=file:/p")
	f.Add("pkcs11:token=a?pin-value=1")
	f.Add("pkcs11:x-vendor=%zz;token")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			return
		}
		if _, q, ok := strings.Cut(s, "?"); ok {
			for _, kv := range strings.Split(q, "&") {
				if k, _, _ := strings.Cut(kv, "="); strings.EqualFold(k, "pin-value") {
					t.Fatalf("accepted a PIN in %q: %+v", s, u)
				}
			}
		}
	})
}
