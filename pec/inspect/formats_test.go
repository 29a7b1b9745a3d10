package inspect

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
)

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
