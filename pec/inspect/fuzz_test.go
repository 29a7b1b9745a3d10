package inspect

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode"
)

// fuzzLimits are small, so the fuzzer reaches them.
var fuzzLimits = Limits{MaxDepth: 8, MaxParts: 200, MaxExpanded: 4 << 20}

// checkReport asserts what holds for any input: limits respected, a consistent verdict,
// one-line reasons.
func checkReport(t *testing.T, r Report, l Limits) {
	t.Helper()
	if r.Parts > l.MaxParts+1 {
		t.Fatalf("parts %d > limit %d", r.Parts, l.MaxParts)
	}
	if r.Expanded > l.MaxExpanded+1 {
		t.Fatalf("expanded %d > limit %d", r.Expanded, l.MaxExpanded)
	}
	if len(r.Findings) > maxFindings+16 {
		t.Fatalf("%d findings", len(r.Findings))
	}
	refuse := false
	for _, f := range r.Findings {
		refuse = refuse || f.Refuses
		if f.Reason == "" || strings.IndexFunc(f.Reason, unicode.IsControl) >= 0 || strings.IndexFunc(f.Path, unicode.IsControl) >= 0 {
			t.Fatalf("bad reason or path: %+v", f)
		}
	}
	if refuse != (r.Verdict == Refuse) || refuse != (r.Reason() != "") {
		t.Fatalf("verdict %v, reason %q, findings %+v", r.Verdict, r.Reason(), r.Findings)
	}
	if r.Verdict == Clean && len(r.Findings) != 0 {
		t.Fatalf("clean with findings %+v", r.Findings)
	}
}

func FuzzInspect(f *testing.F) {
	z := zipOf(f, zfile{name: "setup.txt", data: pe()}, zfile{name: "a.pdf", data: []byte("x"), enc: true})
	for _, m := range [][]byte{
		message(att{name: "setup.txt", data: pe()}),
		message(att{name: "documenti.zip", data: z}),
		message(rfc822("inoltro.eml", busta(message(att{name: "documenti.zip", data: z})))),
		message(att{name: "relazione.docm", data: docx(f, true)}),
		message(att{name: "relazione.pdf", data: cleanPDF("/OpenAction << /S /JavaScript /JS (x) >>")}),
		message(att{name: "fattura.pdf.p7m", data: signedData([]byte("<Fattura/>"))}),
		[]byte("Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Transfer-Encoding: quoted-printable\n\n=4D=5A\n--a--\n"),
		[]byte("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nQ29udGVudC1UeXBlOiB0ZXh0L3BsYWluDQoNCmNpYW8=\r\n"),
	} {
		f.Add(m)
	}
	in, err := New(DefaultPolicy(), fuzzLimits)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		defer watchdog()()
		checkReport(t, in.Inspect(msg), fuzzLimits)
	})
}

// watchdog crashes the fuzzing worker when one input takes too long: Go's fuzzer has no
// timeout of its own, and a crash makes it save the input.
func watchdog() func() bool {
	return time.AfterFunc(10*time.Second, func() { panic("inspect: input took more than 10s") }).Stop
}

// inspectFile inspects one file, as if it were an attachment named name.
func inspectFile(in *Inspector, name string, data []byte) Report {
	w := &walker{in: in}
	w.file(name, []string{name}, data, nil, 0, 0)
	return w.report()
}

func FuzzZip(f *testing.F) {
	f.Add(zipOf(f, zfile{name: "setup.txt", data: pe()}, zfile{name: "dir/", data: nil}))
	f.Add(zipOf(f, zfile{name: "a.pdf", data: []byte("secret"), enc: true}))
	f.Add(zipOf(f, zfile{name: "in.zip", data: zipOf(f, zfile{name: "x.exe", data: []byte("x")})}))
	f.Add(docx(f, true))
	f.Add(docx(f, false))
	f.Add(rawZip("zeros.bin", bombDeflate(1), 0, 10, 5))
	f.Add(zipOf(f, zfile{name: "mimetype", data: []byte("application/vnd.oasis.opendocument.text")}, zfile{name: "Basic/Standard/Module1.xml", data: []byte("<x/>")}))
	in, err := New(DefaultPolicy(), fuzzLimits)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog()()
		checkReport(t, inspectFile(in, "archivio.zip", data), fuzzLimits)
	})
}

// FuzzFile covers the other parsers of file content: OLE2, PDF, CMS, gzip and tar, chosen
// by the first byte of the input and fed the rest.
func FuzzFile(f *testing.F) {
	names := []string{"a.doc", "a.pdf", "a.pdf.p7m", "a.tgz", "a.bin"}
	seeds := [][]byte{
		cfbOf(nil, cfbEntry{"VBA", cfbStorage, nil}, cfbEntry{"WordDocument", cfbStream, make([]byte, 5000)}, cfbEntry{"\x01Ole10Native", cfbStream, ole10Package("x.exe", pe())}),
		append(cleanPDF("/AA << /JS 5 0 R >>"), []byte("5 0 obj\n<< /Type /ObjStm /Filter /FlateDecode >>\nstream\n"+string(zlibOf([]byte("<< /JS (x) >>")))+"\nendstream\nendobj\n")...),
		signedData(pe()),
		{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		append(make([]byte, 0x8001), "CD001"...),
	}
	for i, s := range seeds {
		f.Add(append([]byte{byte(i)}, s...))
	}
	in, err := New(DefaultPolicy(), fuzzLimits)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		defer watchdog()()
		checkReport(t, inspectFile(in, names[int(data[0])%len(names)], bytes.Clone(data[1:])), fuzzLimits)
	})
}
