package smime

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestBERLimits(t *testing.T) {
	deep := append(bytes.Repeat([]byte{0x30, 0x80}, maxDepth+2), bytes.Repeat([]byte{0, 0}, maxDepth+2)...)
	cases := map[string][]byte{
		"too deep":             deep,
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
	// The work budget: 2000 elements under an indefinite length with room for 1000.
	wide := append([]byte{0x30, 0x80}, bytes.Repeat([]byte{0x04, 0x00}, 2000)...)
	wide = append(wide, 0, 0)
	if _, _, err := parseElement(wide, 0, &decoder{budget: 1000}); err == nil || !strings.Contains(err.Error(), "too complex") {
		t.Errorf("budget not enforced: %v", err)
	}
	if _, _, err := parseElement(wide, 0, &decoder{budget: 3000}); err != nil {
		t.Errorf("within budget: %v", err)
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
