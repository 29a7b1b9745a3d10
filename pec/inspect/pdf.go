package inspect

import (
	"bytes"
	"compress/zlib"
	"fmt"
)

// pdf scans a PDF (ISO 32000-1) for active content and encryption, and inspects the files
// it embeds. It does not parse the object graph: it reads the names outside stream data
// (#xx escapes decoded, §7.3.5), where every dictionary key lives, plus the names inside
// object streams (§7.5.7, which hold dictionaries compressed), and skips all other stream
// data, where random bytes would look like names.
//
//   - /JavaScript, /JS (§12.6.4.16), /Launch (§12.6.4.5): active content (with
//     /OpenAction or /AA they run on opening; anywhere they are code the reader runs).
//   - /Encrypt in a trailer or cross-reference stream (§7.6): encrypted, not checked.
//   - /EmbeddedFile streams (§7.11.4): inflated and inspected like attachments.
//
// (Long on purpose: one pass over a PDF's names and streams, bounded.)
func (w *walker) pdf(ppath string, data []byte, depth int) {
	var js, launch, encrypt bool
	check := func(n []byte) {
		switch string(n) {
		case "JavaScript", "JS":
			js = true
		case "Launch":
			launch = true
		case "Encrypt":
			encrypt = true
		}
	}
	type stream struct {
		objStm, flate bool
		data          []byte
	}
	var streams []stream
	for pos := 0; pos < len(data); {
		kw, start, end := nextStream(data, pos)
		if kw < 0 {
			scanNames(data[pos:], check)
			break
		}
		scanNames(data[pos:kw], check)
		if objStm, embedded, flate, ok := streamKind(data[dictStart(data, pos, kw):kw]); ok && (objStm || embedded) {
			streams = append(streams, stream{objStm, flate, data[start:end]})
		}
		pos = min(end+len("endstream"), len(data))
	}
	if encrypt {
		w.unchecked(ppath, UncheckedEncrypted, "documento cifrato")
	}
	n := 0
	for _, s := range streams {
		if encrypt || w.stopped {
			break // the streams are ciphertext
		}
		body := s.data
		if s.flate {
			var err error
			if body, err = w.inflateZlib(ppath, body); err == errStop {
				return
			} else if err != nil {
				continue
			}
		}
		if s.objStm {
			scanNames(body, check)
			continue
		}
		n++
		epath := join(ppath, fmt.Sprintf("file incorporato %d", n))
		if !w.enter(depth+1, epath) || !w.count(epath) {
			return
		}
		w.file(epath, nil, body, nil, 0, depth+1)
	}
	switch {
	case js:
		w.macro(ppath, CodeActive, "JavaScript")
	case launch:
		w.macro(ppath, CodeActive, "azione Launch")
	}
}

// inflateZlib decompresses a FlateDecode stream within the budget. A truncated stream
// yields what decompressed before the damage.
func (w *walker) inflateZlib(ppath string, b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out, err := readRest(nil, &inflater{w: w, path: ppath, r: zr}, int64(len(b))*4)
	if err == errStop || w.stopped {
		return nil, errStop
	}
	if err != nil && len(out) == 0 {
		return nil, err
	}
	return out, nil
}

// nextStream finds the next "stream" keyword that ends a dictionary (">>" then blanks),
// from pos; it returns the keyword's offset, where the data starts and where
// "endstream" is (or the end of b). kw is -1 when there is none.
func nextStream(b []byte, pos int) (kw, start, end int) {
	for i := pos; ; {
		j := bytes.Index(b[i:], []byte("stream"))
		if j < 0 {
			return -1, 0, 0
		}
		k := i + j
		i = k + 1
		d := bytes.TrimRight(b[pos:k], " \t\r\n\f\x00")
		if !bytes.HasSuffix(d, []byte(">>")) {
			continue
		}
		start = k + len("stream")
		switch {
		case bytes.HasPrefix(b[start:], []byte("\r\n")):
			start += 2
		case bytes.HasPrefix(b[start:], []byte("\n")), bytes.HasPrefix(b[start:], []byte("\r")):
			start++
		}
		e := bytes.Index(b[start:], []byte("endstream"))
		if e < 0 {
			return k, start, len(b)
		}
		return k, start, start + e
	}
}

// dictStart is where the object holding the stream at kw begins: after its "obj"
// keyword, else at most 4 KB back.
func dictStart(b []byte, pos, kw int) int {
	lo := max(pos, kw-4096)
	for s := b[lo:kw]; ; {
		i := bytes.LastIndex(s, []byte("obj"))
		if i < 0 {
			return lo
		}
		if i < 3 || !bytes.Equal(s[i-3:i], []byte("end")) {
			return lo + i + 3
		}
		s = s[:i]
	}
}

// streamKind reads a stream dictionary: an object stream, an embedded file, FlateDecode;
// ok is false when another filter would be needed.
func streamKind(dict []byte) (objStm, embedded, flate, ok bool) {
	ok = true
	scanNames(dict, func(n []byte) {
		switch string(n) {
		case "ObjStm":
			objStm = true
		case "EmbeddedFile":
			embedded = true
		case "FlateDecode", "Fl":
			flate = true
		case "ASCIIHexDecode", "ASCII85Decode", "LZWDecode", "RunLengthDecode", "CCITTFaxDecode",
			"JBIG2Decode", "DCTDecode", "JPXDecode", "Crypt", "AHx", "A85", "LZW", "RL", "CCF", "DCT":
			ok = false
		}
	})
	return
}

// scanNames calls fn with every name in b, #xx escapes decoded (names longer than 64
// bytes are passed undecoded: none we look for is that long).
func scanNames(b []byte, fn func([]byte)) {
	var buf [64]byte
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '/')
		if j < 0 {
			return
		}
		s := i + j + 1
		e := s
		for e < len(b) && !pdfDelim[b[e]] {
			e++
		}
		i = max(e, s)
		n := b[s:e]
		if len(n) == 0 {
			continue
		}
		if bytes.IndexByte(n, '#') >= 0 && len(n) <= len(buf) {
			k := 0
			for x := 0; x < len(n); x++ {
				if n[x] == '#' && x+2 < len(n) && unhex(n[x+1]) < 16 && unhex(n[x+2]) < 16 {
					buf[k] = unhex(n[x+1])<<4 | unhex(n[x+2])
					x += 2
				} else {
					buf[k] = n[x]
				}
				k++
			}
			n = buf[:k]
		}
		fn(n)
	}
}

// pdfDelim marks white-space and delimiter characters (ISO 32000-1 §7.2.2).
var pdfDelim = func() (t [256]bool) {
	for _, c := range []byte("\x00\t\n\f\r ()<>[]{}/%") {
		t[c] = true
	}
	return t
}()
