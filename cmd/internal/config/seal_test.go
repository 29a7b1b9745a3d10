package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestSealSection(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if c.Seal != nil {
		t.Fatalf("no seal section: Seal = %+v, want nil (sealing off)", c.Seal)
	}

	good := string(base) + "seal: {tsa_url: \"http://127.0.0.1:3180/\", tsa_ca: /tmp/pec-lab/tsa/tsa-ca.pem, signer_ca: /tmp/pec-lab/ca/root.pem, dir: /tmp/pec-lab/a/seal, grace: 15m}\n"
	c, err = Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Seal == nil || c.Seal.TSAURL != "http://127.0.0.1:3180/" || c.Seal.TSACA != "/tmp/pec-lab/tsa/tsa-ca.pem" ||
		c.Seal.SignerCA != "/tmp/pec-lab/ca/root.pem" || c.Seal.Dir != "/tmp/pec-lab/a/seal" || c.Seal.Grace != 15*time.Minute {
		t.Errorf("Seal = %+v", c.Seal)
	}

	for _, tc := range []struct{ section, want string }{
		{"seal: {tsa_ca: /ca.pem, dir: /s}", "config: seal.tsa_url: required"},
		{"seal: {tsa_url: \"ftp://x/\", tsa_ca: /ca.pem, dir: /s}", "config: seal.tsa_url: \"ftp://x/\""},
		{"seal: {tsa_url: \"http://127.0.0.1:3180/\", dir: /s}", "config: seal.tsa_ca: required"},
		{"seal: {tsa_url: \"http://127.0.0.1:3180/\", tsa_ca: /ca.pem}", "config: seal.dir: required"},
		{"seal: {tsa_url: \"http://127.0.0.1:3180/\", tsa_ca: /ca.pem, dir: /s, grace: -1m}", "config: seal.grace:"},
		{"seal: {tsa_url: \"http://127.0.0.1:3180/\", tsa_ca: /ca.pem, dir: /s, tsa: x}", "tsa"},
	} {
		_, err := Parse([]byte(string(base) + tc.section + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.section, err, tc.want)
		}
	}
}
