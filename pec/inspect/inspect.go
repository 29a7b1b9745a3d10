package inspect

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	headSize = 64 << 10 // bytes sniffed at the start of every file (ISO 9660 needs 0x8006)
	tailSize = 512      // bytes kept from the end (VHD and DMG footers)
	maxName  = 80       // runes of one path element kept in reports
)

// errStop unwinds the walk once a limit finding has been recorded.
var errStop = errors.New("inspect: limit reached")

// Inspect walks msg (an RFC 5322 message, CRLF or LF) and every file in it, and returns
// the findings and the verdict under the Inspector's policy. It never fails: what it
// cannot read is a finding (CodeUnchecked), what would pass a limit is a finding that
// refuses the message.
func (in *Inspector) Inspect(msg []byte) Report {
	w := &walker{in: in}
	w.entity(msg, "", "", 0)
	return w.report()
}

// report returns the report.
func (w *walker) report() Report { return w.rep }

// walker is the state of one inspection.
type walker struct {
	in      *Inspector
	rep     Report
	stopped bool
	drainB  []byte          // drain buffer, reused (drain does not recurse)
	tail    [tailSize]byte  // the last bytes drained
	flates  []io.ReadCloser // idle flate readers, reused
}

// maxFindings bounds the findings kept: past it, a refusing finding ends the walk (the
// verdict cannot change any more) and a flag is kept only when its code and token are
// new, so Headers stay exact.
const maxFindings = 100

// add records a finding, deciding under the policy whether it refuses the message, and
// updates the verdict.
func (w *walker) add(f Finding) {
	switch f.Code {
	case CodeMacro, CodeActive:
		f.Refuses = w.in.refMacro
	case CodeUnchecked:
		f.Refuses = w.in.refUncheck
	default:
		f.Refuses = true
	}
	r := &w.rep
	switch {
	case f.Refuses:
		r.Verdict = Refuse
	case r.Verdict == Refuse:
	case f.Code == CodeUnchecked:
		r.Verdict |= FlagUnchecked
	default:
		r.Verdict |= FlagMacro
	}
	if len(r.Findings) >= maxFindings {
		if !f.Refuses && w.seen(f) {
			return
		}
		if r.Verdict == Refuse {
			r.Truncated, w.stopped = true, true
		}
	}
	r.Findings = append(r.Findings, f)
}

// seen reports a finding with f's code and token among those kept.
func (w *walker) seen(f Finding) bool {
	for _, g := range w.rep.Findings {
		if g.Code == f.Code && g.Why == f.Why {
			return true
		}
	}
	return false
}

// limit records a limit finding and stops the walk.
func (w *walker) limit(c Code, path string) {
	if w.stopped {
		return
	}
	w.stopped = true
	l := w.in.lim
	var why string
	switch c {
	case CodeTooDeep:
		why = fmt.Sprintf("annidamento oltre %d livelli", l.MaxDepth)
	case CodeTooMany:
		why = fmt.Sprintf("più di %d parti o file", l.MaxParts)
	default:
		why = fmt.Sprintf("archivio che estratto supera %d MB", l.MaxExpanded>>20)
	}
	w.add(Finding{Code: c, Path: path, Reason: fmt.Sprintf("messaggio non consentito: %s (%s)", orMessage(path), why)})
}

func (w *walker) unchecked(path, why, detail string) {
	w.add(Finding{Code: CodeUnchecked, Path: path, Why: why,
		Reason: fmt.Sprintf("allegato non verificabile: %s (%s)", orMessage(path), detail)})
}

func (w *walker) macro(path string, c Code, detail string) {
	for _, g := range w.rep.Findings {
		if g.Code == c && (g.Path == path || strings.HasPrefix(path, g.Path+" > ")) {
			return // the document holding this part is already flagged
		}
	}
	what := "allegato con macro"
	if c == CodeActive {
		what = "allegato con contenuto attivo"
	}
	w.add(Finding{Code: c, Path: path, Reason: fmt.Sprintf("%s: %s (%s)", what, orMessage(path), detail)})
}

// enter checks the depth limit before descending into a container at depth.
func (w *walker) enter(depth int, path string) bool {
	if w.stopped {
		return false
	}
	if depth > w.in.lim.MaxDepth {
		w.limit(CodeTooDeep, path)
		return false
	}
	return true
}

// count counts one part or member against the limit.
func (w *walker) count(path string) bool {
	if w.stopped {
		return false
	}
	w.rep.Parts++
	if w.rep.Parts > w.in.lim.MaxParts {
		w.limit(CodeTooMany, path)
		return false
	}
	return true
}

// room is how many more bytes decompression may produce.
func (w *walker) room() int64 { return w.in.lim.MaxExpanded - w.rep.Expanded }

