package igpec

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Entry is one LDIF record (or one LDAP search result entry): a DN and its attribute values in
// the order they appeared. It is the common shape every source produces before records are
// validated.
type Entry struct {
	DN    string
	Line  int // line of the "dn:" in the LDIF; 0 for entries from LDAP
	Attrs []Attr
}

// Attr is one attribute value. Name is lower-cased; Options holds the attribute options in
// lower case (for example "binary" for "providerCertificate;binary").
type Attr struct {
	Name    string
	Options []string
	Value   []byte
}

// Values returns every value of the attribute name (lower case), whatever its options.
func (e *Entry) Values(name string) [][]byte {
	var vs [][]byte
	for _, a := range e.Attrs {
		if a.Name == name {
			vs = append(vs, a.Value)
		}
	}
	return vs
}

// LDIFError is a syntax error in an LDIF file, with the 1-based line it was found on.
type LDIFError struct {
	Line int
	Msg  string
}

func (e *LDIFError) Error() string { return fmt.Sprintf("ldif: line %d: %s", e.Line, e.Msg) }

// LDIFOptions controls what the parser may do beyond reading its input.
type LDIFOptions struct {
	// FileDir enables "attr:< file://..." values (RFC 2849 §4 url values). Only the file
	// scheme is accepted, and the file must lie inside FileDir after cleaning and resolving
	// symbolic links: a relative URL ("file:cert.der") is resolved against FileDir, an
	// absolute one ("file:///dir/cert.der") must name a file under FileDir. Empty (the
	// default) refuses every URL value: LDIF from LDAP, from a signed .p7m or from a cache
	// never refers to local files. Each file is limited to MaxURLFileSize bytes.
	FileDir string
}

// MaxURLFileSize bounds a value read through a file:// URL.
const MaxURLFileSize = 1 << 20

// maxLineLen bounds one logical (unfolded) LDIF line, so a hostile input cannot make the
// parser hold an unbounded line. A 16 KiB certificate is about 22 KiB of base64.
const maxLineLen = 1 << 20

// ParseLDIF reads an LDIF content file (RFC 2849): an optional "version: 1" line, comments,
// folded lines, "::" base64 values, "<" file URLs (see LDIFOptions), attribute options, and
// records with no changetype or "changetype: add". Any other change record, or any syntax
// error, fails the whole file with an *LDIFError carrying the line number: a syntactically
// broken index is a truncated or corrupted download, and the caller keeps its last good copy.
func ParseLDIF(r io.Reader, opts LDIFOptions) ([]Entry, error) {
	p := &ldifParser{opts: opts, lines: newLineReader(r)}
	return p.parse()
}

type ldifParser struct {
	opts  LDIFOptions
	lines *lineReader
}

func (p *ldifParser) parse() ([]Entry, error) {
	var entries []Entry
	first := true
	for {
		rec, err := p.lines.record()
		if err != nil {
			return nil, err
		}
		if rec == nil {
			return entries, nil
		}
		// RFC 2849: version-spec may only open the file, alone or before the first record.
		if first {
			first = false
			if name, val, ok := splitSimple(rec[0].text); ok && strings.EqualFold(name, "version") {
				if strings.TrimLeft(val, " ") != "1" {
					return nil, &LDIFError{rec[0].n, "unsupported LDIF version " + quote(val)}
				}
				rec = rec[1:]
				if len(rec) == 0 {
					continue
				}
			}
		}
		e, err := p.entry(rec)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
}

// entry turns the logical lines of one record into an Entry.
func (p *ldifParser) entry(rec []line) (Entry, error) {
	name, opts, val, err := p.attrval(rec[0])
	if err != nil {
		return Entry{}, err
	}
	if name != "dn" || len(opts) > 0 {
		return Entry{}, &LDIFError{rec[0].n, "record does not start with dn:"}
	}
	e := Entry{DN: string(val), Line: rec[0].n}
	for i, l := range rec[1:] {
		name, opts, val, err := p.attrval(l)
		if err != nil {
			return Entry{}, err
		}
		switch name {
		case "dn":
			return Entry{}, &LDIFError{l.n, "second dn: in one record (missing blank line?)"}
		case "control":
			return Entry{}, &LDIFError{l.n, "change records (control:) are not supported"}
		case "changetype":
			// RFC 2849: changetype follows the dn (and controls). Only "add" describes an
			// entry; modify, delete and modrdn are refused.
			if i != 0 || !strings.EqualFold(string(val), "add") {
				return Entry{}, &LDIFError{l.n, "unsupported changetype " + quote(string(val))}
			}
			continue
		}
		e.Attrs = append(e.Attrs, Attr{Name: name, Options: opts, Value: val})
	}
	return e, nil
}

// attrval parses "AttributeDescription value-spec" (RFC 2849 attrval-spec).
func (p *ldifParser) attrval(l line) (name string, opts []string, val []byte, err error) {
	i := strings.IndexByte(l.text, ':')
	if i < 0 {
		return "", nil, nil, &LDIFError{l.n, "missing ':' after attribute name"}
	}
	desc := l.text[:i]
	if name = knownAttr(desc); name == "" {
		parts := strings.Split(desc, ";")
		for j, part := range parts {
			if !validAttrType(part) {
				return "", nil, nil, &LDIFError{l.n, "bad attribute description " + quote(desc)}
			}
			parts[j] = strings.ToLower(part)
		}
		name = parts[0]
		if len(parts) > 1 {
			opts = parts[1:]
		}
	}
	rest := l.text[i+1:]
	switch {
	case strings.HasPrefix(rest, ":"):
		enc := strings.Trim(rest[1:], " ")
		b, derr := base64.StdEncoding.DecodeString(enc)
		if derr != nil {
			return "", nil, nil, &LDIFError{l.n, "bad base64 value of " + quote(desc)}
		}
		return name, opts, b, nil
	case strings.HasPrefix(rest, "<"):
		b, uerr := p.readURL(strings.Trim(rest[1:], " "))
		if uerr != nil {
			return "", nil, nil, &LDIFError{l.n, uerr.Error()}
		}
		return name, opts, b, nil
	default:
		// SAFE-STRING: leading FILL spaces are not part of the value. UTF-8 outside the
		// RFC's SAFE-CHAR range is accepted as written (a common, harmless laxity).
		return name, opts, []byte(strings.TrimLeft(rest, " ")), nil
	}
}

// readURL reads a file:// URL value within the limits of LDIFOptions.FileDir.
func (p *ldifParser) readURL(raw string) ([]byte, error) {
	if p.opts.FileDir == "" {
		return nil, errors.New("URL values are not allowed in this LDIF")
	}
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "file") {
		return nil, fmt.Errorf("only file: URLs are supported, got %s", quote(raw))
	}
	if u.Host != "" && !strings.EqualFold(u.Host, "localhost") {
		return nil, fmt.Errorf("file URL with a remote host %s", quote(u.Host))
	}
	base, err := filepath.EvalSymlinks(p.opts.FileDir)
	if err != nil {
		return nil, fmt.Errorf("file URL base directory: %w", err)
	}
	base, _ = filepath.Abs(base)
	var path string
	switch {
	case u.Opaque != "":
		path = filepath.Join(base, filepath.FromSlash(u.Opaque))
	case u.Path != "":
		path = filepath.Clean(filepath.FromSlash(u.Path))
	default:
		return nil, fmt.Errorf("empty file URL")
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if rel, err := filepath.Rel(base, path); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("file URL %s points outside the LDIF's directory", quote(raw))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("file URL %s: cannot open", quote(raw))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxURLFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("file URL %s: read error", quote(raw))
	}
	if len(b) > MaxURLFileSize {
		return nil, fmt.Errorf("file URL %s: file larger than %d bytes", quote(raw), MaxURLFileSize)
	}
	return b, nil
}

