package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/igpec"
)

func indexCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(append([]string{"index"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// indexProvider writes a provider's certificate chain, PEM key and pec.yaml.
func indexProvider(t *testing.T, dir, id, name, domain string, ca *hsmtest.CA) (config, keyFile string, cert *x509.Certificate) {
	t.Helper()
	kr := hsmtest.New(t, name, domain)
	key, chain, err := kr.SignerFor(domain)
	if err != nil {
		t.Fatal(err)
	}
	// Reissue the certificate from the shared CA so that one trust anchor covers both.
	cert = ca.ProviderCert(t, name, "posta-certificata@"+domain, key.Public(), chain[0].NotBefore, chain[0].NotAfter)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(dir, id+".key")
	certFile := filepath.Join(dir, id+"-chain.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	config = filepath.Join(dir, id+".yaml")
	os.WriteFile(config, []byte(`
provider:
  name: "`+name+`"
  domains: [`+domain+`, Cert.`+domain+`]
  service_address: posta-certificata@`+domain+`
  receipt_address: ricevute@`+domain+`
  production: false
signer:
  pem_key: `+keyFile+`
  certificate: `+certFile+`
index: {source: `+filepath.Join(dir, "igpec.ldif")+`, cache: `+filepath.Join(dir, "cache.ldif")+`}
`), 0o644)
	return config, keyFile, cert
}

func TestIndexExportLookupDumpSync(t *testing.T) {
	dir := t.TempDir()
	ca := hsmtest.NewCA(t)
	anchor := filepath.Join(dir, "ca.pem")
	os.WriteFile(anchor, ca.PEM(), 0o644)
	cfgA, keyA, certA := indexProvider(t, dir, "a", "Provider A S.p.A.", "pec-a.test", ca)
	cfgB, _, certB := indexProvider(t, dir, "b", "Provider B S.p.A.", "pec-b.test", ca)

	// Plain LDIF export of A, with the URL and a description.
	code, ldifA, stderr := indexCmd(t, "export", "-config", cfgA, "-url", "https://pec-a.test/a.ldif.p7m", "-description", "Servizio PEC di A")
	if code != 0 {
		t.Fatalf("export: %d %s", code, stderr)
	}
	for _, want := range []string{"dn: providerName=Provider A S.p.A.,o=postacert", "providerCertificate;binary:: ",
		"providerCertificateHash: " + igpec.CertificateHash(certA.Raw), "mailReceipt: ricevute@pec-a.test",
		"managedDomains: pec-a.test", "managedDomains: cert.pec-a.test", "LDIFLocationURL: https://pec-a.test/a.ldif.p7m"} {
		if !strings.Contains(ldifA, want) {
			t.Errorf("export lacks %q:\n%s", want, ldifA)
		}
	}

	// Signed exports: A with -key, B with the configured signer (signer.pem_key through hsm).
	p7mA, p7mB := filepath.Join(dir, "a.ldif.p7m"), filepath.Join(dir, "b.ldif.p7m")
	if code, _, stderr := indexCmd(t, "export", "-config", cfgA, "-sign", "-key", keyA, "-o", p7mA); code != 0 {
		t.Fatalf("export -sign -key: %d %s", code, stderr)
	}
	if code, _, stderr := indexCmd(t, "export", "-config", cfgB, "-sign", "-o", p7mB); code != 0 {
		t.Fatalf("export -sign (hsm): %d %s", code, stderr)
	}
	raw, _ := os.ReadFile(p7mB)
	content, signer, err := igpec.VerifySignedLDIF(raw, ca.Pool())
	if err != nil || !bytes.Equal(signer.Raw, certB.Raw) || !bytes.Contains(content, []byte("pec-b.test")) {
		t.Fatalf("B's .p7m: %v", err)
	}
	// Other providers may check it with openssl.
	for _, p7m := range []string{p7mA, p7mB} {
		out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", p7m, "-CAfile", anchor).Output()
		if err != nil || !bytes.Contains(out, []byte("dn: providerName=Provider ")) {
			t.Errorf("openssl cms -verify %s: %v", filepath.Base(p7m), err)
		}
	}
	// A key that is not the certificate's is refused.
	// (hsmtest reuses its RSA keys across keyrings, so make a fresh one.)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(other)
	otherKey := filepath.Join(dir, "other.key")
	os.WriteFile(otherKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherDER}), 0o600)
	if code, _, _ := indexCmd(t, "export", "-config", cfgA, "-sign", "-key", otherKey, "-o", filepath.Join(dir, "bad.p7m")); code != 1 {
		t.Errorf("export with a foreign key: exit %d, want 1", code)
	}

	// Lookups against the signed file.
	if code, out, stderr := indexCmd(t, "lookup", "-source", p7mA, "-trust-anchor", anchor, "CERT.Pec-A.test."); code != 0 || !strings.Contains(out, "ricevute@pec-a.test") {
		t.Errorf("lookup domain: %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := indexCmd(t, "lookup", "posta.test", "-source", p7mA, "-trust-anchor", anchor); code != 1 || !strings.Contains(out, "not certified") {
		t.Errorf("lookup unknown: %d %s", code, out)
	}
	certFile := filepath.Join(dir, "a-chain.pem")
	if code, out, _ := indexCmd(t, "lookup", "-source", p7mA, "-trust-anchor", anchor, "-cert", certFile); code != 0 || !strings.Contains(out, "Provider A S.p.A.") {
		t.Errorf("lookup -cert: %d %s", code, out)
	}
	if code, out, _ := indexCmd(t, "lookup", "-source", p7mA, "-trust-anchor", anchor, "-cert", filepath.Join(dir, "b-chain.pem")); code != 1 || !strings.Contains(out, "no provider") {
		t.Errorf("lookup -cert B in A's index: %d %s", code, out)
	}
	if code, out, _ := indexCmd(t, "lookup", "-source", p7mA, "-trust-anchor", anchor, "-hash", strings.ToLower(igpec.CertificateHash(certA.Raw))); code != 0 || !strings.Contains(out, "Provider A S.p.A.") {
		t.Errorf("lookup -hash: %d %s", code, out)
	}
	if code, _, _ := indexCmd(t, "lookup", "-source", p7mA, "pec-a.test"); code != 1 {
		t.Errorf("a .p7m without trust anchor: exit %d, want 1", code)
	}
	if code, _, _ := indexCmd(t, "lookup", "-source", p7mA); code != 2 {
		t.Errorf("lookup with nothing to look up: exit %d, want 2", code)
	}

	// The combined index (the configs' index.source) and sync against the cache.
	_, ldifB, _ := indexCmd(t, "export", "-config", cfgB)
	index := filepath.Join(dir, "igpec.ldif")
	os.WriteFile(index, []byte(ldifA), 0o644)
	if code, out, stderr := indexCmd(t, "sync", "-config", cfgA); code != 0 || !strings.Contains(out, "no previous local copy") || !strings.Contains(out, "added: providerName=Provider A") {
		t.Errorf("first sync: %d\n%s%s", code, out, stderr)
	}
	if code, out, _ := indexCmd(t, "sync", "-config", cfgA); code != 0 || !strings.Contains(out, "no change") {
		t.Errorf("second sync: %d\n%s", code, out)
	}
	os.WriteFile(index, []byte(ldifA+strings.TrimPrefix(ldifB, "version: 1\n")), 0o644)
	if code, out, _ := indexCmd(t, "sync", "-config", cfgA); code != 0 || !strings.Contains(out, "added: providerName=Provider B") || !strings.Contains(out, "domain added: pec-b.test") {
		t.Errorf("third sync: %d\n%s", code, out)
	}
	// Source broken: sync fails, the cache stays and -cached still answers.
	os.WriteFile(index, []byte("dn: broken\nno colon here\n"), 0o644)
	if code, _, stderr := indexCmd(t, "sync", "-config", cfgA); code != 1 || !strings.Contains(stderr, "line 2") {
		t.Errorf("sync of a broken source: %d %s", code, stderr)
	}
	if code, out, _ := indexCmd(t, "lookup", "-config", cfgA, "-cached", "pec-b.test"); code != 0 || !strings.Contains(out, "Provider B") {
		t.Errorf("lookup -cached: %d %s", code, out)
	}
	code, out, _ := indexCmd(t, "dump", "-config", cfgA, "-cached")
	if code != 0 || strings.Count(out, "\ndn: ") != 2 || !strings.Contains(out, "# records: 2, domains: 4") {
		t.Errorf("dump -cached: %d\n%s", code, out)
	}
}

// pecctl reads index.cache as the daemons do (config.Decode applies the same default): unset,
// the local copy is providers-index.ldif next to the SQLite store, which sync writes and
// -cached reads; "off" means no local copy, not a file named "off".
func TestIndexCacheAsTheDaemons(t *testing.T) {
	dir := t.TempDir()
	const name, domain = "Provider A S.p.A.", "pec-a.test"
	_, _, cert := indexProvider(t, dir, "a", name, domain, hsmtest.NewCA(t))
	var ldif bytes.Buffer
	igpec.WriteLDIF(&ldif, []*igpec.Record{{DN: "providerName=" + name + ",o=postacert", Name: name,
		Certificates: []*x509.Certificate{cert}, Hashes: []string{igpec.CertificateHash(cert.Raw)},
		MailReceipt: "ricevute@" + domain, Domains: []string{domain}}})
	source := filepath.Join(dir, "igpec.ldif")
	os.WriteFile(source, ldif.Bytes(), 0o644)
	os.Mkdir(filepath.Join(dir, "db"), 0o700) // the store's directory, which the daemons create
	conf := func(file, cache string) string {
		p := filepath.Join(dir, file)
		os.WriteFile(p, []byte("provider: {name: \""+name+"\", domains: ["+domain+"]}\n"+
			"index: {source: "+source+cache+"}\n"+
			"store: {driver: sqlite, dsn: "+filepath.Join(dir, "db", "pec.db")+"}\n"), 0o600)
		return p
	}
	t.Chdir(t.TempDir()) // where a cache named "off" would land

	dflt := conf("default.yaml", "")
	if code, out, stderr := indexCmd(t, "sync", "-config", dflt); code != 0 || !strings.Contains(out, filepath.Join(dir, "db", "providers-index.ldif")) {
		t.Fatalf("sync with index.cache unset: exit %d\n%s%s", code, out, stderr)
	}
	if code, out, stderr := indexCmd(t, "lookup", "-config", dflt, "-cached", domain); code != 0 || !strings.Contains(out, name) {
		t.Errorf("lookup -cached with index.cache unset: exit %d\n%s%s", code, out, stderr)
	}

	off := conf("off.yaml", `, cache: "off"`)
	if code, _, stderr := indexCmd(t, "sync", "-config", off); code == 0 || !strings.Contains(stderr, "sync needs a local copy") {
		t.Errorf("sync with index.cache off: exit %d, %s", code, stderr)
	}
	if code, _, stderr := indexCmd(t, "lookup", "-config", off, "-cached", domain); code == 0 || !strings.Contains(stderr, "-cached needs index.cache") {
		t.Errorf("lookup -cached with index.cache off: exit %d, %s", code, stderr)
	}
	if code, out, stderr := indexCmd(t, "lookup", "-config", off, domain); code != 0 || !strings.Contains(out, name) {
		t.Errorf("lookup from the source with index.cache off: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := os.Stat("off"); err == nil {
		t.Error(`index.cache: off wrote a file named "off"`)
	}
}
