//go:build integration

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// TestIndexLab runs pecctl index on each lab provider's own pec.yaml: lookups against the lab's
// slapd, a sync into a private cache, and the signed export made by the provider's SoftHSM2
// token through hsm, verified against the lab CA.
func TestIndexLab(t *testing.T) {
	l := lab.ForTest(t)
	t.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	// Only the root: the .p7m must carry the intermediate (signer.certificate is the chain).
	anchor := l.CA.Cert
	roots, err := igpec.LoadTrustAnchor(anchor)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Providers {
		t.Run(p.ID, func(t *testing.T) {
			var cfg indexFile
			b, err := os.ReadFile(p.ConfigFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			t.Setenv(cfg.Signer.PKCS11.PINEnv, p.Token.PIN)

			for _, q := range l.Providers {
				code, out, stderr := indexCmd(t, "lookup", "-config", p.ConfigFile, strings.ToUpper(q.Domain)+".")
				if code != 0 || !strings.Contains(out, q.ReceiptAddress) || !strings.Contains(out, q.CertSHA1) {
					t.Errorf("lookup %s: %d\n%s%s", q.Domain, code, out, stderr)
				}
			}
			if code, out, _ := indexCmd(t, "lookup", "-config", p.ConfigFile, l.Ordinary.Domain); code != 1 {
				t.Errorf("lookup %s: %d %s", l.Ordinary.Domain, code, out)
			}
			if code, out, _ := indexCmd(t, "lookup", "-config", p.ConfigFile, "-cert", p.Cert); code != 0 || !strings.Contains(out, p.Name) {
				t.Errorf("lookup -cert: %d %s", code, out)
			}
			cache := filepath.Join(t.TempDir(), "cache.ldif")
			code, out, stderr := indexCmd(t, "sync", "-config", p.ConfigFile, "-cache", cache)
			if code != 0 {
				t.Errorf("sync: %d\n%s%s", code, out, stderr)
			}
			// Every provider and its domain (A also has pec-a2.test); the index also lists the
			// reception tests' revoked signer, Provider R.
			for _, q := range l.Providers {
				if !strings.Contains(out, "added: providerName="+q.Name+",") || !strings.Contains(out, "domain added: "+q.Domain+"\n") {
					t.Errorf("sync: %s (%s) not added\n%s", q.Name, q.Domain, out)
				}
			}

			p7m := filepath.Join(t.TempDir(), p.ID+".ldif.p7m")
			if code, _, stderr := indexCmd(t, "export", "-config", p.ConfigFile, "-sign", "-o", p7m, "-url", "https://"+p.Domain+"/igpec.ldif.p7m"); code != 0 {
				t.Fatalf("export -sign: %d %s", code, stderr)
			}
			raw, _ := os.ReadFile(p7m)
			content, signer, err := igpec.VerifySignedLDIF(raw, roots)
			if err != nil {
				t.Fatal(err)
			}
			if igpec.CertificateHash(signer.Raw) != p.CertSHA1 {
				t.Errorf("signed by %s, want the provider's certificate %s", igpec.CertificateHash(signer.Raw), p.CertSHA1)
			}
			// The exported record is the one the lab's slapd holds (same name, receipt, domain, hash).
			for _, want := range []string{"providerName: " + p.Name, "mailReceipt: " + p.ReceiptAddress,
				"managedDomains: " + p.Domain, "providerCertificateHash: " + p.CertSHA1} {
				if !strings.Contains(string(content), want) {
					t.Errorf("export lacks %q", want)
				}
			}
		})
	}
}
