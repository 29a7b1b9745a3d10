package seal

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSealFileModes: under umask 000 (the lab starts pec-milter with it) the seal directory
// is 0750 and the sealed files 0440, also when a crash left a world-readable temporary file
// behind (issue 12 item 10: the export is the legal log of the day).
func TestSealFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	e := setup(t)
	ef, pf, tf := e.s.Files("2026-11-19")
	if err := os.MkdirAll(filepath.Dir(ef), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ef, pf, tf} {
		if err := os.WriteFile(f+".tmp", []byte("left by a crash"), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	e.sealDue(t)
	st, err := os.Stat(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o750 {
		t.Errorf("seal directory: mode %04o, want 0750", m)
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "PEC-*"))
	if len(files) != 6 {
		t.Fatalf("sealed files: %v, want 3 per day for 2 days", files)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Mode().Perm(); m != 0o440 {
			t.Errorf("%s: mode %04o, want 0440", filepath.Base(f), m)
		}
	}
}
