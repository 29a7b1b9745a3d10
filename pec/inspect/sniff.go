package inspect

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// Type is a file type recognised from content. The values are stable tokens, usable in a
// configuration file.
type Type string

// Executable and installable types (DefaultForbiddenTypes).
const (
	TypePE        Type = "pe"         // "MZ" + "PE\0\0": Windows executable or library
	TypeDOS       Type = "dos"        // "MZ" with a DOS header only
	TypeELF       Type = "elf"        // 7F "ELF"
	TypeMachO     Type = "macho"      // FEEDFACE/FEEDFACF either byte order, CAFEBABE/CAFEBABF fat
	TypeJavaClass Type = "java-class" // CAFEBABE with a class file version
	TypeScript    Type = "script"     // "#!/..." or "@echo off"
	TypeMSI       Type = "msi"        // OLE2 with the Windows Installer root CLSID (msi, msp, mst)
	TypeLNK       Type = "lnk"        // shell link header 4C 00 00 00 + CLSID 00021401
	TypeCHM       Type = "chm"        // "ITSF"
	TypeHTA       Type = "hta"        // HTML with <HTA:APPLICATION>
	TypeRegistry  Type = "reg"        // "REGEDIT4" / "Windows Registry Editor Version 5.00"
	TypeISO       Type = "iso"        // "CD001" or "BEA01" at 0x8001 (ISO 9660, UDF)
	TypeVHD       Type = "vhd"        // "conectix" at the start or in the last 512 bytes
	TypeVHDX      Type = "vhdx"       // "vhdxfile"
	TypeDMG       Type = "dmg"        // "koly" trailer
	TypeDiskImage Type = "disk-image" // boot sector with a FAT/NTFS/exFAT signature, or a GPT header
)

// Documents and containers: not forbidden by default, opened or examined.
const (
	TypeZip     Type = "zip"     // opened; members inspected
	TypeOOXML   Type = "ooxml"   // zip with [Content_Types].xml: docx, xlsx, pptx and their m variants
	TypeODF     Type = "odf"     // OpenDocument zip
	TypeOLE2    Type = "ole2"    // compound file: doc, xls, ppt, msg; directory read for VBA and encryption
	TypePDF     Type = "pdf"     // scanned for JavaScript, Launch, Encrypt; embedded files inspected
	TypeGzip    Type = "gzip"    // decompressed, the content inspected
	TypeTar     Type = "tar"     // members inspected
	TypeCMS     Type = "cms"     // PKCS#7/CAdES signed data (.p7m): the signed content inspected
	TypeMessage Type = "message" // an RFC 5322 message (.eml): walked like the outer one
	TypeRAR     Type = "rar"     // not opened: unchecked
	Type7z      Type = "7z"      // not opened: unchecked
	TypeCAB     Type = "cab"     // not opened: unchecked
	TypeXZ      Type = "xz"      // not opened: unchecked
	TypeBzip2   Type = "bzip2"   // not opened: unchecked
	TypeZstd    Type = "zstd"    // not opened: unchecked
	TypePGP     Type = "pgp"     // ASCII-armoured OpenPGP message: unchecked
)

// typeText is the Italian description used in reasons.
var typeText = map[Type]string{
	TypePE:        "eseguibile Windows",
	TypeDOS:       "eseguibile DOS",
	TypeELF:       "eseguibile Linux/Unix",
	TypeMachO:     "eseguibile macOS",
	TypeJavaClass: "classe Java",
	TypeScript:    "script",
	TypeMSI:       "pacchetto di installazione Windows",
	TypeLNK:       "collegamento Windows",
	TypeCHM:       "guida HTML compilata",
	TypeHTA:       "applicazione HTML",
	TypeRegistry:  "file di registro di Windows",
	TypeISO:       "immagine disco ISO",
	TypeVHD:       "disco virtuale VHD",
	TypeVHDX:      "disco virtuale VHDX",
	TypeDMG:       "immagine disco macOS",
	TypeDiskImage: "immagine disco",
	TypeZip:       "archivio zip",
	TypeOOXML:     "documento Office",
	TypeODF:       "documento OpenDocument",
	TypeOLE2:      "documento Office 97-2003",
	TypePDF:       "documento PDF",
	TypeGzip:      "archivio gzip",
	TypeTar:       "archivio tar",
	TypeCMS:       "file firmato",
	TypeMessage:   "messaggio",
	TypeRAR:       "archivio rar",
	Type7z:        "archivio 7z",
	TypeCAB:       "archivio cab",
	TypeXZ:        "archivio xz",
	TypeBzip2:     "archivio bzip2",
	TypeZstd:      "archivio zstd",
	TypePGP:       "messaggio cifrato PGP",
}

