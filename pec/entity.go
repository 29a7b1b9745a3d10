package pec

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// Part is one MIME entity of a parsed message, with byte-exact header and body.
type Part struct {
	Path      string // position, e.g. "1.2" (1-based), "" for the top entity
	Header    Header
	Body      []byte // raw, still transfer-encoded
	MediaType string // lower case, "text/plain" when absent (RFC 2045 §5.2)
	Params    map[string]string
	Children  []*Part // for multipart/*
}

// Name is the file name (Content-Disposition filename, else Content-Type name).
func (p *Part) Name() string { return partName(p.Header) }

// Encoding is the lower-case Content-Transfer-Encoding ("7bit" when absent).
func (p *Part) Encoding() string {
	v, ok := p.Header.Get("Content-Transfer-Encoding")
	if !ok {
		return "7bit"
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// Decoded is the body with the transfer encoding removed.
func (p *Part) Decoded() ([]byte, error) {
	switch p.Encoding() {
	case "base64":
		return io.ReadAll(base64.NewDecoder(base64.StdEncoding, &noSpace{r: bytes.NewReader(p.Body)}))
	case "quoted-printable":
		return io.ReadAll(quotedprintable.NewReader(bytes.NewReader(p.Body)))
	}
	return p.Body, nil
}

// noSpace drops white space and line breaks from base64 input.
type noSpace struct{ r io.Reader }

func (n *noSpace) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	j := 0
	for _, c := range p[:k] {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			p[j] = c
			j++
		}
	}
	return j, err
}

// maxDepth bounds MIME nesting against hostile input.
const maxDepth = 20

// ParseEntity parses a CRLF MIME entity into a tree of parts. message/rfc822 parts are not
// descended into. Unparsable multipart bodies become leaves.
func ParseEntity(ent []byte) (*Part, error) {
	return parseEntity(ent, "", 0)
}

func parseEntity(ent []byte, path string, depth int) (*Part, error) {
	h, body, err := SplitHeader(ent)
	if err != nil {
		return nil, err
	}
	p := &Part{Path: path, Header: h, Body: body, MediaType: "text/plain", Params: map[string]string{}}
	if v, ok := h.Get("Content-Type"); ok {
		if mt, params, err := mime.ParseMediaType(v); err == nil {
			p.MediaType, p.Params = mt, params
		} else if mt, _, _ := strings.Cut(v, ";"); mt != "" {
			p.MediaType = strings.ToLower(strings.TrimSpace(mt))
		}
	}
	if !strings.HasPrefix(p.MediaType, "multipart/") || p.Params["boundary"] == "" || depth >= maxDepth {
		return p, nil
	}
	mp, ok := splitMultipart(body, p.Params["boundary"])
	if !ok {
		return p, nil
	}
	for i, raw := range mp.parts {
		cp := path
		if cp != "" {
			cp += "."
		}
		cp += itoa(i + 1)
		c, err := parseEntity(raw, cp, depth+1)
		if err != nil {
			return nil, err
		}
		p.Children = append(p.Children, c)
	}
	return p, nil
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
