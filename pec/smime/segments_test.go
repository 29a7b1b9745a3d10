package smime

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// split cuts b at the given offsets (ascending) into segments, empty ones included.
func split(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, i := range at {
		out = append(out, b[prev:i])
		prev = i
	}
	return append(out, b[prev:])
}

// TestSignSegments: an entity signed in segments, cut anywhere (inside a CRLF, inside a
// line, with empty segments), gives the very bytes of the entity signed whole (RSA PKCS #1
// v1.5 is deterministic with the same signing time), and openssl verifies the message.
func TestSignSegments(t *testing.T) {
	sc := signers(t)[0]
	ent := testEntity(3000)
	crlf := bytes.Index(ent, []byte("\r\n"))
	opts := SignOptions{Boundary: "outer-boundary", SigningTime: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	ct0, head0, tail0, err := SignParts(ent, sc.signer, sc.chain, opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, segs := range map[string][][]byte{
		"inside a CRLF":  split(ent, crlf+1),
		"empty segments": split(ent, 0, 0, 10, 10, len(ent)),
		"many":           split(ent, 1, 2, 3, 500, 1500, crlf+1+1500, len(ent)-1),
	} {
		t.Run(name, func(t *testing.T) {
			if !bytes.Equal(bytes.Join(segs, nil), ent) {
				t.Fatal("bad split")
			}
			ct, head, tail, err := SignSegments(segs, sc.signer, sc.chain, opts)
			if err != nil {
				t.Fatal(err)
			}
			if ct != ct0 || !bytes.Equal(head, head0) || !bytes.Equal(tail, tail0) {
				t.Fatal("signed in segments, the message differs from the entity signed whole")
			}
			body := append(append(append([]byte(nil), head...), bytes.Join(segs, nil)...), tail...)
			if out, err := opensslVerify(t, message(ct, body), sc.ca.PEM(), noTime); err != nil {
				t.Fatalf("openssl: %v\n%s", err, out)
			}
		})
	}
}

// TestSignSegmentsRefuses: a bare LF or CR is found at a joint as within a segment, and so is
// the boundary split across segments (or at the very start of the entity).
func TestSignSegmentsRefuses(t *testing.T) {
	sc := signers(t)[0]
	opts := SignOptions{Boundary: "outer-boundary"}
	for name, segs := range map[string][][]byte{
		"bare LF at a joint":          {[]byte("a: b\r\n\r\ntext"), []byte("\nmore\r\n")},
		"bare CR at a joint":          {[]byte("a: b\r\n\r\ntext\r"), []byte("more\r\n")},
		"bare CR at the end":          {[]byte("a: b\r\n\r\ntext\r\n"), []byte("\r")},
		"boundary across three":       {[]byte("a: b\r\n\r\nx\r"), []byte("\n-"), []byte("-outer-bou"), []byte("ndary\r\n")},
		"boundary at the start":       {[]byte("--outer"), []byte("-boundary\r\n")},
		"boundary after an empty one": {[]byte("a: b\r\n\r\nx\r\n"), nil, []byte("--outer-boundary--\r\n")},
	} {
		if _, _, _, err := SignSegments(segs, sc.signer, sc.chain, opts); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	ok := [][]byte{[]byte("a: b\r\n\r\nx\r"), []byte("\n-"), []byte("-outer-bou"), []byte("nd\r\n")}
	if _, _, _, err := SignSegments(ok, sc.signer, sc.chain, opts); err != nil {
		t.Errorf("a canonical entity without the boundary was refused: %v", err)
	}
}

// TestSegmentsContain checks the joint search against strings.Contains on every way of
// cutting a short text in three.
func TestSegmentsContain(t *testing.T) {
	text := "ab--xyz--xy"
	for _, pat := range []string{"--xyz", "z--x", "y--xy", "--xyz--xy", "xyzz", "a", "--xy-"} {
		for i := 0; i <= len(text); i++ {
			for j := i; j <= len(text); j++ {
				segs := split([]byte(text), i, j)
				if got, want := SegmentsContain(segs, []byte(pat)), strings.Contains(text, pat); got != want {
					t.Errorf("%q in %q: %v, want %v", pat, segs, got, want)
				}
			}
		}
	}
}
