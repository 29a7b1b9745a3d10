package inspect

// Builders of the crafted inputs the tests use: messages, zips, a minimal PE, a minimal
// compound file, a CMS SignedData, and a deflate stream that expands about 1000 times.

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf16"
)

// att is one attachment of a test message.
type att struct {
	name, ctype string
	data        []byte
	raw         []byte // a whole MIME entity instead (e.g. a message/rfc822 part)
}

// message builds a multipart/mixed message with a text body and the attachments,
// base64-encoded, CRLF.
func message(atts ...att) []byte {
	var b bytes.Buffer
	bnd := fmt.Sprintf("frontier-%d", boundaries.Add(1))
	b.WriteString("From: mario.rossi@pec.a.example\r\nTo: anna.bianchi@pec.b.example\r\n" +
		"Subject: documenti\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"" + bnd + "\"\r\n\r\n" +
		"preamble\r\n--" + bnd + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIn allegato i documenti.\r\n")
	for _, a := range atts {
		b.WriteString("--" + bnd + "\r\n")
		if a.raw != nil {
			b.Write(a.raw)
			b.WriteString("\r\n")
			continue
		}
		ct := a.ctype
		if ct == "" {
			ct = "application/octet-stream"
		}
		fmt.Fprintf(&b, "Content-Type: %s; name=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n"+
			"Content-Disposition: attachment; filename=\"%s\"\r\n\r\n", ct, a.name, a.name)
		b.WriteString(b64enc(a.data) + "\r\n")
	}
	b.WriteString("--" + bnd + "--\r\n")
	return b.Bytes()
}

var boundaries atomic.Int64

// rfc822 wraps a message as a message/rfc822 part named name.
func rfc822(name string, msg []byte) att {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: message/rfc822; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\n\r\n", name, name)
	b.Write(msg)
	return att{raw: b.Bytes()}
}

// busta wraps msg as a PEC busta di trasporto: multipart/signed around a multipart/mixed
// with the text, daticert.xml and postacert.eml (pec-spec.md §8).
func busta(msg []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: \"Per conto di: mario.rossi@pec.a.example\" <posta-certificata@pec.a.example>\r\n" +
		"Subject: POSTA CERTIFICATA: documenti\r\nX-Trasporto: posta-certificata\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=\"sha1\"; boundary=\"s1\"\r\n\r\n" +
		"--s1\r\nContent-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n" +
		"--m1\r\nContent-Type: text/plain\r\n\r\nMessaggio di posta certificata\r\n" +
		"--m1\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\n\r\n<postacert tipo=\"posta-certificata\" errore=\"nessuno\"/>\r\n" +
		"--m1\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n")
	b.Write(msg)
	b.WriteString("\r\n--m1--\r\n--s1\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nMIIBAA==\r\n--s1--\r\n")
	return b.Bytes()
}

// pe is a minimal PE image: DOS header with e_lfanew = 0x40, "PE\0\0", a COFF header.
func pe() []byte {
	b := make([]byte, 0x200)
	copy(b, "MZ")
	binary.LittleEndian.PutUint16(b[0x18:], 0x40)
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00\x4c\x01")
	return b
}

type zfile struct {
	name string
	data []byte
	enc  bool // set general purpose bit 0 (the data is stored as is)
}

