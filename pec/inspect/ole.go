package inspect

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Compound File Binary format ([MS-CFB]) constants.
const (
	cfbMaxReg   = 0xfffffffa // MAXREGSECT
	cfbEnd      = 0xfffffffe // ENDOFCHAIN
	cfbDirEntry = 128
	cfbStorage  = 1
	cfbStream   = 2
	cfbRoot     = 5
)

// Windows Installer root storage CLSIDs, as stored (little-endian GUID fields):
// {000C1084-...} msi, {000C1086-...} msp, {000C1082-...} mst.
var msiCLSIDs = [][]byte{
	{0x84, 0x10, 0x0c, 0x00, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0x46},
	{0x86, 0x10, 0x0c, 0x00, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0x46},
	{0x82, 0x10, 0x0c, 0x00, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0x46},
}

// cfb is a compound file held in memory. It reads only what it needs, trusting none of
// the file's numbers: every sector number is bounds-checked and every chain is cut after
// as many steps as the file has sectors, so loops and lies end.
type cfb struct {
	b        []byte
	shift    uint
	fatSecs  []uint32 // the FAT's own sectors, from the DIFAT
	cutoff   uint64
	miniFAT  []uint32 // built on first use
	mini     []byte   // the mini stream, built on first use
	root     []byte   // the root directory entry
	miniDone bool
}

func parseCFB(b []byte) (*cfb, error) {
	if len(b) < 512 || !bytes.HasPrefix(b, magicOLE) {
		return nil, fmt.Errorf("not a compound file")
	}
	c := &cfb{b: b, shift: uint(binary.LittleEndian.Uint16(b[0x1e:])), cutoff: uint64(binary.LittleEndian.Uint32(b[0x38:]))}
	if c.shift != 9 && c.shift != 12 { // [MS-CFB] 2.2: version 3 or 4
		return nil, fmt.Errorf("sector shift %d", c.shift)
	}
	nFAT := int(min(binary.LittleEndian.Uint32(b[0x2c:]), uint32(c.maxSteps())))
	for i := 0; i < 109 && len(c.fatSecs) < nFAT; i++ {
		c.fatSecs = append(c.fatSecs, binary.LittleEndian.Uint32(b[0x4c+4*i:]))
	}
	s := binary.LittleEndian.Uint32(b[0x44:])
	for steps := 0; len(c.fatSecs) < nFAT && s <= cfbMaxReg && steps < c.maxSteps(); steps++ {
		sec := c.sector(s)
		if len(sec) < c.ss() {
			break
		}
		for i := 0; i < c.ss()/4-1 && len(c.fatSecs) < nFAT; i++ {
			c.fatSecs = append(c.fatSecs, binary.LittleEndian.Uint32(sec[4*i:]))
		}
		s = binary.LittleEndian.Uint32(sec[c.ss()-4:])
	}
	return c, nil
}

func (c *cfb) ss() int       { return 1 << c.shift }
func (c *cfb) maxSteps() int { return len(c.b)>>c.shift + 1 }

// sector returns sector s, or its part present in a truncated file, or nil.
func (c *cfb) sector(s uint32) []byte {
	if s > cfbMaxReg {
		return nil
	}
	off := (uint64(s) + 1) << c.shift
	if off >= uint64(len(c.b)) {
		return nil
	}
	return c.b[off:min(off+uint64(c.ss()), uint64(len(c.b)))]
}

// next follows the FAT.
func (c *cfb) next(s uint32) uint32 {
	per := uint32(c.ss() / 4)
	if int(s/per) >= len(c.fatSecs) {
		return cfbEnd
	}
	sec := c.sector(c.fatSecs[s/per])
	if i := int(s%per) * 4; i+4 <= len(sec) {
		return binary.LittleEndian.Uint32(sec[i:])
	}
	return cfbEnd
}

