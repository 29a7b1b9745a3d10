package inspect

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"strings"
)

// gzip decompresses a gzip file (RFC 1952) and inspects what it holds, under the name the
// gzip header records, else the outer name without its .gz (.tgz becomes .tar).
func (w *walker) gzip(gpath string, names []string, r io.Reader, depth int) {
	if !w.enter(depth+1, gpath) {
		return
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		if err != errStop {
			w.unchecked(gpath, UncheckedDamaged, "archivio gzip danneggiato")
		}
		return
	}
	var inner []string
	if zr.Name != "" {
		inner = append(inner, zr.Name)
	}
	if len(names) > 0 {
		n := baseName(names[0])
		lower := strings.ToLower(n)
		switch {
		case strings.HasSuffix(lower, ".tgz"):
			inner = append(inner, n[:len(n)-4]+".tar")
		case strings.HasSuffix(lower, ".gz"):
			inner = append(inner, n[:len(n)-3])
		}
	}
	name := "contenuto"
	if len(inner) > 0 {
		name = baseName(inner[0])
	}
	ipath := join(gpath, name)
	if !w.count(ipath) {
		return
	}
	w.file(ipath, inner, nil, &inflater{w: w, path: ipath, r: zr}, 0, depth+1)
}

// tar walks a tar archive (POSIX.1-2001 pax, GNU, ustar) streamed from r. Member data is
// bounded by r itself; sparse members, whose holes would expand from nothing, are not read.
func (w *walker) tar(tpath string, r io.Reader, depth int) {
	if !w.enter(depth+1, tpath) {
		return
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			if err != errStop && !w.stopped {
				w.unchecked(tpath, UncheckedDamaged, "archivio tar danneggiato")
			}
			return
		}
		mpath := join(tpath, h.Name)
		if !w.count(mpath) {
			return
		}
		names := []string{h.Name}
		switch {
		case h.Typeflag == tar.TypeGNUSparse || h.PAXRecords["GNU.sparse.major"] != "" || h.PAXRecords["GNU.sparse.map"] != "" || h.PAXRecords["GNU.sparse.size"] != "":
			if !w.forbidden(mpath, w.forbiddenExt(names), "") {
				w.unchecked(mpath, UncheckedUnsupported, "file sparso in archivio tar")
			}
		case h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeCont:
			w.file(mpath, names, nil, tr, h.Size, depth+1)
		default: // links, directories, devices: a name only
			w.forbidden(mpath, w.forbiddenExt(names), "")
		}
		if w.stopped {
			return
		}
	}
}
