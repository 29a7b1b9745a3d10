//go:build linux

package environ

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// scrub overwrites with NUL bytes the value of every NAME=value entry of names in the initial
// environment block, between env_start and env_end of /proc/self/stat (proc(5), fields 50
// and 51), written through /proc/self/mem.
func scrub(names []string) error {
	start, end, err := bounds()
	if err != nil {
		return err
	}
	mem, err := os.OpenFile("/proc/self/mem", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer mem.Close()
	block := make([]byte, end-start)
	if _, err := mem.ReadAt(block, start); err != nil {
		return fmt.Errorf("reading the environment block: %w", err)
	}
	for off := 0; off < len(block); {
		n := bytes.IndexByte(block[off:], 0)
		if n < 0 {
			n = len(block) - off
		}
		entry := block[off : off+n]
		for _, name := range names {
			if name != "" && bytes.HasPrefix(entry, []byte(name+"=")) {
				v := len(name) + 1
				if _, err := mem.WriteAt(make([]byte, n-v), start+int64(off+v)); err != nil {
					return fmt.Errorf("blanking %s in the environment block: %w", name, err)
				}
			}
		}
		off += n + 1
	}
	return nil
}

// bounds reads env_start and env_end from /proc/self/stat.
func bounds() (start, end int64, err error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if i < 0 || len(f) < 49 {
		return 0, 0, fmt.Errorf("/proc/self/stat: %d fields, want env_start and env_end", len(f)+2)
	}
	if start, err = strconv.ParseInt(f[47], 10, 64); err == nil {
		end, err = strconv.ParseInt(f[48], 10, 64)
	}
	if err != nil || end < start || end-start > 1<<24 {
		return 0, 0, fmt.Errorf("/proc/self/stat: env_start %s, env_end %s", f[47], f[48])
	}
	return start, end, nil
}
