package smime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// splitHeader splits an entity into its header section (with the empty line that ends it)
// and its body. Line ends may be CRLF or LF (LF-stored copies). An entity that starts with
// an empty line has no header fields (RFC 2045 §5.2 defaults apply).
func splitHeader(b []byte) (header, body []byte, err error) {
	switch {
	case bytes.HasPrefix(b, []byte("\r\n")):
		return b[:2], b[2:], nil
	case bytes.HasPrefix(b, []byte("\n")):
		return b[:1], b[1:], nil
	}
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return nil, nil, errors.New("no empty line after the header")
		}
		i += j + 1
		switch {
		case bytes.HasPrefix(b[i:], []byte("\r\n")):
			return b[:i+2], b[i+2:], nil
		case bytes.HasPrefix(b[i:], []byte("\n")):
			return b[:i+1], b[i+1:], nil
		}
	}
}

func readHeader(raw []byte) (textproto.Header, error) {
	return textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
}

// mediaType parses a Content-Type field; the type is lower-cased, parameter names too.
func mediaType(v string) (string, map[string]string, error) {
	if v == "" {
		return "text/plain", map[string]string{}, nil // RFC 2045 §5.2
	}
	mt, params, err := mime.ParseMediaType(v)
	if errors.Is(err, mime.ErrInvalidMediaParameter) && mt != "" {
		// Unquoted boundaries holding "=" (boundary=----=_Part_1) are common in the
		// wild though RFC 2045 §5.1 requires quotes; read such parameters leniently.
		return mt, lenientParams(v), nil
	}
	return mt, params, err
}

// lenientParams reads "; name=value" pairs: a quoted value runs to its closing quote, an
// unquoted one to the next ";". The first of duplicate names wins.
func lenientParams(v string) map[string]string {
	params := map[string]string{}
	_, s, _ := strings.Cut(v, ";")
	for s != "" {
		s = strings.TrimLeft(s, " \t\r\n;")
		eq := strings.IndexAny(s, "=;")
		if eq < 0 {
			break
		}
		if s[eq] == ';' { // a name without a value
			s = s[eq+1:]
			continue
		}
		k := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t\r\n")
		var val string
		if strings.HasPrefix(s, `"`) {
			val, s, _ = strings.Cut(s[1:], `"`)
			_, s, _ = strings.Cut(s, ";")
		} else {
			val, s, _ = strings.Cut(s, ";")
			val = strings.TrimSpace(val)
		}
		if _, dup := params[k]; k != "" && !dup {
			params[k] = val
		}
	}
	return params
}

// signedParts splits the body of a multipart/signed entity into its two body parts
// (RFC 1847 §2.1, RFC 2046 §5.1.1). Each part runs from after the line end of its
// delimiter line to before the line end that precedes the next delimiter: that line end
// belongs to the delimiter, not to the part. Line ends may be CRLF or LF.
// (Long on purpose: the RFC 2046 §5.1.1 boundary rules, byte-exact, in one scan.)
func signedParts(body []byte, boundary string) (first, second []byte, err error) {
	delim := []byte("--" + boundary)
	var starts, ends []int // content start of each part; start of the line end before each delimiter
	closed := false
	for pos := 0; pos <= len(body); {
		k := bytes.Index(body[pos:], delim)
		if k < 0 {
			break
		}
		d := pos + k
		pos = d + len(delim)
		if d > 0 && body[d-1] != '\n' {
			continue // not at the beginning of a line
		}
		rest := body[pos:]
		isClose := bytes.HasPrefix(rest, []byte("--"))
		if isClose {
			rest = rest[2:]
		}
		// transport-padding, then the line end (or the end of the body for the close delimiter)
		n := 0
		for n < len(rest) && (rest[n] == ' ' || rest[n] == '\t') {
			n++
		}
		eol := 0
		switch {
		case bytes.HasPrefix(rest[n:], []byte("\r\n")):
			eol = 2
		case bytes.HasPrefix(rest[n:], []byte("\n")):
			eol = 1
		case n == len(rest) && isClose:
		default:
			continue // "--boundary" followed by other text is not a delimiter
		}
		if len(starts) > 0 {
			e := d
			if e > 0 && body[e-1] == '\n' {
				e--
				if e > 0 && body[e-1] == '\r' {
					e--
				}
			}
			ends = append(ends, max(e, starts[len(starts)-1]))
		}
		if isClose {
			closed = true
			break
		}
		starts = append(starts, len(body)-len(rest)+n+eol)
		pos = starts[len(starts)-1]
	}
	switch {
	case len(starts) == 0:
		return nil, nil, fmt.Errorf("boundary %q not found", boundary)
	case !closed:
		return nil, nil, errors.New("close delimiter missing")
	case len(starts) != 2:
		// RFC 1847 §2.1: exactly two body parts.
		return nil, nil, fmt.Errorf("multipart/signed has %d body parts, want 2", len(starts))
	}
	return body[starts[0]:ends[0]], body[starts[1]:ends[1]], nil
}

// canonicalCRLF returns b with every bare LF turned into CRLF (RFC 5751 §3.1.1); b itself
// when it has none, so CRLF input is never copied.
func canonicalCRLF(b []byte) []byte {
	bare := 0
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || b[i-1] != '\r' {
			bare++
		}
		i++
	}
	if bare == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+bare)
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return append(out, b[i:]...)
		}
		out = append(out, b[i:i+j]...)
		if i+j == 0 || b[i+j-1] != '\r' {
			out = append(out, '\r')
		}
		out = append(out, '\n')
		i += j + 1
	}
}

// decodeTransfer undoes the Content-Transfer-Encoding of the signature part or of an opaque
// body: base64 (RFC 5751 §3.1.3 requires it for 7-bit transports) or binary/8bit as is.
func decodeTransfer(cte string, body []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		// encoding/base64 skips CR and LF itself; only other white space needs a copy.
		if bytes.ContainsAny(body, " \t") {
			clean := make([]byte, 0, len(body))
			for _, c := range body {
				if c != ' ' && c != '\t' {
					clean = append(clean, c)
				}
			}
			body = clean
		}
		out := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
		n, err := base64.StdEncoding.Decode(out, body)
		if err != nil {
			return nil, fmt.Errorf("bad base64: %v", err)
		}
		return out[:n], nil
	case "binary", "8bit":
		return body, nil
	default:
		return nil, fmt.Errorf("unsupported Content-Transfer-Encoding %q for CMS data", cte)
	}
}
