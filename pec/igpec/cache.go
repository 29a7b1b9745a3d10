package igpec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// WriteCache writes the accepted records of snap to path as LDIF, atomically: a temporary
// file in the same directory is written, synced and renamed over path, then the directory is
// synced, so a crash leaves either the old copy or the new one, never half of one. The file's
// modification time is set to snap.Loaded: ReadCache uses it as the age of the copy.
func WriteCache(path string, snap *Snapshot) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# PEC providers index: local copy (RFC 6109 §4.5)\n# source: %s\n# loaded: %s\n",
		snap.Source, snap.Loaded.UTC().Format(time.RFC3339))
	if err := WriteLDIF(&buf, snap.Records); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, snap.Loaded, snap.Loaded); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadCache loads a cache written by WriteCache. Its Loaded time is the file's modification
// time, the time of the load that produced it. It wraps ErrNoCache when the file is absent.
func ReadCache(path string) (*Snapshot, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoCache, path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	entries, err := ParseLDIF(f, LDIFOptions{})
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", path, err)
	}
	snap := Build(entries, "cache "+path, st.ModTime())
	if len(snap.Records) == 0 {
		return nil, fmt.Errorf("cache %s: no valid provider record", path)
	}
	return snap, nil
}
