package inspect

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"path"
	"strings"
)

// zip walks a zip archive (APPNOTE.TXT) held in data, whose own level is depth.
//
// Bounds: archive/zip allocates one File per central directory header it reads, and
// reads headers until one fails to parse, whatever the end record says; every such header
// starts with "PK\x01\x02", so their count in data bounds the allocation and is checked
// against MaxParts first. Declared sizes are summed and checked against MaxExpanded before
// anything is expanded (a bomb that tells the truth is refused at once); a bomb that lies
// is stopped by the inflater, which counts the bytes really produced. Members are read
// raw (File.OpenRaw) and inflated here, so overlapping members (several headers pointing
// at the same data) each count in full.
func (w *walker) zip(zpath string, data []byte, depth int) {
	if !w.enter(depth+1, zpath) {
		return
	}
	if n := bytes.Count(data, []byte("PK\x01\x02")); w.rep.Parts+n > w.in.lim.MaxParts {
		w.limit(CodeTooMany, zpath)
		return
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		w.unchecked(zpath, UncheckedDamaged, "archivio zip danneggiato")
		return
	}
	var declared uint64
	for _, f := range zr.File {
		if f.Flags&1 == 0 && (f.Method == zip.Store || f.Method == zip.Deflate) {
			declared += min(f.UncompressedSize64, 1<<40) // MaxParts headers at most: no overflow
		}
	}
	if declared > uint64(w.room()) {
		w.limit(CodeBomb, zpath)
		return
	}
	skip := w.office(zpath, zr)
	for _, f := range zr.File {
		mpath := join(zpath, f.Name)
		if !w.count(mpath) {
			return
		}
		if strings.HasSuffix(f.Name, "/") || skip[f.Name] {
			continue
		}
		w.member(mpath, f, depth+1)
	}
}

// member inspects one zip member.
func (w *walker) member(mpath string, f *zip.File, depth int) {
	names := []string{f.Name}
	if f.Flags&0x1 != 0 { // APPNOTE 4.4.4 bit 0: encrypted (ZipCrypto, or AES with method 99)
		if !w.forbidden(mpath, w.forbiddenExt(names), "") {
			w.unchecked(mpath, UncheckedProtected, "archivio protetto da password")
		}
		return
	}
	if f.Method != zip.Store && f.Method != zip.Deflate {
		if !w.forbidden(mpath, w.forbiddenExt(names), "") {
			w.unchecked(mpath, UncheckedUnsupported, "metodo di compressione non supportato")
		}
		return
	}
	raw, err := f.OpenRaw()
	if err != nil {
		if !w.forbidden(mpath, w.forbiddenExt(names), "") {
			w.unchecked(mpath, UncheckedDamaged, "archivio zip danneggiato")
		}
		return
	}
	r := raw
	if f.Method == zip.Deflate {
		fr := w.flate(raw)
		defer w.unflate(fr)
		r = fr
	}
	w.file(mpath, names, nil, &inflater{w: w, path: mpath, r: r}, int64(min(f.UncompressedSize64, 1<<40)), depth)
}

// office recognises OOXML and OpenDocument archives, reports their macros and encryption,
// and returns the members not to walk again (the VBA project, already reported).
func (w *walker) office(zpath string, zr *zip.Reader) map[string]bool {
	var ooxml, odf bool
	for _, f := range zr.File {
		switch {
		case strings.EqualFold(f.Name, "[Content_Types].xml"):
			ooxml = true
		case f.Name == "mimetype" || f.Name == "META-INF/manifest.xml":
			odf = true
		}
	}
	var skip map[string]bool
	macro := ""
	switch {
	case ooxml:
		// ECMA-376 Part 2 / MS-OFFMACRO2: the VBA project is a part of content type
		// application/vnd.ms-office.vbaProject, by convention vbaProject.bin; Excel 4.0
		// macro sheets are parts under macrosheets/.
		ct := w.small(zpath, zr, "[Content_Types].xml")
		for _, f := range zr.File {
			lower := strings.ToLower(f.Name)
			switch {
			case path.Base(lower) == "vbaproject.bin":
				macro = "macro VBA"
				if skip == nil {
					skip = map[string]bool{}
				}
				skip[f.Name] = true
			case strings.Contains(lower, "macrosheets/") && macro == "":
				macro = "macro di Excel 4.0"
			}
		}
		if macro == "" && (bytes.Contains(ct, []byte("ms-office.vbaProject")) || bytes.Contains(ct, []byte("macrosheet+xml"))) {
			macro = "macro VBA"
		}
	case odf:
		// OpenDocument 1.2 Part 3 §3: Basic libraries under Basic/<library>/<module>.xml
		// (script-lb.xml and script-lc.xml are only indexes); other scripts under Scripts/.
		for _, f := range zr.File {
			b := path.Base(f.Name)
			if strings.HasPrefix(f.Name, "Scripts/") && !strings.HasSuffix(f.Name, "/") ||
				strings.HasPrefix(f.Name, "Basic/") && strings.HasSuffix(b, ".xml") && !strings.HasPrefix(b, "script-l") && !strings.HasPrefix(b, "dialog-l") {
				macro = "macro OpenDocument"
				break
			}
		}
		if m := w.small(zpath, zr, "META-INF/manifest.xml"); bytes.Contains(m, []byte("encryption-data")) {
			w.unchecked(zpath, UncheckedEncrypted, "documento cifrato") // ODF 1.2 Part 3 §4.8
		}
	}
	if macro != "" && !w.stopped {
		w.macro(zpath, CodeMacro, macro)
	}
	return skip
}

// small reads a small member (at most 1 MiB of it), counting it against the budget.
func (w *walker) small(zpath string, zr *zip.Reader, name string) []byte {
	for _, f := range zr.File {
		if !strings.EqualFold(f.Name, name) || f.Flags&1 != 0 {
			continue
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil
		}
		raw, err := f.OpenRaw()
		if err != nil {
			return nil
		}
		r := raw
		if f.Method == zip.Deflate {
			fr := w.flate(raw)
			defer w.unflate(fr)
			r = fr
		}
		b, _ := io.ReadAll(io.LimitReader(&inflater{w: w, path: join(zpath, name), r: r}, 1<<20))
		return b
	}
	return nil
}
