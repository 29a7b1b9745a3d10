package inspect

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
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
	if r.Verdict != FlagMacro || r.Findings[0].Path != "conti.xlsm" {
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

func TestOLEMacros(t *testing.T) {
	doc := cfbOf(nil,
		cfbEntry{"WordDocument", cfbStream, make([]byte, 4200)},
		cfbEntry{"Macros", cfbStorage, nil},
		cfbEntry{"VBA", cfbStorage, nil},
		cfbEntry{"dir", cfbStream, []byte{1, 2, 3}},
		cfbEntry{"_VBA_PROJECT", cfbStream, []byte{0xcc, 0x61, 0xff, 0xff}},
	)
	r := inspectDefault(t, message(att{name: "lettera.doc", ctype: "application/msword", data: doc}))
	only(t, r, CodeMacro, "lettera.doc")
	if r.Verdict != FlagMacro {
		t.Fatal(r.Verdict)
	}
	// The same without the VBA storage is clean.
	doc = cfbOf(nil, cfbEntry{"WordDocument", cfbStream, make([]byte, 4200)}, cfbEntry{"1Table", cfbStream, make([]byte, 100)})
	if r = inspectDefault(t, message(att{name: "lettera.doc", data: doc})); r.Verdict != Clean {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
}

func TestOLEEncryptedAndInstaller(t *testing.T) {
	enc := cfbOf(nil, cfbEntry{"EncryptionInfo", cfbStream, make([]byte, 200)}, cfbEntry{"EncryptedPackage", cfbStream, make([]byte, 5000)})
	r := inspectDefault(t, message(att{name: "bilancio.xlsx", data: enc}))
	f := only(t, r, CodeUnchecked, "bilancio.xlsx")
	if r.Verdict != FlagUnchecked || f.Why != UncheckedEncrypted {
		t.Fatalf("%v %+v", r.Verdict, f)
	}
	if hs := r.Headers(); len(hs) != 1 || hs[0] != (Header{"X-PEC-Non-Verificato", "file-cifrato"}) {
		t.Fatalf("Headers() = %v", hs)
	}

	// Word 97-2003 with a password: FibBase.fEncrypted, the stream in the mini stream.
	fib := make([]byte, 1000)
	fib[11] = 0x01
	r = inspectDefault(t, message(att{name: "lettera.doc", data: cfbOf(nil, cfbEntry{"WordDocument", cfbStream, fib})}))
	only(t, r, CodeUnchecked, "lettera.doc")

	// Excel 97-2003 with a password: FILEPASS after BOF.
	wb := []byte{0x09, 0x08, 0x02, 0x00, 0x00, 0x06, 0x2f, 0x00, 0x02, 0x00, 0x00, 0x00}
	r = inspectDefault(t, message(att{name: "conti.xls", data: cfbOf(nil, cfbEntry{"Workbook", cfbStream, wb})}))
	only(t, r, CodeUnchecked, "conti.xls")

	msi := cfbOf(msiCLSIDs[0], cfbEntry{"\u4840\u3f3f", cfbStream, make([]byte, 10)})
	r = inspectDefault(t, message(att{name: "aggiornamento.dat", data: msi}))
	if f := only(t, r, CodeForbidden, "aggiornamento.dat"); f.Type != TypeMSI {
		t.Fatalf("%+v", f)
	}
}

func TestOLEPackageObject(t *testing.T) {
	doc := cfbOf(nil,
		cfbEntry{"WordDocument", cfbStream, make([]byte, 4200)},
		cfbEntry{"ObjectPool", cfbStorage, nil},
		cfbEntry{"\x01Ole10Native", cfbStream, ole10Package("fattura.pdf", pe())},
	)
	r := inspectDefault(t, message(att{name: "lettera.doc", data: doc}))
	if f := only(t, r, CodeForbidden, "lettera.doc > fattura.pdf"); f.Type != TypePE {
		t.Fatalf("%+v", f)
	}
	// Embedded in a docx.
	d := zipOf(t, zfile{name: "[Content_Types].xml", data: []byte("<Types/>")},
		zfile{name: "word/embeddings/oleObject1.bin", data: cfbOf(nil, cfbEntry{"\x01Ole10Native", cfbStream, ole10Package("x.exe", []byte("text"))})})
	r = inspectDefault(t, message(att{name: "lettera.docx", data: d}))
	if f := only(t, r, CodeForbidden, "lettera.docx > word/embeddings/oleObject1.bin > x.exe"); f.Ext != "exe" {
		t.Fatalf("%+v", f)
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

func TestPDF(t *testing.T) {
	for _, tc := range []struct {
		name string
		pdf  []byte
		code Code
	}{
		{"openaction", cleanPDF("/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"), CodeActive},
		{"escaped", cleanPDF("/OpenAction << /S /J#61vaScript /J#53 5 0 R >>"), CodeActive},
		{"launch", cleanPDF("/OpenAction << /S /Launch /F (cmd.exe) >>"), CodeActive},
		{"encrypted", bytes.Replace(cleanPDF(""), []byte("/Root 1 0 R"), []byte("/Root 1 0 R /Encrypt 9 0 R"), 1), CodeUnchecked},
		{"objstm", append(cleanPDF(""), []byte("5 0 obj\n<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode >>\nstream\n"+
			string(zlibOf([]byte("6 0 << /S /JavaScript /JS (x) >>")))+"\nendstream\nendobj\n")...), CodeActive},
	} {
		r := inspectDefault(t, message(att{name: "doc.pdf", data: tc.pdf}))
		if len(r.Findings) != 1 || r.Findings[0].Code != tc.code {
			t.Errorf("%s: %+v", tc.name, r.Findings)
		}
	}
	// An embedded executable.
	p := append(cleanPDF(""), []byte("5 0 obj\n<< /Type /EmbeddedFile /Filter /FlateDecode >>\nstream\n"+string(zlibOf(pe()))+"\nendstream\nendobj\n")...)
	r := inspectDefault(t, message(att{name: "doc.pdf", data: p}))
	only(t, r, CodeForbidden, "doc.pdf > file incorporato 1")
}

func TestSignedFile(t *testing.T) {
	r := inspectDefault(t, message(att{name: "fattura.pdf.p7m", ctype: "application/pkcs7-mime", data: signedData(pe())}))
	if f := only(t, r, CodeForbidden, "fattura.pdf.p7m > fattura.pdf"); f.Type != TypePE {
		t.Fatalf("%+v", f)
	}
	// Base64 inside the base64: .p7m files saved by some signing tools.
	b64 := []byte("-----BEGIN PKCS7-----\n" + b64enc(signedData(pe())) + "\n-----END PKCS7-----\n")
	r = inspectDefault(t, message(att{name: "fattura.pdf.p7m", data: b64}))
	only(t, r, CodeForbidden, "fattura.pdf.p7m > fattura.pdf")
	// An attached .p7m labelled as S/MIME signed-data is still a signed file.
	r = inspectDefault(t, message(att{name: "fattura.pdf.p7m", ctype: "application/pkcs7-mime; smime-type=signed-data", data: signedData(pe())}))
	only(t, r, CodeForbidden, "fattura.pdf.p7m > fattura.pdf")
	// An opaque-signed S/MIME message: its content is a MIME entity.
	ent := []byte("Content-Type: application/octet-stream; name=\"a.bat\"\r\n\r\necho\r\n")
	r = inspectDefault(t, message(att{name: "smime.p7m", ctype: "application/pkcs7-mime; smime-type=signed-data", data: signedData(ent)}))
	only(t, r, CodeForbidden, "smime.p7m > a.bat")
	// An enveloped (encrypted) one.
	env := der(0x30, der(0x06, oidEnvelopedData), der(0xa0, der(0x30)))
	r = inspectDefault(t, message(att{name: "smime.p7m", ctype: "application/pkcs7-mime; smime-type=enveloped-data", data: env}))
	if f := only(t, r, CodeUnchecked, "smime.p7m"); f.Why != UncheckedEncrypted {
		t.Fatalf("%+v", f)
	}
	// A clean signed document, and a detached signature.
	if r = inspectDefault(t, message(att{name: "fattura.xml.p7m", data: signedData([]byte("<FatturaElettronica/>"))}, att{name: "firma.p7s", data: signedData(nil)})); r.Verdict != Clean {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
}

func TestTarGzip(t *testing.T) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range []struct {
		name string
		data []byte
	}{{"docs/readme.txt", []byte("ciao")}, {"docs/tool.bin", pe()}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg})
		tw.Write(f.data)
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	r := inspectDefault(t, message(att{name: "archivio.tgz", data: gz.Bytes()}))
	only(t, r, CodeForbidden, "archivio.tgz > archivio.tar > docs/tool.bin")
}

func TestUnsupportedArchive(t *testing.T) {
	r := inspectDefault(t, message(att{name: "archivio.rar", data: []byte("Rar!\x1a\x07\x01\x00rest")}))
	if f := only(t, r, CodeUnchecked, "archivio.rar"); f.Why != UncheckedUnsupported || r.Verdict != FlagUnchecked {
		t.Fatalf("%v %+v", r.Verdict, f)
	}
}

func TestSniff(t *testing.T) {
	iso := make([]byte, 0x9000)
	copy(iso[0x8001:], "CD001")
	fat := make([]byte, 512)
	copy(fat[0x36:], "FAT16   ")
	fat[510], fat[511] = 0x55, 0xaa
	lnk := append([]byte{0x4c, 0, 0, 0}, clsidLNK...)
	vhd := append(make([]byte, 4096), append([]byte("conectix"), make([]byte, 504)...)...)
	for _, tc := range []struct {
		data []byte
		want Type
	}{
		{pe(), TypePE},
		{[]byte("\x7fELF\x02\x01\x01"), TypeELF},
		{[]byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}, TypeMachO},
		{[]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2, 1, 0, 0, 7}, TypeMachO},
		{[]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52}, TypeJavaClass},
		{[]byte("#!/bin/sh\nrm -rf ~\n"), TypeScript},
		{[]byte("#! /usr/bin/env python3\n"), TypeScript},
		{[]byte("@ECHO OFF\r\ndel *.*\r\n"), TypeScript},
		{[]byte("Windows Registry Editor Version 5.00\r\n"), TypeRegistry},
		{[]byte("<html><head><HTA:APPLICATION ID=x></head></html>"), TypeHTA},
		{lnk, TypeLNK},
		{iso, TypeISO},
		{fat, TypeDiskImage},
		{[]byte("vhdxfile\x00\x00"), TypeVHDX},
		{cfbOf(msiCLSIDs[1]), TypeOLE2},
		{[]byte("%PDF-1.4\n"), TypePDF},
		{[]byte("MZ Rossi, relazione"), ""},
		{[]byte("#!important note"), ""},
		{[]byte("Gentile cliente,\n"), ""},
	} {
		if got := sniff(tc.data); got != tc.want {
			t.Errorf("sniff(%q) = %q, want %q", tc.data[:min(len(tc.data), 12)], got, tc.want)
		}
	}
	if got := sniffTail(vhd); got != TypeVHD {
		t.Errorf("sniffTail(vhd) = %q", got)
	}
	// Renamed: a VHD found only by its footer, after the whole file was streamed.
	r := inspectDefault(t, message(att{name: "dati.bin", data: append(make([]byte, 200000), vhd...)}))
	only(t, r, CodeForbidden, "dati.bin")
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

// TestLinearTime feeds shapes that would make a careless parser quadratic.
func TestLinearTime(t *testing.T) {
	in := newInspector(t, DefaultPolicy(), Limits{})
	var b bytes.Buffer
	for range 20000 { // repeated fields, each with continuation lines
		b.WriteString("Content-Type: text/plain;\r\n")
		for range 10 {
			b.WriteString(" x=y;\r\n")
		}
	}
	b.WriteString("\r\nbody\r\n")
	var ps bytes.Buffer // many parts, many almost-delimiters
	ps.WriteString("Content-Type: multipart/mixed; boundary=bb\r\n\r\n")
	for range 50000 {
		ps.WriteString("--bb\r\n\r\n--bbx\r\n x--bb\r\n")
	}
	var pdf bytes.Buffer // many streams and names
	pdf.WriteString("%PDF-1.7\n")
	for range 100000 {
		pdf.WriteString("1 0 obj <</A/B>>stream\nendstream endobj /X#41 ")
	}
	for _, msg := range [][]byte{b.Bytes(), ps.Bytes(), message(att{name: "a.pdf", data: pdf.Bytes()})} {
		start := time.Now()
		in.Inspect(msg)
		t.Logf("%d bytes: %v", len(msg), time.Since(start))
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%d bytes took %v", len(msg), d)
		}
	}
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

func TestZipBombDeclared(t *testing.T) {
	// 16 GiB declared: refused before anything is expanded.
	z := rawZip("zeros.bin", bombDeflate(4), 0, 0xffffffff, 4)
	start := time.Now()
	r := inspectDefault(t, message(att{name: "bomba.zip", data: z}))
	only(t, r, CodeBomb, "bomba.zip")
	if r.Expanded != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("expanded %d in %v", r.Expanded, time.Since(start))
	}
	if want := "messaggio non consentito: bomba.zip (archivio che estratto supera 256 MB)"; r.Reason() != want {
		t.Fatalf("Reason() = %q", r.Reason())
	}
}