func knownTypes() []string {
	var s []string
	for t := range typeText {
		s = append(s, string(t))
	}
	slices.Sort(s)
	return s
}

var (
	oidPKCS7 = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07} // 1.2.840.113549.1.7
	clsidLNK = []byte{0x01, 0x14, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46}
	magicOLE = []byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}
	regUTF16 = []byte("W\x00i\x00n\x00d\x00o\x00w\x00s\x00 \x00R\x00e\x00g\x00i\x00s\x00t\x00r\x00y\x00")
)

// sniff recognises b's type from its first bytes (b is the head of the file, or all of it).
// It returns "" for anything else (text, images, ...).
func sniff(b []byte) Type {
	switch {
	case len(b) >= 2 && (b[0] == 'M' && b[1] == 'Z' || b[0] == 'Z' && b[1] == 'M'):
		if t := sniffMZ(b); t != "" {
			return t
		}
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return TypeELF
	case len(b) >= 8 && (bytes.HasPrefix(b, []byte{0xca, 0xfe, 0xba, 0xbe}) || bytes.HasPrefix(b, []byte{0xca, 0xfe, 0xba, 0xbf})):
		// Java class files and fat Mach-O share CAFEBABE; a class file has its major
		// version (>= 45) where fat Mach-O has its small architecture count (file(1)).
		if b[3] == 0xbe && binary.BigEndian.Uint32(b[4:]) >= 45 {
			return TypeJavaClass
		}
		return TypeMachO
	case len(b) >= 4 && isMachO(binary.BigEndian.Uint32(b)):
		return TypeMachO
	case bytes.HasPrefix(b, []byte("PK\x03\x04")), bytes.HasPrefix(b, []byte("PK\x05\x06")), bytes.HasPrefix(b, []byte("PK\x07\x08PK\x03\x04")):
		return TypeZip
	case bytes.HasPrefix(b, magicOLE):
		return TypeOLE2
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return TypeGzip
	case len(b) >= 20 && bytes.HasPrefix(b, []byte{0x4c, 0, 0, 0}) && bytes.Equal(b[4:20], clsidLNK):
		return TypeLNK
	case bytes.HasPrefix(b, []byte("ITSF")):
		return TypeCHM
	case bytes.HasPrefix(b, []byte("vhdxfile")):
		return TypeVHDX
	case bytes.HasPrefix(b, []byte("conectix")):
		return TypeVHD
	case bytes.HasPrefix(b, []byte("Rar!\x1a\x07")):
		return TypeRAR
	case bytes.HasPrefix(b, []byte("7z\xbc\xaf\x27\x1c")):
		return Type7z
	case bytes.HasPrefix(b, []byte("MSCF\x00\x00\x00\x00")):
		return TypeCAB
	case bytes.HasPrefix(b, []byte("\xfd7zXZ\x00")):
		return TypeXZ
	case bytes.HasPrefix(b, []byte("BZh")) && len(b) >= 4 && '1' <= b[3] && b[3] <= '9':
		return TypeBzip2
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return TypeZstd
	case len(b) >= 2 && b[0] == 0x30 && sniffCMS(b):
		return TypeCMS
	}
	if t := sniffImage(b); t != "" {
		return t
	}
	if len(b) >= 262 && bytes.Equal(b[257:262], []byte("ustar")) {
		return TypeTar
	}
	if i := bytes.Index(b[:min(len(b), 1024)], []byte("%PDF-")); i >= 0 {
		return TypePDF // readers accept up to 1 KB of junk before the header
	}
	return sniffText(b)
}

// sniffMZ tells a PE image (e_lfanew points at "PE\0\0") from a plain DOS executable (a
// sane relocation table offset) from text that happens to start with "MZ".
func sniffMZ(b []byte) Type {
	if len(b) < 0x40 {
		return ""
	}
	if off := binary.LittleEndian.Uint32(b[0x3c:]); off <= uint32(len(b))-4 && bytes.Equal(b[off:off+4], []byte("PE\x00\x00")) {
		return TypePE
	}
	if rel := binary.LittleEndian.Uint16(b[0x18:]); rel >= 0x1c && rel <= 0x40 {
		return TypeDOS
	}
	return ""
}

func isMachO(m uint32) bool {
	switch m {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
		return true
	}
	return false
}

// sniffCMS recognises a DER/BER ContentInfo whose contentType is a PKCS#7 type (RFC 5652 §3).
func sniffCMS(b []byte) bool {
	return bytes.Contains(b[:min(len(b), 24)], oidPKCS7)
}