// chain calls fn with each sector of the chain from start, until fn returns false.
func (c *cfb) chain(start uint32, fn func([]byte) bool) {
	for s, steps := start, 0; s <= cfbMaxReg && steps < c.maxSteps(); s, steps = c.next(s), steps+1 {
		sec := c.sector(s)
		if sec == nil || !fn(sec) {
			return
		}
	}
}

// entries calls fn with each directory entry, the root first.
func (c *cfb) entries(fn func(e []byte)) {
	c.chain(binary.LittleEndian.Uint32(c.b[0x30:]), func(sec []byte) bool {
		for i := 0; i+cfbDirEntry <= len(sec); i += cfbDirEntry {
			e := sec[i : i+cfbDirEntry]
			if e[0x42] == cfbRoot && c.root == nil {
				c.root = e
			}
			if t := e[0x42]; t == cfbStorage || t == cfbStream || t == cfbRoot {
				fn(e)
			}
		}
		return true
	})
}

// entryIs compares an entry's UTF-16 name with an ASCII name, case-insensitively as
// [MS-CFB] 2.6.4 compares them, without allocating.
func entryIs(e []byte, name string) bool {
	n := int(binary.LittleEndian.Uint16(e[0x40:]))
	if n != 2*len(name)+2 || n > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		u := binary.LittleEndian.Uint16(e[2*i:])
		if u >= 0x80 || lowerASCII(byte(u)) != lowerASCII(name[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 32
	}
	return c
}

func entrySize(e []byte) uint64 { return binary.LittleEndian.Uint64(e[0x78:]) }

// stream returns up to limit bytes of the entry's stream, from the mini stream when it is
// under the cutoff ([MS-CFB] 2.6.3).
func (c *cfb) stream(e []byte, limit int) []byte {
	size := entrySize(e)
	if binary.LittleEndian.Uint16(c.b[0x1a:]) == 3 {
		size &= 0xffffffff // version 3 files may leave junk in the high half
	}
	want := int(min(size, uint64(limit), uint64(len(c.b))))
	start := binary.LittleEndian.Uint32(e[0x74:])
	out := make([]byte, 0, min(want, 1<<20))
	if size < c.cutoff && e[0x42] != cfbRoot {
		mini := c.miniStream()
		for s, steps := start, 0; len(out) < want && s <= cfbMaxReg && steps < len(c.miniFAT)+1; steps++ {
			off := int(s) * 64
			if off >= len(mini) {
				break
			}
			out = append(out, mini[off:min(off+64, len(mini), off+want-len(out))]...)
			if int(s) >= len(c.miniFAT) {
				break
			}
			s = c.miniFAT[s]
		}
		return out
	}
	c.chain(start, func(sec []byte) bool {
		out = append(out, sec[:min(len(sec), want-len(out))]...)
		return len(out) < want
	})
	return out
}

// miniStream builds the mini FAT and the mini stream (held by the root entry) once.
func (c *cfb) miniStream() []byte {
	if c.miniDone {
		return c.mini
	}
	c.miniDone = true
	nMini := int(binary.LittleEndian.Uint32(c.b[0x40:]))
	c.chain(binary.LittleEndian.Uint32(c.b[0x3c:]), func(sec []byte) bool {
		for i := 0; i+4 <= len(sec); i += 4 {
			c.miniFAT = append(c.miniFAT, binary.LittleEndian.Uint32(sec[i:]))
		}
		nMini--
		return nMini > 0
	})
	if c.root != nil {
		c.mini = c.stream(c.root, len(c.b))
	}
	return c.mini
}

// ole examines a compound file: Windows Installer packages, VBA projects, encryption
// (OOXML agile/standard encryption, Word and Excel 97-2003 passwords), and the files it
// embeds (OLE Package objects, embedded OOXML packages), which are inspected in turn.
func (w *walker) ole(opath string, data []byte, depth int) {
	c, err := parseCFB(data)
	if err != nil {
		w.unchecked(opath, UncheckedDamaged, "documento danneggiato")
		return
	}
	var vba, encrypted, word, book bool
	var embedded [][]byte
	c.entries(func(e []byte) {
		switch {
		case entryIs(e, "VBA") && e[0x42] == cfbStorage, entryIs(e, "_VBA_PROJECT"), entryIs(e, "_VBA_PROJECT_CUR"):
			vba = true // [MS-OVBA] 2.2.1; Excel's project storage is _VBA_PROJECT_CUR
		case entryIs(e, "EncryptionInfo"), entryIs(e, "EncryptedPackage"), entryIs(e, "EncryptedSummary"):
			encrypted = true // [MS-OFFCRYPTO] 2.3.4.4, 2.3.4.1; PowerPoint 2.3.6
		case !word && entryIs(e, "WordDocument"):
			// [MS-DOC] 2.5.1 FibBase: fEncrypted (0x0100) or fObfuscated (0x8000).
			word = true
			if f := c.stream(e, 12); len(f) >= 12 && binary.LittleEndian.Uint16(f[10:])&0x8100 != 0 {
				encrypted = true
			}
		case !book && (entryIs(e, "Workbook") || entryIs(e, "Book")):
			book = true
			encrypted = encrypted || biffFilePass(c.stream(e, 4096))
		case e[0x42] == cfbStream && (entryIs(e, "\x01Ole10Native") || entryIs(e, "Package")):
			embedded = append(embedded, e)
		}
	})
	if c.root != nil {
		for _, id := range msiCLSIDs {
			if bytes.Equal(c.root[0x50:0x60], id) {
				if w.forbidden(opath, "", TypeMSI) {
					return
				}
			}
		}
	}
	if vba {
		w.macro(opath, CodeMacro, "macro VBA")
	}
	if encrypted {
		w.unchecked(opath, UncheckedEncrypted, "documento cifrato")
	}
	for i, e := range embedded {
		if !w.enter(depth+1, opath) {
			return
		}
		w.oleObject(opath, c, e, i+1, depth+1)
	}
}

// oleObject inspects one embedded object stream. The bytes it copies out count against
// MaxExpanded: several directory entries may point at the same sectors.
func (w *walker) oleObject(opath string, c *cfb, e []byte, n int, depth int) {
	name := fmt.Sprintf("oggetto incorporato %d", n)
	if !w.count(join(opath, name)) {
		return
	}
	if entrySize(e) > uint64(w.room()) {
		w.limit(CodeBomb, opath)
		return
	}
	data := c.stream(e, int(min(entrySize(e), uint64(w.room()))))
	w.rep.Expanded += int64(len(data))
	var names []string
	if entryIs(e, "\x01Ole10Native") {
		var fn string
		fn, data = ole10Native(data)
		if fn != "" {
			name, names = baseName(fn), []string{fn}
		}
	}
	w.file(join(opath, name), names, data, nil, 0, depth)
}

// ole10Native unpacks an OLE Package object: total size, flags, label, source path,
// two reserved words, temporary path, data size, data (the layout oletools reads).
func ole10Native(b []byte) (string, []byte) {
	if len(b) < 6 {
		return "", b
	}
	p := b[6:]
	cstr := func() string {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			p = nil
			return ""
		}
		s := string(p[:i])
		p = p[i+1:]
		return s
	}
	label := cstr()
	src := cstr()
	if len(p) < 8 {
		return label, b
	}
	p = p[8:]
	cstr() // temporary path
	if len(p) < 4 {
		return label, b
	}
	n := binary.LittleEndian.Uint32(p)
	p = p[4:]
	if uint64(n) < uint64(len(p)) {
		p = p[:n]
	}
	if src != "" {
		label = src
	}
	return label, p
}

// biffFilePass reports a FILEPASS record ([MS-XLS] 2.4.117) among a BIFF stream's first
// records: the workbook is encrypted.
func biffFilePass(b []byte) bool {
	for i := 0; i < 64 && len(b) >= 4; i++ {
		typ, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		if typ == 0x002f {
			return true
		}
		if 4+n > len(b) {
			return false
		}
		b = b[4+n:]
	}
	return false
}
