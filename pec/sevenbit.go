package pec

import (
	"bytes"
	"encoding/binary"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// SevenBit returns msg with every part that carries 8-bit octets re-encoded to a 7-bit
// transfer encoding, content unchanged (issue 12 item 12; RFC 6109 §4.3: every part of a PEC
// message must be 7-bit safe). Text parts become quoted-printable, others base64; a
// multipart or message/rfc822 whose parts were converted declares 7bit. A relay that
// downgrades 8-bit to 7-bit for a peer without 8BITMIME (RFC 6152; routine for ordinary
// recipients' MTAs) would otherwise re-encode postacert.eml and break the busta's signature.
// A message without 8-bit octets is returned as is (same slice, changed false), so the
// common case stays byte for byte. Header fields are never changed but the
// Content-Transfer-Encoding (and a MIME-Version added to a bare 8-bit message): non-ASCII
// header fields are refused by the formal checks before this runs.
func SevenBit(msg []byte) (out []byte, changed bool) {
	if !has8bit(msg) {
		return msg, false
	}
	return sevenBitEntity(msg, true, 0), true
}

// has8bit reports whether b has an octet above 127, eight octets at a time (issue 19: a
// 100 MB message is looked at several times).
func has8bit(b []byte) bool {
	for len(b) >= 32 {
		w := binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		if w&0x8080808080808080 != 0 {
			return true
		}
		b = b[32:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// sevenBitEntity converts one entity (header, empty line, body). top is the message itself
// (it may lack MIME-Version).
func sevenBitEntity(ent []byte, top bool, depth int) []byte {
	h, body, err := SplitHeader(ent)
	if err != nil || !has8bit(body) || depth > maxDepth {
		return ent
	}
	mt, params := "text/plain", map[string]string{}
	if v, ok := h.Get("Content-Type"); ok {
		if t, p, err := mime.ParseMediaType(v); err == nil {
			mt, params = t, p
		}
	}
	cte := "7bit"
	if v, ok := h.Get("Content-Transfer-Encoding"); ok {
		cte = strings.ToLower(strings.TrimSpace(v))
	}
	switch {
	case cte == "base64" || cte == "quoted-printable":
		return ent // already 7-bit by declaration; 8-bit octets there are not ours to fix
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		mp, ok := splitMultipart(body, params["boundary"])
		if !ok {
			return reencode(h, body, mt, top)
		}
		for i, p := range mp.parts {
			mp.parts[i] = sevenBitEntity(p, false, depth+1)
		}
		return withCTE(h, "7bit", top, mp.join())
	case mt == "message/rfc822":
		// RFC 2046 §5.2.1: message/rfc822 may not be base64 or quoted-printable; the
		// message inside is converted instead.
		return withCTE(h, "7bit", top, sevenBitEntity(body, false, depth+1))
	}
	return reencode(h, body, mt, top)
}

// reencode writes a leaf part's body quoted-printable (text) or base64 (anything else).
func reencode(h Header, body []byte, mt string, top bool) []byte {
	var b bytes.Buffer
	if strings.HasPrefix(mt, "text/") {
		w := quotedprintable.NewWriter(&b)
		w.Write(body) //nolint:errcheck // bytes.Buffer does not fail
		w.Close()
		enc := b.Bytes()
		if !bytes.HasSuffix(enc, []byte("\r\n")) && bytes.HasSuffix(body, []byte("\r\n")) {
			enc = append(enc, '\r', '\n')
		}
		return withCTE(h, "quoted-printable", top, enc)
	}
	base64Lines(&b, body)
	return withCTE(h, "base64", top, b.Bytes())
}

// withCTE writes h with Content-Transfer-Encoding set to cte (replacing the field or adding
// it last), MIME-Version added when a top-level message had none, then the body.
func withCTE(h Header, cte string, top bool, body []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(body) + 512)
	done, mimeVersion := false, false
	for _, f := range h {
		switch {
		case strings.EqualFold(f.Name, "Content-Transfer-Encoding"):
			if !done {
				b.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
				done = true
			}
			continue
		case strings.EqualFold(f.Name, "MIME-Version"):
			mimeVersion = true
		}
		b.Write(f.Raw)
	}
	if top && !mimeVersion {
		b.WriteString("MIME-Version: 1.0\r\n")
	}
	if !done {
		b.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}
