package inspect

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func newInspector(t testing.TB, p Policy, l Limits) *Inspector {
	t.Helper()
	in, err := New(p, l)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func inspectDefault(t testing.TB, msg []byte) Report {
	t.Helper()
	return newInspector(t, DefaultPolicy(), Limits{}).Inspect(msg)
}

// only asserts the report has exactly one finding, with the code and path.
func only(t *testing.T, r Report, code Code, path string) Finding {
	t.Helper()
	if len(r.Findings) != 1 {
		t.Fatalf("want one finding %s at %q, got %+v", code, path, r.Findings)
	}
	f := r.Findings[0]
	if f.Code != code || f.Path != path {
		t.Fatalf("want %s at %q, got %+v", code, path, f)
	}
	return f
}

func TestRenamedExecutable(t *testing.T) {
	r := inspectDefault(t, message(att{name: "setup.txt", ctype: "text/plain", data: pe()}))
	f := only(t, r, CodeForbidden, "setup.txt")
	if r.Verdict != Refuse || f.Type != TypePE || f.Ext != "" || !f.Refuses {
		t.Fatalf("%v %+v", r.Verdict, f)
	}
	if got, want := r.Reason(), "allegato non consentito: setup.txt (eseguibile Windows)"; got != want {
		t.Fatalf("Reason() = %q, want %q", got, want)
	}
	if r.Headers() != nil || r.Notes() != nil {
		t.Fatal("a refused message gets no header and no note")
	}
}

func TestExecutableInZip(t *testing.T) {
	z := zipOf(t, zfile{name: "leggimi.txt", data: []byte("ciao")}, zfile{name: "setup.txt", data: pe()})
	r := inspectDefault(t, message(att{name: "documenti.zip", data: z}))
	only(t, r, CodeForbidden, "documenti.zip > setup.txt")
	if got, want := r.Reason(), "allegato non consentito: documenti.zip > setup.txt (eseguibile Windows)"; got != want {
		t.Fatalf("Reason() = %q, want %q", got, want)
	}
}

func TestExecutableInZipInForwardedMessage(t *testing.T) {
	z := zipOf(t, zfile{name: "setup.txt", data: pe()})
	inner := message(att{name: "documenti.zip", data: z})
	r := inspectDefault(t, message(rfc822("inoltro.eml", inner)))
	only(t, r, CodeForbidden, "inoltro.eml > documenti.zip > setup.txt")

	// The same .eml attached as a file, not as message/rfc822.
	r = inspectDefault(t, message(att{name: "inoltro.eml", data: inner}))
	only(t, r, CodeForbidden, "inoltro.eml > documenti.zip > setup.txt")

	// A PEC busta forwarded: multipart/signed, postacert.eml inside.
	r = inspectDefault(t, message(rfc822("busta.eml", busta(inner))))
	only(t, r, CodeForbidden, "busta.eml > postacert.eml > documenti.zip > setup.txt")

	// The access point inspecting a busta itself (e.g. pecctl verify).
	r = inspectDefault(t, busta(inner))
	only(t, r, CodeForbidden, "postacert.eml > documenti.zip > setup.txt")
}

func TestForbiddenByName(t *testing.T) {
	for _, tc := range []struct{ name, ext, reason string }{
		{"setup.exe", "exe", "allegato non consentito: setup.exe (estensione .exe)"},
		{"FATTURA.PDF.EXE", "exe", "allegato non consentito: FATTURA.PDF.EXE (estensione .PDF.EXE)"},
		{"fattura.pdf.exe", "exe", "allegato non consentito: fattura.pdf.exe (estensione .pdf.exe)"},
		{"script.JS", "js", ""},
		{"setup.exe. . ", "exe", ""},
		{"setup.exe\x00.txt", "exe", ""},
		{"setup.exe.p7m", "exe", ""},
		{"C:\\temp\\run.bat", "bat", ""},
		{"disco.vhdx", "vhdx", ""},
		{"=?utf-8?q?fattura=2Evbs?=", "vbs", ""},
		{"=?x-unknown?q?fattura.scr?=", "scr", ""},
	} {
		r := inspectDefault(t, message(att{name: tc.name, data: []byte("hello")}))
		if len(r.Findings) != 1 || r.Findings[0].Ext != tc.ext || r.Verdict != Refuse {
			t.Errorf("%q: %v %+v", tc.name, r.Verdict, r.Findings)
			continue
		}
		if tc.reason != "" && r.Reason() != tc.reason {
			t.Errorf("%q: Reason() = %q, want %q", tc.name, r.Reason(), tc.reason)
		}
	}
	for _, name := range []string{"relazione.pdf", "www.comune.it.txt", "foto.jpg", "exe", "setup.exe.zip.txt"} {
		if r := inspectDefault(t, message(att{name: name, data: []byte("hello")})); r.Verdict != Clean {
			t.Errorf("%q: %v %+v", name, r.Verdict, r.Findings)
		}
	}
}

func TestNamesDiffer(t *testing.T) {
	// Content-Type name and Content-Disposition filename disagree: both are checked.
	msg := []byte("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: application/octet-stream; name=\"run.vbs\"\r\nContent-Disposition: attachment; filename=\"nota.txt\"\r\n\r\n" +
		"hello\r\n--b--\r\n")
	r := inspectDefault(t, msg)
	if r.Verdict != Refuse || r.Findings[0].Ext != "vbs" {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
}

func TestMacros(t *testing.T) {
	r := inspectDefault(t, message(att{name: "relazione.docm", data: docx(t, true)}))
	f := only(t, r, CodeMacro, "relazione.docm")
	if r.Verdict != FlagMacro || f.Refuses || f.Reason != "allegato con macro: relazione.docm (macro VBA)" {
		t.Fatalf("%v %+v", r.Verdict, f)
	}
	hs := r.Headers()
	if len(hs) != 1 || hs[0] != (Header{"X-PEC-Macro", "presente"}) {
		t.Fatalf("Headers() = %v", hs)
	}
	if ns := r.Notes(); len(ns) != 1 || ns[0] != NoteMacro {
		t.Fatalf("Notes() = %v", ns)
	}

	// An xlsm whose VBA part has another name is still found through [Content_Types].xml.
	x := zipOf(t,
		zfile{name: "[Content_Types].xml", data: []byte(`<Types><Override PartName="/xl/p.bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>`)},
		zfile{name: "xl/workbook.xml", data: []byte("<workbook/>")},
		zfile{name: "xl/p.bin", data: cfbOf(nil, cfbEntry{"VBA", cfbStorage, nil})})
	r = inspectDefault(t, message(att{name: "conti.xlsm", data: x}))
	if r.Verdict != FlagMacro || len(r.Findings) != 1 || r.Findings[0].Path != "conti.xlsm" {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}

	// Excel 4.0 macro sheets.
	x = zipOf(t, zfile{name: "[Content_Types].xml", data: []byte("<Types/>")}, zfile{name: "xl/macrosheets/sheet1.xml", data: []byte("<xm/>")})
	if r = inspectDefault(t, message(att{name: "conti.xlsx", data: x})); r.Verdict != FlagMacro {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}

	// Policy: refuse macros.
	p := DefaultPolicy()
	p.RefuseMacros = true
	r = newInspector(t, p, Limits{}).Inspect(message(att{name: "relazione.docm", data: docx(t, true)}))
	if r.Verdict != Refuse || r.Reason() != "allegato con macro: relazione.docm (macro VBA)" {
		t.Fatalf("%v %q", r.Verdict, r.Reason())
	}
}

func TestEncryptedZip(t *testing.T) {
	z := zipOf(t, zfile{name: "bilancio.pdf", data: []byte("ciphertext"), enc: true}, zfile{name: "nota.txt", data: []byte("ciao")})
	r := inspectDefault(t, message(att{name: "riservato.zip", data: z}))
	f := only(t, r, CodeUnchecked, "riservato.zip > bilancio.pdf")
	if r.Verdict != FlagUnchecked || f.Why != UncheckedProtected || f.Reason != "allegato non verificabile: riservato.zip > bilancio.pdf (archivio protetto da password)" {
		t.Fatalf("%v %+v", r.Verdict, f)
	}
	if hs := r.Headers(); len(hs) != 1 || hs[0] != (Header{"X-PEC-Non-Verificato", "archivio-protetto"}) {
		t.Fatalf("Headers() = %v", hs)
	}
	if ns := r.Notes(); len(ns) != 1 || ns[0] != NoteUnchecked {
		t.Fatalf("Notes() = %v", ns)
	}
	// The names of encrypted members are still checked.
	z = zipOf(t, zfile{name: "setup.exe", data: []byte("ciphertext"), enc: true})
	r = inspectDefault(t, message(att{name: "riservato.zip", data: z}))
	only(t, r, CodeForbidden, "riservato.zip > setup.exe")

	// Policy: refuse unchecked.
	p := DefaultPolicy()
	p.RefuseUnchecked = true
	z = zipOf(t, zfile{name: "bilancio.pdf", data: []byte("ciphertext"), enc: true})
	if r = newInspector(t, p, Limits{}).Inspect(message(att{name: "riservato.zip", data: z})); r.Verdict != Refuse {
		t.Fatal(r.Verdict)
	}
}

func TestBothFlags(t *testing.T) {
	z := zipOf(t, zfile{name: "a.pdf", data: []byte("x"), enc: true})
	r := inspectDefault(t, message(att{name: "r.zip", data: z}, att{name: "m.docm", data: docx(t, true)}))
	if r.Verdict != FlagMacro|FlagUnchecked || r.Verdict.String() != "flag-macro,flag-unchecked" || len(r.Headers()) != 2 || len(r.Notes()) != 2 {
		t.Fatalf("%v %+v", r.Verdict, r.Headers())
	}
}

func TestClean(t *testing.T) {
	r := inspectDefault(t, message(att{name: "relazione.pdf", ctype: "application/pdf", data: cleanPDF("")},
		att{name: "relazione.docx", data: docx(t, false)}, att{name: "foto.zip", data: zipOf(t, zfile{name: "a/b.txt", data: []byte("x")})}))
	if r.Verdict != Clean || len(r.Findings) != 0 || r.Headers() != nil || r.Notes() != nil || r.Reason() != "" {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	if r.Parts != 9 { // message, text, pdf, docx and its 3 members, zip and its member
		t.Fatalf("walked only %d parts", r.Parts)
	}
}

func TestMIMELeniency(t *testing.T) {
	// LF only, a junk header line before Content-Type, no close delimiter, QP with a bad escape.
	msg := []byte("From: a@b\nthis is junk\nContent-Type: multipart/mixed;\n boundary=\"xx\"\n\n--xx\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\nciao =ZZ mondo=\n\n--xx\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename*=UTF-8''setup%2Eexe\n\nMZ\n")
	r := inspectDefault(t, msg)
	only(t, r, CodeForbidden, "setup.exe")
	// Unnamed parts are named by part number.
	msg = []byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64enc(pe()) + "\r\n--b--\r\n")
	r = inspectDefault(t, msg)
	only(t, r, CodeForbidden, "parte 2")
	// A single-part message whose body is an executable.
	r = inspectDefault(t, []byte("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"+b64enc(pe())))
	only(t, r, CodeForbidden, "corpo del messaggio")
	// Names with control and bidi characters are cleaned for the report.
	r = inspectDefault(t, message(att{name: "fattura\u202Efdp.exe", data: []byte("x")}))
	only(t, r, CodeForbidden, "fattura?fdp.exe")
}

func TestBase64Decoder(t *testing.T) {
	for _, data := range [][]byte{nil, {1}, {1, 2}, {1, 2, 3}, {1, 2, 3, 4}, bytes.Repeat([]byte{0xfb, 0xff, 0x00}, 1000)} {
		enc := b64enc(data)
		for _, bufSize := range []int{1, 2, 3, 4, 7, 4096} {
			var out []byte
			d := &b64Reader{src: []byte(enc)}
			buf := make([]byte, bufSize)
			for {
				n, err := d.Read(buf)
				out = append(out, buf[:n]...)
				if err != nil {
					break
				}
			}
			if !bytes.Equal(out, data) {
				t.Fatalf("len %d buf %d: got %d bytes", len(data), bufSize, len(out))
			}
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Policy{}).Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Policy{ForbiddenExtensions: []string{".exe", "EXE", "ok"}, ForbiddenTypes: []Type{"pe", "nonsense"}}
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), `".exe"`) || !strings.Contains(err.Error(), `"EXE"`) || !strings.Contains(err.Error(), `"nonsense"`) {
		t.Fatalf("Validate() = %v", err)
	}
	if _, err := New(bad, Limits{}); err == nil {
		t.Fatal("New accepted a bad policy")
	}
	if _, err := New(Policy{}, Limits{MaxDepth: -1}); err == nil {
		t.Fatal("New accepted a negative limit")
	}
	if len(DefaultForbiddenExtensions) < 58 {
		t.Fatal("the published list has 58 extensions")
	}
	// The zero policy forbids nothing.
	if r := newInspector(t, Policy{}, Limits{}).Inspect(message(att{name: "setup.exe", data: pe()})); r.Verdict != Clean {
		t.Fatal(r.Verdict)
	}
}

func TestManyFindings(t *testing.T) {
	// 1000 forbidden members: the walk stops at the 101st finding, the message refused.
	var files []zfile
	for i := range 1000 {
		files = append(files, zfile{name: fmt.Sprintf("%04d.exe", i), data: []byte("x")})
	}
	r := inspectDefault(t, message(att{name: "tanti.zip", data: zipOf(t, files...)}))
	if r.Verdict != Refuse || !r.Truncated || len(r.Findings) != maxFindings+1 {
		t.Fatalf("%v truncated=%v %d findings", r.Verdict, r.Truncated, len(r.Findings))
	}
	if want := "allegato non consentito: tanti.zip > 0000.exe (estensione .exe) (e almeno altri 100 allegati)"; r.Reason() != want {
		t.Fatalf("Reason() = %q", r.Reason())
	}
	// 1000 encrypted members then one of another kind: flags only, the walk goes on and
	// keeps what the headers need.
	files = files[:0]
	for i := range 1000 {
		files = append(files, zfile{name: fmt.Sprintf("%04d.pdf", i), data: []byte("x"), enc: true})
	}
	files = append(files, zfile{name: "x.rar", data: []byte("Rar!\x1a\x07\x00")})
	r = inspectDefault(t, message(att{name: "tanti.zip", data: zipOf(t, files...)}))
	if r.Verdict != FlagUnchecked || r.Truncated || len(r.Findings) != maxFindings+1 {
		t.Fatalf("%v truncated=%v %d findings", r.Verdict, r.Truncated, len(r.Findings))
	}
	if hs := r.Headers(); hs[0].Value != "archivio-protetto, formato-non-supportato" {
		t.Fatalf("Headers() = %v", hs)
	}
}

func TestReasonCounts(t *testing.T) {
	r := inspectDefault(t, message(att{name: "a.exe", data: []byte("x")}, att{name: "b.exe", data: []byte("x")}, att{name: "c.exe", data: []byte("x")}))
	if got, want := r.Reason(), "allegato non consentito: a.exe (estensione .exe) (e altri 2 allegati)"; got != want {
		t.Fatalf("Reason() = %q", got)
	}
}
