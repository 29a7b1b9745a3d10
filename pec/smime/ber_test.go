package smime

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestBERLimits(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x30, 0x80}, maxDepth+2), bytes.Repeat([]byte{0, 0}, maxDepth+2)...)
	wide := append([]byte{0x30, 0x80}, bytes.Repeat([]byte{0x04, 0x00}, maxElements/2+10)...)
	wide = append(wide, 0, 0)
	cases := map[string][]byte{
		"too deep":             deep,
		"too many elements":    wide,
		"indefinite primitive": {0x04, 0x80, 0, 0},
		"truncated":            {0x30, 0x05, 0x02, 0x01},
		"long length":          {0x30, 0x85, 1, 0, 0, 0, 0},
		"no end-of-contents":   {0x30, 0x80, 0x02, 0x01, 0x01},
		"trailing data":        {0x30, 0x00, 0x00},
	}
	for name, b := range cases {
		_, err := parseSignedData(b)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	_, err := parseSignedData(wide)
	if !strings.Contains(err.Error(), "too complex") {
		t.Errorf("budget not enforced: %v", err)
	}
}

func TestBERConstructedOctets(t *testing.T) {
	d := &decoder{budget: 100}
	// [OCTET STRING (indefinite) { "ab", OCTET STRING { "c" }, "de" }]
	b := []byte{0x24, 0x80, 0x04, 0x02, 'a', 'b', 0x24, 0x03, 0x04, 0x01, 'c', 0x04, 0x02, 'd', 'e', 0, 0}
	e, rest, err := parseElement(b, 0, d)
	if err != nil || len(rest) != 0 {
		t.Fatal(err, rest)
	}
	v, err := e.octets(0)
	if err != nil || string(v) != "abcde" {
		t.Fatalf("%q %v", v, err)
	}
}
