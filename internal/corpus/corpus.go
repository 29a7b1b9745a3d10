// Package corpus locates the byte-exact copy of ../shared/corpus kept under testdata/corpus:
// real signed messages from real providers, the daticert DTD, and provider logs. Never rewrite
// those files; one changed byte breaks their signatures.
package corpus

import (
	"path/filepath"
	"runtime"
)

// Dir is the absolute path of testdata/corpus in this checkout.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("corpus: cannot locate source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "corpus")
}

// Path joins elements under Dir, for example Path("real", "aruba-2014-busta.eml").
func Path(elem ...string) string {
	return filepath.Join(append([]string{Dir()}, elem...)...)
}

// DTD is the daticert.xml DTD of the technical rules (pec-spec.md §5.1).
func DTD() string { return Path("jpec-server", "daticert.dtd") }
