package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
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
