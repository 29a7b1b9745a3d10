package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// The real CA certificates the smime helper keeps for its corpus tests.
var realCAs = []string{
	"../../pec/smime/testdata/agid-ca1-2018.pem",
	"../../pec/smime/testdata/agid-ca1-2021.pem",
	"../../pec/smime/testdata/digitpa-ca1.pem",
}

func realFiles(t *testing.T) (good []string, edited string) {
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	for _, f := range files {
		if strings.Contains(f, "edited") {
			edited = f
		} else {
			good = append(good, f)
		}
	}
	if len(good) != 11 || edited == "" {
		t.Fatalf("corpus: %d good files, edited %q", len(good), edited)
	}
	return good, edited
}

func TestVerifyRealCorpusConforms(t *testing.T) {
	good, _ := realFiles(t)
	args := []string{"--json"}
	for _, ca := range realCAs {
		args = append(args, "--ca", ca)
	}
	var out, errb bytes.Buffer
	if code := runVerify(append(args, good...), &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	var reps []verifyReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if !r.Conforms || r.Signer == "" {
			t.Errorf("%s: %+v", r.File, r)
		}
		// The chain was checked: either to AgID CA1 or, for the 2014 DigitPA chain, by
		// our SHA-1 path.
		sha1 := false
		for _, f := range r.Findings {
			sha1 = sha1 || f.Code == "chain-sha1"
		}
		if r.ChainTo == "" && !sha1 {
			t.Errorf("%s: chain not checked", r.File)
		}
	}
}

