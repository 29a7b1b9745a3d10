package pec

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// recordingScanner keeps every stream it is given and reports "Test.Virus" for one that
// contains "VIRUS", or fails with err.
type recordingScanner struct {
	scans [][]byte
	err   error
}

func (s *recordingScanner) Scan(_ context.Context, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	s.scans = append(s.scans, b)
	if s.err != nil {
		return "", s.err
	}
	if bytes.Contains(b, []byte("VIRUS")) {
		return "Test.Virus", nil
	}
	return "", nil
}

// bustaShape is a busta's layout around a postacert.eml: text part, the message, daticert.xml
// and the signature, text carrying the given text.
func bustaShape(text string, postacert []byte) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/signed; boundary=\"s\"\r\n\r\n--s\r\n" +
		"Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\n" + text +
		"\r\n--m\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\n\r\n")
	b.Write(postacert)
	b.WriteString("\r\n--m\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\n\r\n<postacert/>\r\n--m--\r\n" +
		"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n--s--\r\n")
	return b.Bytes()
}

func message(size int, tail string) []byte {
	b := []byte("From: alice@pec-a.test\r\nSubject: big\r\n\r\n" + strings.Repeat("abcdefghi\r\n", size/11))
	return append(b, tail...)
}

// TestScanReceived: from splitScanFrom on, a busta is scanned as its postacert.eml alone and
// then as the busta without it, so every byte is scanned once and a virus in either is found;
// below it, or when the message is not a region of the busta, the busta is scanned whole.
func TestScanReceived(t *testing.T) {
	big, small := message(splitScanFrom+100, ""), message(1000, "")
	infected := message(splitScanFrom+100, "VIRUS\r\n")
	cases := []struct {
		name      string
		raw, part []byte
		scans     int
		virus     string
	}{
		{"small: whole", bustaShape("ciao", small), small, 1, ""},
		{"big: split", bustaShape("ciao", big), big, 2, ""},
		{"big, virus in postacert.eml", bustaShape("ciao", infected), infected, 1, "Test.Virus"},
		{"big, virus in the text part", bustaShape("VIRUS", big), big, 2, "Test.Virus"},
		{"big, not in the busta (decoded)", bustaShape("ciao", big), append([]byte(nil), message(splitScanFrom+200, "")...), 1, ""},
		// The text part repeats the message's first KiB; the real region comes after it, but
		// only the first occurrence is tried: scanned whole, slower, never less.
		{"big, first KiB repeated", bustaShape(string(big[:2000]), big), big, 1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := &recordingScanner{}
			e := &Engine{deps: Deps{Scanner: sc}}
			virus, scans, err := e.scanReceived(context.Background(), tc.raw, tc.part)
			if err != nil || virus != tc.virus || len(sc.scans) != tc.scans || scans != tc.scans {
				t.Fatalf("virus %q err %v after %d scans; want %q after %d", virus, err, len(sc.scans), tc.virus, tc.scans)
			}
			if tc.scans == 1 && tc.virus == "" && !bytes.Equal(sc.scans[0], tc.raw) {
				t.Error("a single scan that is not the whole busta")
			}
			if tc.scans == 2 {
				first, second := sc.scans[0], sc.scans[1]
				if !bytes.Equal(first, tc.part) {
					t.Error("the first scan is not postacert.eml")
				}
				i := bytes.Index(tc.raw, tc.part)
				if !bytes.Equal(second, append(append([]byte(nil), tc.raw[:i]...), tc.raw[i+len(tc.part):]...)) {
					t.Error("the second scan is not the busta without postacert.eml")
				}
				if len(first)+len(second) != len(tc.raw) {
					t.Errorf("scanned %d+%d bytes of %d", len(first), len(second), len(tc.raw))
				}
			}
		})
	}

	// clamd gives no verdict on the first scan: the error, and no second scan.
	sc := &recordingScanner{err: errors.New("clamd: connection refused")}
	e := &Engine{deps: Deps{Scanner: sc}}
	if _, _, err := e.scanReceived(context.Background(), bustaShape("ciao", big), big); err == nil || len(sc.scans) != 1 {
		t.Errorf("scanner failure: %v after %d scans", err, len(sc.scans))
	}
}
