package pec

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding/ianaindex"
)

// charsetReader decodes RFC 2047 words in any charset IANA registers that golang.org/x/text
// knows (ISO-8859-x, Windows-125x, KOI8, Shift_JIS, GB18030, ...; issue 12 item 8: an
// "=?iso-8859-2?..." display name is an ordinary Polish or Czech sender, not an invalid
// address). UTF-8, ISO-8859-1 and US-ASCII never reach it: mime.WordDecoder decodes them
// itself.
func charsetReader(charset string, in io.Reader) (io.Reader, error) {
	enc, err := ianaindex.MIME.Encoding(strings.ToLower(strings.TrimSpace(charset)))
	if err != nil || enc == nil {
		return nil, fmt.Errorf("unsupported charset %q", charset)
	}
	return enc.NewDecoder().Reader(in), nil
}