func TestZipBombLying(t *testing.T) {
	// A 13 KB zip whose 400 overlapping members declare 10 bytes each and expand to
	// 8 MiB each: 3.2 GiB in all, stopped at MaxExpanded on the bytes actually produced.
	z := rawZip("zeros.bin", bombDeflate(8), 0, 10, 400)
	if len(z) > 32<<10 {
		t.Fatalf("bomb is %d bytes", len(z))
	}
	msg := message(att{name: "bomba.zip", data: z})
	in := newInspector(t, DefaultPolicy(), Limits{})
	var r Report
	alloc := allocated(func() { r = in.Inspect(msg) })
	f := only(t, r, CodeBomb, "bomba.zip > 32-zeros.bin") // 32 members of 8 MiB fill the 256 MiB
	if r.Verdict != Refuse || r.Expanded != DefaultMaxExpanded+1 {
		t.Fatalf("%v %+v expanded %d", r.Verdict, f, r.Expanded)
	}
	if alloc > 8<<20 {
		t.Fatalf("allocated %d bytes to refuse a bomb", alloc)
	}
}

func TestNestedZipBomb(t *testing.T) {
	// A zip of zips (42.zip-like): 10 copies of a zip with 10 copies of a member that
	// honestly declares 64 MiB. Each zip alone fits the budget; together they do not:
	// nested archives draw on the same MaxExpanded.
	leaf := rawZip("zeros.bin", bombDeflate(64), 0, 64<<20, 1)
	var files []zfile
	for i := range 10 {
		files = append(files, zfile{name: string(rune('a'+i)) + ".zip", data: leaf})
	}
	mid := zipOf(t, files...)
	files = nil
	for i := range 10 {
		files = append(files, zfile{name: string(rune('a'+i)) + ".zip", data: mid})
	}
	top := zipOf(t, files...)
	in := newInspector(t, DefaultPolicy(), Limits{})
	msg := message(att{name: "42.zip", data: top})
	var r Report
	alloc := allocated(func() { r = in.Inspect(msg) })
	if r.Verdict != Refuse || len(r.Findings) != 1 || r.Findings[0].Code != CodeBomb {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	if r.Expanded < 3*64<<20 || r.Expanded > DefaultMaxExpanded+1 {
		t.Fatalf("expanded %d", r.Expanded)
	}
	if alloc > 16<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
}

func TestOpenDocument(t *testing.T) {
	odt := func(extra ...zfile) []byte {
		return zipOf(t, append([]zfile{{name: "mimetype", data: []byte("application/vnd.oasis.opendocument.text")},
			{name: "content.xml", data: []byte("<office:document-content/>")},
			{name: "Basic/script-lc.xml", data: []byte("<library:libraries/>")},
			{name: "META-INF/manifest.xml", data: []byte("<manifest:manifest/>")}}, extra...)...)
	}
	if r := inspectDefault(t, message(att{name: "a.odt", data: odt()})); r.Verdict != Clean {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	r := inspectDefault(t, message(att{name: "a.odt", data: odt(zfile{name: "Basic/Standard/Module1.xml", data: []byte("<script:module/>")})}))
	only(t, r, CodeMacro, "a.odt")
	enc := zipOf(t, zfile{name: "mimetype", data: []byte("application/vnd.oasis.opendocument.text")},
		zfile{name: "META-INF/manifest.xml", data: []byte("<manifest:file-entry><manifest:encryption-data/></manifest:file-entry>")})
	r = inspectDefault(t, message(att{name: "a.odt", data: enc}))
	only(t, r, CodeUnchecked, "a.odt")
}

func TestGzip(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("#!/bin/sh\necho\n"))
	zw.Close()
	r := inspectDefault(t, message(att{name: "note.txt.gz", data: gz.Bytes()}))
	if f := only(t, r, CodeForbidden, "note.txt.gz > note.txt"); f.Type != TypeScript {
		t.Fatalf("%+v", f)
	}
	// The name inside the gzip header counts too.
	gz.Reset()
	zw = gzip.NewWriter(&gz)
	zw.Name = "run.cmd"
	zw.Write([]byte("dir"))
	zw.Close()
	r = inspectDefault(t, message(att{name: "dati.gz", data: gz.Bytes()}))
	only(t, r, CodeForbidden, "dati.gz > run.cmd")
}

func TestTooDeep(t *testing.T) {
	// 100 zips, each inside the next.
	z := zipOf(t, zfile{name: "fondo.txt", data: []byte("ciao")})
	for range 100 {
		z = zipOf(t, zfile{name: "dentro.zip", data: z})
	}
	in := newInspector(t, DefaultPolicy(), Limits{})
	msg := message(att{name: "matrioska.zip", data: z})
	var r Report
	alloc := allocated(func() { r = in.Inspect(msg) })
	if r.Verdict != Refuse || len(r.Findings) != 1 || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	if n := len([]rune(r.Reason())); n > 320 || !strings.Contains(r.Reason(), " … ") {
		t.Fatalf("Reason() has %d runes: %q", n, r.Reason())
	}
	if alloc > 32<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
	// 100 messages, each forwarded in the next.
	m := message()
	for range 100 {
		m = message(rfc822("inoltro.eml", m))
	}
	if r = in.Inspect(m); r.Verdict != Refuse || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	// 100 000 nested multiparts.
	var b bytes.Buffer
	for i := range 100000 {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=a%d\r\n\r\n--a%d\r\n", i, i)
	}
	if r = in.Inspect(b.Bytes()); r.Verdict != Refuse || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
}

func TestTooMany(t *testing.T) {
	in := newInspector(t, DefaultPolicy(), Limits{MaxParts: 100})
	var files []zfile
	for range 200 {
		files = append(files, zfile{name: "a.txt", data: []byte("x")})
	}
	r := in.Inspect(message(att{name: "tanti.zip", data: zipOf(t, files...)}))
	if r.Verdict != Refuse || r.Findings[0].Code != CodeTooMany {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=a\r\n\r\n")
	for range 1000 {
		b.WriteString("--a\r\n\r\nx\r\n")
	}
	if r = in.Inspect(b.Bytes()); r.Verdict != Refuse || r.Findings[0].Code != CodeTooMany || r.Parts != 101 {
		t.Fatalf("%v %d %+v", r.Verdict, r.Parts, r.Findings)
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

func TestReasonCounts(t *testing.T) {
	r := inspectDefault(t, message(att{name: "a.exe", data: []byte("x")}, att{name: "b.exe", data: []byte("x")}, att{name: "c.exe", data: []byte("x")}))
	if got, want := r.Reason(), "allegato non consentito: a.exe (estensione .exe) (e altri 2 allegati)"; got != want {
		t.Fatalf("Reason() = %q", got)
	}
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