func TestVerifyEditedCorpusMessage(t *testing.T) {
	_, edited := realFiles(t)
	var out, errb bytes.Buffer
	if code := runVerify([]string{edited}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{"DOES NOT CONFORM", "[signature]", "[daticert-missing]", "§4.2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestVerifyUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runVerify(nil, &out, &errb); code != 2 {
		t.Fatalf("no files: exit %d", code)
	}
	if code := runVerify([]string{"--ca", "/nonexistent.pem", "x.eml"}, &out, &errb); code != 2 {
		t.Fatalf("bad --ca: exit %d", code)
	}
	if code := runVerify([]string{"--bogus"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
	if code := runVerify([]string{filepath.Join(t.TempDir(), "missing.eml")}, &out, &errb); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	// A real busta with only warnings passes, and fails with --strict.
	busta := corpus.Path("real", "aruba-2014-busta.eml")
	if code := runVerify([]string{busta}, &out, &errb); code != 0 {
		t.Fatalf("busta: exit %d", code)
	}
	if code := runVerify([]string{"--strict", busta}, &out, &errb); code != 1 {
		t.Fatalf("--strict busta with warnings: exit %d", code)
	}
}

// Every kind pecctl sample writes passes pecctl verify with the sample CA, with no finding
// at all, and a tampered copy fails.
func TestSampleThenVerifyEveryKind(t *testing.T) {
	dir := t.TempDir()
	var list bytes.Buffer
	if code := runSample([]string{"list"}, &list, os.Stderr); code != 0 {
		t.Fatal("sample list failed")
	}
	kinds := strings.Fields(list.String())
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(list.String()), "\n") {
		kind := strings.Fields(line)[0]
		n++
		msg, ca := filepath.Join(dir, kind+".eml"), filepath.Join(dir, kind+".pem")
		var out, errb bytes.Buffer
		args := []string{kind, "-o", msg, "--ca-out", ca}
		if kind == "accettazione" {
			args = append(args, "--html", "--digest", "sha1")
		}
		if code := runSample(args, &out, &errb); code != 0 {
			t.Fatalf("sample %s: exit %d: %s", kind, code, errb.String())
		}
		out.Reset()
		if code := runVerify([]string{"--json", "--ca", ca, msg}, &out, &errb); code != 0 {
			t.Fatalf("verify %s: exit %d\n%s", kind, code, out.String())
		}
		var reps []verifyReport
		if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
			t.Fatal(err)
		}
		if r := reps[0]; r.Kind != kind || len(r.Findings) != 0 || r.ChainTo == "" {
			t.Errorf("%s: %+v", kind, r)
		}
		raw, _ := os.ReadFile(msg)
		bad := bytes.Replace(raw, []byte("daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\nPD94"), []byte("daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\nPD93"), 1)
		if kind == "anomalia" {
			bad = bytes.Replace(raw, []byte("Il giorno"), []byte("Il Giorno"), 1)
		}
		if bytes.Equal(bad, raw) {
			t.Fatalf("%s: tampering did not change the message", kind)
		}
		if err := os.WriteFile(msg, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if code := runVerify([]string{"--ca", ca, msg}, &out, &errb); code != 1 {
			t.Errorf("%s: tampered message passed", kind)
		}
	}
	if n != 14 || len(kinds) < 14 {
		t.Fatalf("sample list has %d kinds", n)
	}
}

func TestSampleUsage(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{nil, {"nonsense"}, {"busta", "--digest", "md5"}, {"busta", "--key", "k.pem"}} {
		if code := runSample(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// pecctl sample --key/--cert signs with a configured key; the service address and domain
// come from the certificate.
func TestSampleWithConfiguredKey(t *testing.T) {
	s, caPEM, err := throwAwaySigner("Provider B S.p.A.", "pec-b.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.chain[0].Raw}),
		"ca.pem":   caPEM,
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if code := runSample([]string{"presa-in-carico", "--provider", "Provider B S.p.A.", "--key", filepath.Join(dir, "key.pem"), "--cert", filepath.Join(dir, "cert.pem")}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("From: posta-certificata@pec-b.test\r\n")) {
		t.Fatal("From is not the certificate's service address")
	}
	msg := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(msg, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := runVerify([]string{"--ca", filepath.Join(dir, "ca.pem"), msg}, &out, &errb); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out.String())
	}
}

// trustSetup is provider B with a certificate of a throw-away CA, a presa in carico it signed
// (pecctl sample with its key), and the files pecctl verify reads.
type trustSetup struct {
	dir, msg, ca string
	caCert       *x509.Certificate
	caKey        crypto.Signer
	cert         *x509.Certificate
}

func newTrustSetup(t *testing.T) *trustSetup {
	t.Helper()
	ca := hsmtest.NewCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s := &trustSetup{dir: t.TempDir(), caCert: ca.Cert}
	s.cert = ca.ProviderCert(t, "Provider B S.p.A.", "posta-certificata@pec-b.test", &key.PublicKey, now.Add(-time.Hour), now.AddDate(1, 0, 0))
	blk, _ := pem.Decode(ca.KeyPEM())
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s.caKey = k.(crypto.Signer)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	s.ca = s.write(t, "ca.pem", ca.PEM())
	keyFile := s.write(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	certFile := s.write(t, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Raw}))
	var out, errb bytes.Buffer
	if code := runSample([]string{"presa-in-carico", "--provider", "Provider B S.p.A.", "--key", keyFile, "--cert", certFile}, &out, &errb); code != 0 {
		t.Fatalf("sample: exit %d: %s", code, errb.String())
	}
	s.msg = s.write(t, "msg.eml", out.Bytes())
	return s
}

func (s *trustSetup) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// index writes an LDIF index with provider B's record for certs, managing domains.
func (s *trustSetup) index(t *testing.T, certs []*x509.Certificate, domains ...string) string {
	t.Helper()
	rec, err := igpec.NewRecord("Provider B S.p.A.", "", "ricevute@pec-b.test", certs, domains...)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := igpec.WriteLDIF(&b, []*igpec.Record{rec}); err != nil {
		t.Fatal(err)
	}
	return s.write(t, "index.ldif", b.Bytes())
}

func verifyJSON(t *testing.T, args ...string) (int, verifyReport, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runVerify(append([]string{"--json"}, args...), &out, &errb)
	var reps []verifyReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("exit %d, %v: %s %s", code, err, out.String(), errb.String())
	}
	return code, reps[0], out.String()
}

func hasCode(r verifyReport, code string) bool {
	for _, f := range r.Findings {
		if f.Code == code {
			return true
		}
	}
	return false
}

// pecctl verify --index runs the reception point's index checks (pec-spec.md §7.2 steps 2
// and 4), --crl the revocation check.
func TestVerifyIndexAndCRL(t *testing.T) {
	s := newTrustSetup(t)
	code, r, out := verifyJSON(t, "--ca", s.ca, "--index", s.index(t, []*x509.Certificate{s.cert}, "pec-b.test"), s.msg)
	if code != 0 || !r.Conforms || r.Provider == nil || r.Provider.MailReceipt != "ricevute@pec-b.test" || len(r.Findings) != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if len(r.NotChecked) != 1 || !strings.HasPrefix(r.NotChecked[0], "revocation") {
		t.Errorf("not checked: %q", r.NotChecked)
	}
	// The From domain is not managed by the signer's provider.
	code, r, out = verifyJSON(t, "--ca", s.ca, "--index", s.index(t, []*x509.Certificate{s.cert}, "pec-c.test"), s.msg)
	if code != 1 || !hasCode(r, "from-domain-unmanaged") {
		t.Errorf("domain not managed: exit %d: %s", code, out)
	}
	// The signer is not in the index.
	other := hsmtest.NewCA(t).ProviderCert(t, "Provider B S.p.A.", "posta-certificata@pec-b.test", s.cert.PublicKey, s.cert.NotBefore, s.cert.NotAfter)
	code, r, out = verifyJSON(t, "--ca", s.ca, "--index", s.index(t, []*x509.Certificate{other}, "pec-b.test"), s.msg)
	if code != 1 || !hasCode(r, "signer-unlisted") || r.Provider != nil {
		t.Errorf("unlisted: exit %d: %s", code, out)
	}
	// Revoked by a CRL file.
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().AddDate(0, 0, 7),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: s.cert.SerialNumber, RevocationTime: time.Now().Add(-2 * time.Hour), ReasonCode: 1}},
	}, s.caCert, s.caKey)
	if err != nil {
		t.Fatal(err)
	}
	idx := s.index(t, []*x509.Certificate{s.cert}, "pec-b.test")
	code, r, out = verifyJSON(t, "--ca", s.ca, "--index", idx, "--crl", s.write(t, "ca.crl", crl), s.msg)
	if code != 1 || !hasCode(r, "revoked") || len(r.NotChecked) != 0 {
		t.Errorf("revoked: exit %d: %s", code, out)
	}
	// A CRL that cannot be fetched: the status is unknown.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	code, r, out = verifyJSON(t, "--ca", s.ca, "--index", idx, "--crl", srv.URL+"/ca.crl", s.msg)
	if code != 1 || !hasCode(r, "revocation-unknown") {
		t.Errorf("CRL unreachable: exit %d: %s", code, out)
	}
}

