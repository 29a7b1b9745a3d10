//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// builds holds the programs the tests build, once per test binary and per (package, tags).
var builds struct {
	sync.Mutex
	dir  string
	done map[string]*built
}

type built struct {
	once sync.Once
	path string
	err  error
}

// goBinary builds the main package pkg (with the build tags, if any) once per test binary and
// returns its path. The directory is world-readable: peerprobe runs as other users.
func goBinary(t *testing.T, pkg string, tags ...string) string {
	t.Helper()
	b := build(pkg, tags)
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// goBinaries is goBinary for several main packages (no tags), built at the same time: the
// links of cgo programs dominate a warm build and run in parallel.
func goBinaries(t *testing.T, pkgs ...string) []string {
	t.Helper()
	out := make([]*built, len(pkgs))
	var wg sync.WaitGroup
	for i, pkg := range pkgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = build(pkg, nil)
		}()
	}
	wg.Wait()
	paths := make([]string, len(pkgs))
	for i, b := range out {
		if b.err != nil {
			t.Fatal(b.err)
		}
		paths[i] = b.path
	}
	return paths
}

// build builds pkg with tags once per test binary; safe for concurrent use.
func build(pkg string, tags []string) *built {
	key := pkg + " " + strings.Join(tags, ",")
	builds.Lock()
	if builds.done == nil {
		builds.done = map[string]*built{}
	}
	b := builds.done[key]
	if b == nil {
		b = &built{}
		builds.done[key] = b
	}
	builds.Unlock()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "pec-bin-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, path.Base(pkg))
		args := []string{"build", "-o", b.path}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		if out, err := exec.Command("go", append(args, pkg)...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	return b
}