// sniffImage recognises disk images by their fixed-offset signatures.
func sniffImage(b []byte) Type {
	for _, off := range []int{0x8001, 0x8801, 0x9001} { // ECMA-119 §8.1, ECMA-167 volume recognition
		if len(b) >= off+5 && (bytes.Equal(b[off:off+5], []byte("CD001")) || bytes.Equal(b[off:off+5], []byte("BEA01"))) {
			return TypeISO
		}
	}
	if len(b) >= 0x208 && bytes.Equal(b[0x200:0x208], []byte("EFI PART")) {
		return TypeDiskImage // GPT header in LBA 1
	}
	if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa {
		if bytes.Equal(b[3:11], []byte("NTFS    ")) || bytes.Equal(b[3:11], []byte("EXFAT   ")) ||
			bytes.Equal(b[0x36:0x3b], []byte("FAT12")) || bytes.Equal(b[0x36:0x3b], []byte("FAT16")) ||
			bytes.Equal(b[0x52:0x57], []byte("FAT32")) {
			return TypeDiskImage
		}
	}
	return ""
}

// sniffTail recognises the formats whose only signature is a footer.
func sniffTail(tail []byte) Type {
	if n := len(tail); n >= 512 {
		if bytes.HasPrefix(tail[n-512:], []byte("conectix")) || bytes.HasPrefix(tail[n-511:], []byte("conectix")) {
			return TypeVHD // fixed VHD footer (the 511-byte form is pre-Virtual PC 2004)
		}
		if bytes.HasPrefix(tail[n-512:], []byte("koly")) {
			return TypeDMG
		}
	}
	return ""
}

// sniffText recognises scripts, registry files, HTML applications and RFC 5322 messages.
func sniffText(b []byte) Type {
	t := bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	if bytes.HasPrefix(t, []byte("#!")) {
		if s := bytes.TrimLeft(t[2:min(len(t), 16)], " \t"); len(s) > 0 && s[0] == '/' {
			return TypeScript
		}
	}
	if len(t) >= 9 && bytes.EqualFold(t[:9], []byte("@echo off")) {
		return TypeScript
	}
	if bytes.HasPrefix(t, []byte("REGEDIT4")) || bytes.HasPrefix(t, []byte("Windows Registry Editor Version")) ||
		bytes.HasPrefix(b, []byte{0xff, 0xfe}) && bytes.HasPrefix(b[2:], regUTF16) {
		return TypeRegistry
	}
	if bytes.HasPrefix(bytes.TrimLeft(t, " \t\r\n"), []byte("-----BEGIN PGP MESSAGE-----")) {
		return TypePGP
	}
	if containsFold(b[:min(len(b), 4096)], []byte("<hta:application")) {
		return TypeHTA
	}
	if looksLikeMessage(t) {
		return TypeMessage
	}
	return ""
}

// containsFold is a case-insensitive bytes.Contains for an ASCII pattern starting with '<'.
func containsFold(b, pat []byte) bool {
	for i := 0; i+len(pat) <= len(b); {
		j := bytes.IndexByte(b[i:], pat[0])
		if j < 0 {
			return false
		}
		i += j
		if i+len(pat) <= len(b) && bytes.EqualFold(b[i:i+len(pat)], pat) {
			return true
		}
		i++
	}
	return false
}

// looksLikeMessage: the first line is a header field usual at the top of a stored message,
// and a MIME-Version or Content-Type field follows in the header.
func looksLikeMessage(b []byte) bool {
	colon := bytes.IndexByte(b[:min(len(b), 80)], ':')
	if colon <= 0 {
		return false
	}
	switch string(bytes.ToLower(b[:colon])) {
	case "received", "return-path", "from", "to", "date", "subject", "message-id",
		"mime-version", "delivered-to", "x-trasporto", "x-ricevuta", "reply-to", "content-type":
	default:
		return false
	}
	end := bytes.Index(b, []byte("\n\n"))
	if e2 := bytes.Index(b, []byte("\r\n\r\n")); e2 >= 0 && (end < 0 || e2 < end) {
		end = e2
	}
	if end < 0 {
		end = len(b)
	}
	h := b[:end]
	return hasFieldFold(h, "mime-version") || hasFieldFold(h, "content-type")
}

func hasFieldFold(h []byte, name string) bool {
	for len(h) > 0 {
		if len(h) > len(name) && h[len(name)] == ':' && bytes.EqualFold(h[:len(name)], []byte(name)) {
			return true
		}
		i := bytes.IndexByte(h, '\n')
		if i < 0 {
			return false
		}
		h = h[i+1:]
	}
	return false
}