// Without an index the index checks are skipped, and the report says so.
func TestVerifyNotCheckedNote(t *testing.T) {
	s := newTrustSetup(t)
	var out, errb bytes.Buffer
	if code := runVerify([]string{"--ca", s.ca, s.msg, s.msg}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if n := strings.Count(out.String(), "not checked: providers index"); n != 1 {
		t.Errorf("note printed %d times:\n%s", n, out.String())
	}
	out.Reset()
	if code := runVerify([]string{s.msg}, &out, &errb); code != 0 || !strings.Contains(out.String(), "not checked: chain: no trust anchors") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
}

func TestVerifyTrustUsage(t *testing.T) {
	s := newTrustSetup(t)
	for _, args := range [][]string{
		{"--index", filepath.Join(s.dir, "missing.ldif"), s.msg},
		{"--index", s.index(t, []*x509.Certificate{s.cert}, "pec-b.test"), "-config", "pec.yaml", s.msg},
		{"--crl", "ldap://ca.example/cn=crl", s.msg},
		{"--crl", filepath.Join(s.dir, "missing.crl"), s.msg},
	} {
		var out, errb bytes.Buffer
		if code := runVerify(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// The real corpus with an index of its own signer certificates: every message is signed by a
// listed provider managing its domains.
func TestVerifyRealCorpusWithIndex(t *testing.T) {
	good, _ := realFiles(t)
	certs := map[string][]*x509.Certificate{}
	for _, f := range good {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := pec.Classify(raw, pec.ClassifyOptions{})
		p := filepath.Base(f)[:5]
		certs[p] = append(certs[p], c.Signer)
	}
	aruba, err := igpec.NewRecord("Aruba PEC S.p.A.", "", "ricevute@pec.aruba.it", certs["aruba"], "pec.aruba.it", "pec.it")
	if err != nil {
		t.Fatal(err)
	}
	sogei, err := igpec.NewRecord("Sogei S.p.A.", "", "ricevute@pcert.sogei.it", certs["sogei"], "pcert.sogei.it", "pec.fatturapa.it")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := igpec.WriteLDIF(&b, []*igpec.Record{aruba, sogei}); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Join(t.TempDir(), "index.ldif")
	if err := os.WriteFile(idx, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--json", "--index", idx}
	for _, ca := range realCAs {
		args = append(args, "--ca", ca)
	}
	var out, errb bytes.Buffer
	if code := runVerify(append(args, good...), &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	var reps []verifyReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if r.Provider == nil || r.ChainTo == "" || !r.Conforms {
			t.Errorf("%s: %+v", r.File, r)
		}
	}
}

// pecctl verify reports the content flags an access point set on a busta (issue 16 item 5).
func TestVerifyReportsContentFlags(t *testing.T) {
	dir := t.TempDir()
	msg, ca := filepath.Join(dir, "busta.eml"), filepath.Join(dir, "ca.pem")
	if code := runSample([]string{"busta", "-o", msg, "--ca-out", ca}, io.Discard, os.Stderr); code != 0 {
		t.Fatal("sample busta failed")
	}
	raw, _ := os.ReadFile(msg)
	os.WriteFile(msg, append([]byte("X-PEC-Macro: presente\r\nX-PEC-Non-Verificato: archivio-protetto\r\n"), raw...), 0o600)
	var out bytes.Buffer
	if code := runVerify([]string{"--json", "--ca", ca, msg}, &out, os.Stderr); code != 0 {
		t.Fatalf("verify: exit %d\n%s", code, out.String())
	}
	var reps []verifyReport
	if err := json.Unmarshal(out.Bytes(), &reps); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(reps[0].ContentFlags, "|"); got != "X-PEC-Macro: presente|X-PEC-Non-Verificato: archivio-protetto" {
		t.Errorf("content flags %q", got)
	}
	out.Reset()
	runVerify([]string{"--ca", ca, msg}, &out, os.Stderr)
	if !strings.Contains(out.String(), "content flag X-PEC-Macro: presente") {
		t.Errorf("human report:\n%s", out.String())
	}
}
