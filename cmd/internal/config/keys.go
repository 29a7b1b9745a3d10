package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var lineRe = regexp.MustCompile(`^line (\d+)(?: column (\d+))?: (.*)$`)

// decodeError turns a yaml.v3 error ("line 18: ...") into one that names the key at that line
// ("config: limits.max_size_times_recipients: ... (line 18)"), so that every configuration
// error names its key, even a malformed value caught by a section's UnmarshalYAML.
func decodeError(doc []byte, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("config: %s", msg)
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2]) // 0 when absent
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) == nil {
		var cands []candidate
		collect(&root, line, "", &cands)
		if key := pick(cands, col, m[3]); key != "" {
			return fmt.Errorf("config: %s: %s (line %d)", key, m[3], line)
		}
	}
	return fmt.Errorf("config: %s", msg)
}

type candidate struct {
	path     string
	key, val *yaml.Node
}

// collect gathers the mapping keys on line, innermost last.
func collect(n *yaml.Node, line int, prefix string, out *[]candidate) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			collect(c, line, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if k.Line == line {
				*out = append(*out, candidate{path, k, v})
			}
			collect(v, line, path, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			collect(c, line, fmt.Sprintf("%s[%d]", prefix, i), out)
		}
	}
}

// pick chooses the key an error is about: the one whose value is at col when the error has a
// column, else the one named in the message or whose value the message quotes, else the innermost scalar on the line.
func pick(cands []candidate, col int, msg string) string {
	if col > 0 {
		for _, c := range cands {
			if c.val.Column == col {
				return c.path
			}
		}
	}
	for _, c := range cands {
		if strings.Contains(msg, "field "+c.key.Value+" ") {
			return c.path
		}
	}
	for _, c := range cands {
		if c.val.Kind == yaml.ScalarNode && strings.Contains(msg, "`"+c.val.Value+"`") {
			return c.path
		}
	}
	for i := len(cands) - 1; i >= 0; i-- {
		if cands[i].val.Kind == yaml.ScalarNode {
			return cands[i].path
		}
	}
	return ""
}