// file inspects one file: its names, then its content, from b when it is all in memory,
// else streamed from r (hint: its expected size, or 0). depth is the file's own level.
func (w *walker) file(path string, names []string, b []byte, r io.Reader, hint int64, depth int) {
	if w.stopped {
		return
	}
	s := &source{head: b, complete: b != nil, r: r, hint: hint}
	if !s.complete {
		var err error
		if s.head, s.complete, err = readHead(r, hint); w.failed(path, err) {
			return
		}
	}
	t := sniff(s.head)
	if t == "" && hasExt(names, "p7m") {
		t = sniffBase64CMS(s.head)
	}
	if w.forbidden(path, w.forbiddenExt(names), t) {
		return // nothing inside a refused file can change the verdict
	}
	if t == "" && hasExt(names, "eml") {
		t = TypeMessage
	}
	w.content(path, names, t, s, depth)
}

// content inspects a file by its type: containers are opened, the rest streamed through
// for the footer-only formats.
func (w *walker) content(path string, names []string, t Type, s *source, depth int) {
	switch t {
	case TypeGzip:
		w.gzip(path, names, s.stream(), depth)
	case TypeTar:
		w.tar(path, s.stream(), depth)
	case TypeRAR, Type7z, TypeCAB, TypeXZ, TypeBzip2, TypeZstd:
		w.unchecked(path, UncheckedUnsupported, "formato di "+typeText[t]+" non supportato")
	case TypePGP:
		w.unchecked(path, UncheckedEncrypted, "file cifrato")
	case TypeZip, TypeOLE2, TypePDF, TypeCMS, TypeMessage:
		data, err := s.all()
		if w.failed(path, err) {
			return
		}
		switch t {
		case TypeZip:
			w.zip(path, data, depth)
		case TypeOLE2:
			w.ole(path, data, depth)
		case TypePDF:
			w.pdf(path, data, depth)
		case TypeCMS:
			w.cms(path, names, data, depth)
		case TypeMessage:
			w.entity(data, path, "", depth+1)
		}
	default:
		tail := s.head[max(0, len(s.head)-tailSize):]
		if !s.complete {
			var err error
			if tail, err = w.drain(s.head, s.r); w.failed(path, err) {
				return
			}
		}
		w.forbidden(path, "", sniffTail(tail))
	}
}

// failed reports whether err ends the inspection of a file, recording it as damaged
// unless a limit stopped the walk.
func (w *walker) failed(path string, err error) bool {
	if err == nil {
		return false
	}
	if err != errStop && !w.stopped {
		w.unchecked(path, UncheckedDamaged, "file danneggiato")
	}
	return true
}

// source is a file's content: its head, and the reader of the rest unless complete.
type source struct {
	head     []byte
	complete bool
	r        io.Reader
	hint     int64
}

// all returns the whole content.
func (s *source) all() ([]byte, error) {
	if s.complete {
		return s.head, nil
	}
	return readRest(s.head, s.r, s.hint)
}

// stream returns the whole content as a stream, from the head.
func (s *source) stream() io.Reader {
	if s.complete {
		return bytes.NewReader(s.head)
	}
	return io.MultiReader(bytes.NewReader(s.head), s.r)
}

// forbidden records a forbidden finding when ext (a forbidden extension found in the
// name, shown as written, e.g. ".pdf.exe") or t is forbidden, and reports whether it did.
func (w *walker) forbidden(path, ext string, t Type) bool {
	byType := t != "" && w.in.types[t]
	if ext == "" && !byType {
		return false
	}
	f := Finding{Code: CodeForbidden, Path: path}
	var why string
	if ext != "" {
		f.Ext = strings.ToLower(ext[strings.LastIndexByte(ext, '.')+1:])
		why = "estensione " + clean(ext)
	}
	if byType {
		f.Type = t
		why = typeText[t] // what the content is says more than the name
	}
	f.Reason = fmt.Sprintf("allegato non consentito: %s (%s)", orMessage(path), why)
	w.add(f)
	return true
}

// readHead reads up to headSize bytes of r, and whether that is all of r. The hint only
// sizes the first allocation: a size an archive declares may be a lie, and the head must
// be read in full whatever it says.
func readHead(r io.Reader, hint int64) ([]byte, bool, error) {
	n := int64(headSize)
	if hint > 0 && hint < n {
		n = hint + 1 // one more, to see EOF without a second allocation
	}
	buf := make([]byte, n)
	k, err := io.ReadFull(r, buf)
	if err == nil && k < headSize {
		buf = append(buf, make([]byte, headSize-k)...)
		var m int
		m, err = io.ReadFull(r, buf[k:])
		k += m
	}
	switch err {
	case nil:
		return buf, false, nil
	case io.EOF, io.ErrUnexpectedEOF:
		return buf[:k], true, nil
	}
	return nil, false, err
}

// readRest reads the rest of r after head into one slice.
func readRest(head []byte, r io.Reader, hint int64) ([]byte, error) {
	size := int64(len(head)) * 2
	if hint > size && hint < 64<<20 {
		size = hint + 1
	}
	buf := make([]byte, len(head), size)
	copy(buf, head)
	for idle := 0; ; {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == nil && n == 0 {
			if idle++; idle > 100 {
				err = io.ErrNoProgress
			}
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err // what was read before the error, for callers that want it
		}
	}
}

