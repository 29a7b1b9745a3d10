package igpec

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLDIF(t *testing.T) {
	// RFC 2849 features: version line, comments (one folded), folding inside a value and
	// inside an attribute name, base64 dn and values, an attribute option, changetype add,
	// several blank lines between records, CRLF line endings, and a last record with no
	// trailing newline.
	in := "version: 1\r\n" +
		"# a comment that is\r\n" +
		"  folded over two lines\r\n" +
		"dn: o=postacert\r\n" +
		"objectClass: top\r\n" +
		"o: postacert\r\n" +
		"\r\n\r\n" +
		"dn:: cHJvdmlkZXJOYW1lPUFjbWUgUy5wLkEuLG89cG9zdGFjZXJ0\r\n" + // providerName=Acme S.p.A.,o=postacert
		"changetype: add\r\n" +
		"providerName: Ac\r\n" +
		" me S.p.A.\r\n" +
		"managedDom\r\n" +
		" ains: pec.acme.example\r\n" +
		"description:: w6hjY28=\r\n" + // "ècco"
		"providerCertificate;binary:: AAEC\r\n" +
		"# comment inside a record\r\n" +
		"mailReceipt:   ricevute@pec.acme.example"
	es, err := ParseLDIF(strings.NewReader(in), LDIFOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 {
		t.Fatalf("got %d entries, want 2: %+v", len(es), es)
	}
	if es[0].DN != "o=postacert" || es[0].Line != 4 {
		t.Errorf("entry 0: dn %q line %d", es[0].DN, es[0].Line)
	}
	e := es[1]
	if e.DN != "providerName=Acme S.p.A.,o=postacert" || e.Line != 9 {
		t.Errorf("entry 1: dn %q line %d", e.DN, e.Line)
	}
	want := map[string]string{
		"providername":        "Acme S.p.A.",
		"manageddomains":      "pec.acme.example",
		"description":         "ècco",
		"providercertificate": "\x00\x01\x02",
		"mailreceipt":         "ricevute@pec.acme.example",
	}
	if len(e.Attrs) != len(want) {
		t.Errorf("got %d attributes, want %d: %+v", len(e.Attrs), len(want), e.Attrs)
	}
	for name, v := range want {
		got := e.Values(name)
		if len(got) != 1 || string(got[0]) != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
	}
	for _, a := range e.Attrs {
		if a.Name == "providercertificate" && (len(a.Options) != 1 || a.Options[0] != "binary") {
			t.Errorf("providerCertificate options = %v, want [binary]", a.Options)
		}
	}
}

func TestParseLDIFEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "version: 1\n", "# only a comment\n", "version: 1\n\n# c\n"} {
		es, err := ParseLDIF(strings.NewReader(in), LDIFOptions{})
		if err != nil || len(es) != 0 {
			t.Errorf("%q: got %v, %v; want no entries and no error", in, es, err)
		}
	}
}

func TestParseLDIFErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		msg      string
	}{
		{"no colon", "dn: o=x\nfoo bar\n", 2, "missing ':'"},
		{"bad base64", "dn: o=x\n\ndn: o=y\ncn:: !!!\n", 4, "bad base64"},
		{"continuation first", " folded\ndn: o=x\n", 1, "continuation"},
		{"modify", "dn: o=x\nchangetype: modify\nreplace: cn\n", 2, "changetype"},
		{"changetype late", "dn: o=x\ncn: a\nchangetype: add\n", 3, "changetype"},
		{"control", "dn: o=x\ncontrol: 1.2.3 true\n", 2, "control"},
		{"second dn", "dn: o=x\ncn: a\ndn: o=y\n", 3, "second dn"},
		{"no dn", "version: 1\n\ncn: a\n", 3, "does not start with dn"},
		{"version 2", "version: 2\ndn: o=x\n", 1, "version"},
		{"bad attribute", "dn: o=x\nc n: a\n", 2, "bad attribute description"},
		{"bad option", "dn: o=x\ncn;: a\n", 2, "bad attribute description"},
		{"url refused", "dn: o=x\ncn:< file:///etc/passwd\n", 2, "URL values are not allowed"},
		{"dn with option", "dn;binary: o=x\n", 1, "does not start with dn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLDIF(strings.NewReader(tt.in), LDIFOptions{})
			var le *LDIFError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want *LDIFError", err)
			}
			if le.Line != tt.line || !strings.Contains(le.Msg, tt.msg) {
				t.Errorf("err = %v, want line %d containing %q", err, tt.line, tt.msg)
			}
		})
	}
}

func TestParseLDIFFileURL(t *testing.T) {
	dir := t.TempDir()
	ldifDir := filepath.Join(dir, "index")
	if err := os.MkdirAll(filepath.Join(ldifDir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(ldifDir, "certs", "a.der"), "DER-A")
	write(filepath.Join(dir, "secret"), "SECRET")
	if err := os.Symlink(filepath.Join(dir, "secret"), filepath.Join(ldifDir, "link")); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(ldifDir, "certs", "a.der")
	ok := []string{"file:certs/a.der", "file://" + abs, "file://localhost" + abs}
	for _, u := range ok {
		es, err := ParseLDIF(strings.NewReader("dn: o=x\nproviderCertificate;binary:< "+u+"\n"), LDIFOptions{FileDir: ldifDir})
		if err != nil {
			t.Errorf("%s: %v", u, err)
			continue
		}
		if v := es[0].Values("providercertificate"); len(v) != 1 || string(v[0]) != "DER-A" {
			t.Errorf("%s: value %q", u, v)
		}
	}
	bad := map[string]string{
		"file:../secret":                         "outside",
		"file://" + filepath.Join(dir, "secret"): "outside",
		"file:link":                              "outside", // symlink leading out
		"file://otherhost/etc/passwd":            "remote host",
		"http://example.com/a.der":               "only file: URLs",
		"file:certs/missing.der":                 "cannot open",
	}
	for u, msg := range bad {
		_, err := ParseLDIF(strings.NewReader("dn: o=x\ncn:< "+u+"\n"), LDIFOptions{FileDir: ldifDir})
		var le *LDIFError
		if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(le.Msg, msg) {
			t.Errorf("%s: err = %v, want line 2 containing %q", u, err, msg)
		}
	}
}

func TestWriteLDIFRoundTrip(t *testing.T) {
	f := newFixture(t)
	r := f.record(t, "Acme S.p.A.", "pec.acme.example", "cert.acme.example")
	r.Description = "Servizi PEC è: base64"
	r.LDIFLocationURL = "https://acme.example/acme.ldif.p7m"
	u := f.record(t, "Acme S.p.A.", "test.acme.example")
	u.Unit = "test"
	u.DN = "providerUnit=test,providerName=Acme S.p.A.,o=postacert"
	out := ldifOf(t, r, u)
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) > foldWidth {
			t.Errorf("line longer than %d: %q", foldWidth, l)
		}
	}
	if !bytes.Contains(out, []byte("providerCertificate;binary:: ")) {
		t.Error("certificate not written as providerCertificate;binary")
	}
	s := Build(mustParse(t, out), "test", time.Now())
	if len(s.Rejected) != 0 || len(s.Records) != 2 {
		t.Fatalf("records %d, rejected %v", len(s.Records), s.Rejected)
	}
	for i, want := range []*Record{r, u} {
		if got := s.Records[i]; !sameRecord(got, want) || !got.HasCertificate(want.Certificates[0].Raw) {
			t.Errorf("record %d: got %+v, want %+v", i, got, want)
		}
	}
}