// zipOf builds a zip archive with deflate.
func zipOf(t testing.TB, files ...zfile) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		h := &zip.FileHeader{Name: f.name, Method: zip.Deflate}
		if f.enc {
			h.Flags |= 1
			h.Method = zip.Store
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// docx is a minimal OOXML word document; with macros, the docm variant with vbaProject.bin.
func docx(t testing.TB, macros bool) []byte {
	ct := `<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
		`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>` +
		`<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`
	files := []zfile{
		{name: "[Content_Types].xml", data: []byte(ct)},
		{name: "_rels/.rels", data: []byte(`<Relationships/>`)},
		{name: "word/document.xml", data: []byte(`<w:document><w:body><w:p><w:r><w:t>Relazione</w:t></w:r></w:p></w:body></w:document>`)},
	}
	if macros {
		files[0].data = bytes.Replace(files[0].data, []byte("document.main+xml"), []byte("document.macroEnabled.main+xml"), 1)
		files = append(files, zfile{name: "word/vbaProject.bin", data: cfbOf(nil, cfbEntry{"VBA", cfbStorage, nil}, cfbEntry{"_VBA_PROJECT", cfbStream, make([]byte, 7)}, cfbEntry{"PROJECT", cfbStream, []byte("ID=\"{}\"\r\n")})})
	}
	return zipOf(t, files...)
}

// cleanPDF is a small valid-looking PDF with a compressed content stream.
func cleanPDF(extra string) []byte {
	var content bytes.Buffer
	fw, _ := flate.NewWriter(&content, flate.BestCompression)
	fw.Write([]byte("BT /F1 12 Tf 72 712 Td (Relazione /JS annuale) Tj ET"))
	fw.Close()
	zl := append([]byte{0x78, 0x9c}, content.Bytes()...)
	return []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R " + extra + ">>\nendobj\n" +
		"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n" +
		"3 0 obj\n<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>\nendobj\n" +
		"4 0 obj\n<< /Length " + fmt.Sprint(len(zl)) + " /Filter /FlateDecode >>\nstream\n" + string(zl) + "\nendstream\nendobj\n" +
		"trailer\n<< /Root 1 0 R /Size 5 >>\n%%EOF\n")
}

// zlibOf compresses b as a FlateDecode stream body (without a checksum: readers need none).
func zlibOf(b []byte) []byte {
	var out bytes.Buffer
	out.Write([]byte{0x78, 0x9c})
	fw, _ := flate.NewWriter(&out, flate.BestCompression)
	fw.Write(b)
	fw.Close()
	return out.Bytes()
}

type cfbEntry struct {
	name string
	typ  byte
	data []byte
}

// cfbOf builds a version 3 compound file (512-byte sectors): one FAT sector, the
// directory, the mini FAT and mini stream for streams under 4096 bytes, then the large
// streams. rootCLSID may be nil. The directory tree is a plain chain of right siblings.
func cfbOf(rootCLSID []byte, ents ...cfbEntry) []byte {
	const ss = 512
	sectors := func(n int) int { return (n + ss - 1) / ss }
	var mini []byte
	var miniFAT []uint32
	start := make([]uint32, len(ents))
	var big [][]byte
	for i, e := range ents {
		if e.typ != cfbStream {
			start[i] = cfbEnd
			continue
		}
		if len(e.data) < 4096 {
			start[i] = uint32(len(mini) / 64)
			n := (len(e.data) + 63) / 64
			for k := 0; k < n; k++ {
				next := uint32(len(miniFAT) + 1)
				if k == n-1 {
					next = cfbEnd
				}
				miniFAT = append(miniFAT, next)
			}
			mini = append(mini, e.data...)
			mini = append(mini, make([]byte, n*64-len(e.data))...)
			if n == 0 {
				start[i] = cfbEnd
			}
			continue
		}
		big = append(big, e.data)
	}
	nDir := (len(ents) + 1 + 3) / 4
	var fat []uint32
	chain := func(n int) uint32 {
		if n == 0 {
			return cfbEnd
		}
		first := uint32(len(fat))
		for k := 0; k < n; k++ {
			next := uint32(len(fat) + 1)
			if k == n-1 {
				next = cfbEnd
			}
			fat = append(fat, next)
		}
		return first
	}
	fat = append(fat, 0xfffffffd) // sector 0: the FAT itself
	dirStart := chain(nDir)
	miniFATStart := chain(sectors(len(miniFAT) * 4))
	miniStart := chain(sectors(len(mini)))
	bi := 0
	for i, e := range ents {
		if e.typ == cfbStream && len(e.data) >= 4096 {
			start[i] = chain(sectors(len(e.data)))
			bi++
		}
	}
	if len(fat) > ss/4 {
		panic("cfbOf: too big for one FAT sector")
	}
	h := make([]byte, 512)
	copy(h, magicOLE)
	binary.LittleEndian.PutUint16(h[0x18:], 0x3e)
	binary.LittleEndian.PutUint16(h[0x1a:], 3)
	binary.LittleEndian.PutUint16(h[0x1c:], 0xfffe)
	binary.LittleEndian.PutUint16(h[0x1e:], 9)
	binary.LittleEndian.PutUint16(h[0x20:], 6)
	binary.LittleEndian.PutUint32(h[0x2c:], 1)
	binary.LittleEndian.PutUint32(h[0x30:], dirStart)
	binary.LittleEndian.PutUint32(h[0x38:], 4096)
	binary.LittleEndian.PutUint32(h[0x3c:], miniFATStart)
	binary.LittleEndian.PutUint32(h[0x40:], uint32(sectors(len(miniFAT)*4)))
	binary.LittleEndian.PutUint32(h[0x44:], cfbEnd)
	for i := 0; i < 109; i++ {
		binary.LittleEndian.PutUint32(h[0x4c+4*i:], 0xffffffff)
	}
	binary.LittleEndian.PutUint32(h[0x4c:], 0)
	out := bytes.NewBuffer(h)
	pad := func() { out.Write(make([]byte, (ss-out.Len()%ss)%ss)) }
	fs := make([]byte, ss)
	for i := range ss / 4 {
		v := uint32(0xffffffff)
		if i < len(fat) {
			v = fat[i]
		}
		binary.LittleEndian.PutUint32(fs[4*i:], v)
	}
	out.Write(fs)
	entry := func(name string, typ byte, clsid []byte, right, child, st uint32, size int) {
		e := make([]byte, cfbDirEntry)
		u := utf16.Encode([]rune(name))
		for i, c := range u {
			binary.LittleEndian.PutUint16(e[2*i:], c)
		}
		binary.LittleEndian.PutUint16(e[0x40:], uint16(2*len(u)+2))
		e[0x42], e[0x43] = typ, 1
		binary.LittleEndian.PutUint32(e[0x44:], 0xffffffff)
		binary.LittleEndian.PutUint32(e[0x48:], right)
		binary.LittleEndian.PutUint32(e[0x4c:], child)
		copy(e[0x50:], clsid)
		binary.LittleEndian.PutUint32(e[0x74:], st)
		binary.LittleEndian.PutUint32(e[0x78:], uint32(size))
		out.Write(e)
	}
	child := uint32(0xffffffff)
	if len(ents) > 0 {
		child = 1
	}
	entry("Root Entry", cfbRoot, rootCLSID, 0xffffffff, child, miniStart, len(mini))
	for i, e := range ents {
		right := uint32(i + 2)
		if i == len(ents)-1 {
			right = 0xffffffff
		}
		entry(e.name, e.typ, nil, right, 0xffffffff, start[i], len(e.data))
	}
	pad()
	for _, v := range miniFAT {
		binary.Write(out, binary.LittleEndian, v)
	}
	pad()
	out.Write(mini)
	pad()
	for _, d := range big {
		out.Write(d)
		pad()
	}
	return out.Bytes()
}

// ole10Package is an OLE Package object carrying data as fileName.
func ole10Package(fileName string, data []byte) []byte {
	var b bytes.Buffer
	var body bytes.Buffer
	binary.Write(&body, binary.LittleEndian, uint16(2))
	body.WriteString(fileName + "\x00")
	body.WriteString(`C:\Users\x\` + fileName + "\x00")
	binary.Write(&body, binary.LittleEndian, uint32(0x00030000))
	binary.Write(&body, binary.LittleEndian, uint32(0))
	body.WriteString(`C:\Temp\` + fileName + "\x00")
	binary.Write(&body, binary.LittleEndian, uint32(len(data)))
	body.Write(data)
	binary.Write(&b, binary.LittleEndian, uint32(body.Len()))
	b.Write(body.Bytes())
	return b.Bytes()
}

// DER helpers for a CMS SignedData with encapsulated content (RFC 5652 §5.1).
func der(tag byte, parts ...[]byte) []byte {
	c := bytes.Join(parts, nil)
	var l []byte
	switch n := len(c); {
	case n < 0x80:
		l = []byte{byte(n)}
	case n < 0x100:
		l = []byte{0x81, byte(n)}
	case n < 0x10000:
		l = []byte{0x82, byte(n >> 8), byte(n)}
	default:
		l = []byte{0x83, byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(append([]byte{tag}, l...), c...)
}

func signedData(content []byte) []byte {
	oid := func(b []byte) []byte { return der(0x06, b) }
	var ec []byte
	if content != nil {
		ec = der(0xa0, der(0x04, content))
	}
	sd := der(0x30,
		der(0x02, []byte{1}),
		der(0x31, der(0x30, oid([]byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}))),
		der(0x30, oid(append(oidPKCS7[2:len(oidPKCS7):len(oidPKCS7)], 0x01)), ec),
		der(0x31),
	)
	return der(0x30, oid(oidSignedData), der(0xa0, sd))
}

// bombDeflate is a raw deflate stream of n MiB of zeros, about 1 KiB per MiB, built from
// one compressed MiB repeated (each block only refers back into zeros).
func bombDeflate(n int) []byte {
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	z := make([]byte, 1<<20)
	fw.Write(z)
	fw.Flush()
	mark := buf.Len()
	fw.Write(z)
	fw.Flush()
	chunk := bytes.Clone(buf.Bytes()[mark:])
	out := bytes.Clone(buf.Bytes()[:mark])
	for i := 1; i < n; i++ {
		out = append(out, chunk...)
	}
	return append(out, 0x03, 0x00) // a final empty fixed-Huffman block
}

// rawZip writes a zip by hand: one local entry with the given deflate data, and count
// central directory headers all pointing at it (the overlapping-files construction),
// each declaring the given sizes.
func rawZip(name string, deflated []byte, crc uint32, declared uint32, count int) []byte {
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	b.WriteString("PK\x03\x04")
	le(uint16(20))
	le(uint16(0))
	le(uint16(8))
	le(uint32(0))
	le(crc)
	le(uint32(len(deflated)))
	le(declared)
	le(uint16(len(name)))
	le(uint16(0))
	b.WriteString(name)
	b.Write(deflated)
	cd := b.Len()
	for i := 0; i < count; i++ {
		n := name
		if count > 1 {
			n = fmt.Sprintf("%d-%s", i, name)
		}
		b.WriteString("PK\x01\x02")
		le(uint16(20))
		le(uint16(20))
		le(uint16(0))
		le(uint16(8))
		le(uint32(0))
		le(crc)
		le(uint32(len(deflated)))
		le(declared)
		le(uint16(len(n)))
		le(uint16(0))
		le(uint16(0))
		le(uint16(0))
		le(uint16(0))
		le(uint32(0))
		le(uint32(0)) // local header offset: all at 0
		b.WriteString(n)
	}
	size := b.Len() - cd
	b.WriteString("PK\x05\x06")
	le(uint16(0))
	le(uint16(0))
	le(uint16(count))
	le(uint16(count))
	le(uint32(size))
	le(uint32(cd))
	le(uint16(0))
	return b.Bytes()
}

// b64enc is base64 in 76-character lines, CRLF.
func b64enc(b []byte) string {
	enc := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(enc) > 76 {
		out.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	out.WriteString(enc)
	return out.String()
}