// drain reads r to its end and returns the last tailSize bytes of head and r together.
func (w *walker) drain(head []byte, r io.Reader) ([]byte, error) {
	if w.drainB == nil {
		w.drainB = make([]byte, 32<<10)
	}
	t := copy(w.tail[:], head[max(0, len(head)-tailSize):])
	for idle := 0; ; {
		n, err := r.Read(w.drainB)
		if err == nil && n == 0 {
			if idle++; idle > 100 {
				return nil, io.ErrNoProgress
			}
		}
		if n >= tailSize {
			t = copy(w.tail[:], w.drainB[n-tailSize:n])
		} else if n > 0 {
			keep := min(t, tailSize-n)
			copy(w.tail[:], w.tail[t-keep:t])
			t = keep + copy(w.tail[keep:], w.drainB[:n])
		}
		if err == io.EOF {
			return w.tail[:t], nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// inflater counts what a decompressor produces against Limits.MaxExpanded.
type inflater struct {
	w    *walker
	path string
	r    io.Reader
}

func (x *inflater) Read(p []byte) (int, error) {
	if x.w.stopped {
		return 0, errStop
	}
	if room := x.w.room(); int64(len(p)) > room+1 {
		p = p[:max(room+1, 1)] // so the count passes the limit by one byte at most
	}
	n, err := x.r.Read(p)
	x.w.rep.Expanded += int64(n)
	if x.w.rep.Expanded > x.w.in.lim.MaxExpanded {
		x.w.limit(CodeBomb, x.path)
		return n, errStop
	}
	return n, err
}

// flate returns a raw DEFLATE reader over r, reusing an idle one; release it with unflate.
func (w *walker) flate(r io.Reader) io.ReadCloser {
	if n := len(w.flates); n > 0 {
		f := w.flates[n-1]
		w.flates = w.flates[:n-1]
		if f.(flate.Resetter).Reset(r, nil) == nil {
			return f
		}
	}
	return flate.NewReader(r)
}

func (w *walker) unflate(f io.ReadCloser) { w.flates = append(w.flates, f) }

// forbiddenExt returns the first name's forbidden extension, as written ("setup.exe" ->
// ".exe", "fattura.pdf.exe" -> ".pdf.exe"), or "". Windows drops trailing dots and spaces
// from names, so "setup.exe. " is an .exe; signature and compression wrappers are looked
// through ("setup.exe.p7m").
func (w *walker) forbiddenExt(names []string) string {
	for _, n := range names {
		n = baseName(n)
		if i := strings.IndexByte(n, 0); i >= 0 {
			n = n[:i] // C strings end there, and so do the names clients save
		}
		for {
			n = strings.TrimRightFunc(n, func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
			i := strings.LastIndexByte(n, '.')
			if i < 0 {
				break
			}
			e := strings.ToLower(n[i+1:])
			if w.in.exts[e] {
				if j := strings.LastIndexByte(n[:i], '.'); j >= 0 && i-j <= 5 && i-j > 1 {
					return n[j:] // a double extension, shown as such
				}
				return n[i:]
			}
			if !wrapperExt[e] {
				break
			}
			n = n[:i]
		}
	}
	return ""
}

// wrapperExt are extensions that wrap another file whose own name remains inside.
var wrapperExt = map[string]bool{"p7m": true, "gz": true, "tsd": true, "m7m": true}

func hasExt(names []string, ext string) bool {
	for _, n := range names {
		if i := strings.LastIndexByte(n, '.'); i >= 0 && strings.EqualFold(strings.TrimRight(n[i+1:], " ."), ext) {
			return true
		}
	}
	return false
}

// baseName drops directories, either slash.
func baseName(n string) string {
	return n[strings.LastIndexAny(n, `/\`)+1:]
}

// join appends one element to a path.
func join(path, name string) string {
	name = clean(name)
	if path == "" {
		return name
	}
	return path + " > " + name
}

// clean makes a name safe for a one-line report: control and bidi-override characters
// become '?', invalid UTF-8 is replaced, long names are cut in the middle.
func clean(s string) string {
	ok := utf8.ValidString(s) && utf8.RuneCountInString(s) <= maxName
	for _, r := range s {
		if !ok {
			break
		}
		ok = !unsafeRune(r)
	}
	if ok {
		return s
	}
	var rs []rune
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unsafeRune(r) {
			r = '?'
		}
		rs = append(rs, r)
	}
	if len(rs) > maxName {
		rs = append(append(rs[:maxName/2-1:maxName/2-1], '…'), rs[len(rs)-maxName/2:]...)
	}
	return string(rs)
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' ||
		'\u202a' <= r && r <= '\u202e' || '\u2066' <= r && r <= '\u2069' || r == '\u200e' || r == '\u200f'
}

// orMessage is how a reason names a path: "messaggio" for the message itself, and a
// path of many levels shortened in the middle, so the reason stays one readable line.
func orMessage(path string) string {
	const keep = 240
	switch n := utf8.RuneCountInString(path); {
	case path == "":
		return "messaggio"
	case n > keep:
		rs := []rune(path)
		return string(rs[:keep/3]) + " … " + string(rs[n-2*keep/3:])
	}
	return path
}
