package config

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Size is a byte count written as a number with an optional unit: "30MB", "512 KiB",
// "100000". Decimal units (KB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) powers
// of 1024, so "30MB" is 30,000,000 bytes: the reading of the legal 30 MB limit (RFC 6109
// §3.1.1, pec-spec §7.1) that never exceeds the law.
type Size int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 30MB, 512KiB, 1000000)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d column %d: a size must be a scalar", n.Line, n.Column)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d column %d: %v", n.Line, n.Column, err)
	}
	*s = v
	return nil
}

func (s Size) String() string { return strconv.FormatInt(int64(s), 10) + "B" }