// knownNames are the attribute names of the index, interned so that parsing a large index
// does not allocate a lower-case copy of each name on each line.
var knownNames = []string{"dn", "objectclass", "providername", "providerunit", "providercertificatehash",
	"mailreceipt", "manageddomains", "ldiflocationurl", "description"}

// knownAttr returns the interned lower-case name when desc is one of knownNames (with no
// options), else "".
func knownAttr(desc string) string {
	for _, n := range knownNames {
		if len(n) == len(desc) && strings.EqualFold(n, desc) {
			return n
		}
	}
	return ""
}

// validAttrType accepts RFC 2849 attribute types and options: ldap-oid or a letter followed
// by letters, digits and '-'.
func validAttrType(s string) bool {
	if s == "" {
		return false
	}
	if s[0] >= '0' && s[0] <= '9' {
		for i := 0; i < len(s); i++ {
			if c := s[i]; (c < '0' || c > '9') && c != '.' {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '-')) {
			return false
		}
	}
	return true
}

func splitSimple(s string) (name, val string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i < 0 || strings.HasPrefix(s[i+1:], ":") || strings.HasPrefix(s[i+1:], "<") {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// line is one logical (unfolded) LDIF line and the physical line it started on.
type line struct {
	n    int
	text string
}

// lineReader splits input into records of logical lines: it unfolds continuation lines
// (RFC 2849: a line starting with one space continues the previous one), drops comments
// (including their continuations) and splits records on empty lines.
type lineReader struct {
	r   *bufio.Reader
	n   int // physical lines read
	eof bool
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// physical returns the next physical line without its line ending.
func (lr *lineReader) physical() (string, bool, error) {
	if lr.eof {
		return "", false, nil
	}
	var buf []byte
	for {
		chunk, err := lr.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxLineLen {
			return "", false, &LDIFError{lr.n + 1, "line too long"}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			lr.eof = true
			if len(buf) == 0 {
				return "", false, nil
			}
			break
		}
		if err != nil {
			return "", false, err
		}
		break
	}
	lr.n++
	buf = bytes.TrimSuffix(buf, []byte("\n"))
	buf = bytes.TrimSuffix(buf, []byte("\r"))
	return string(buf), true, nil
}

// record returns the logical lines of the next record, nil at the end of input.
func (lr *lineReader) record() ([]line, error) {
	var rec []line
	var cur []byte // the logical line being unfolded
	curN := 0
	flush := func() {
		if curN > 0 {
			rec = append(rec, line{n: curN, text: string(cur)})
			cur, curN = cur[:0], 0
		}
	}
	inComment := false
	for {
		s, ok, err := lr.physical()
		if err != nil {
			return nil, err
		}
		if !ok {
			flush()
			return rec, nil
		}
		switch {
		case s == "":
			inComment = false
			flush()
			if len(rec) > 0 {
				return rec, nil
			}
		case s[0] == ' ':
			if inComment {
				continue
			}
			if curN == 0 {
				return nil, &LDIFError{lr.n, "continuation line with nothing to continue"}
			}
			if len(cur)+len(s) > maxLineLen {
				return nil, &LDIFError{lr.n, "line too long"}
			}
			cur = append(cur, s[1:]...)
		case s[0] == '#':
			flush()
			inComment = true
		default:
			flush()
			inComment = false
			cur, curN = append(cur, s...), lr.n
		}
	}
}
