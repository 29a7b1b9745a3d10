package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestFileModes: the database, its -wal and -shm are created 0600 even under umask 000 (the
// lab starts pec-milter with it), and opening an existing world-readable database takes the
// others' permissions away (issue 12 item 10: the legal log, the raw receipts and the
// quarantined viruses are in it).
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "pec.db")
	s, err := Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ev := storetest.SampleEvent(1, storetest.T0)
	err = s.Commit(context.Background(), &store.Batch{Events: []store.Event{ev},
		Quarantine: []store.QuarantineItem{{Identificativo: ev.Identificativo, Time: storetest.T0, Virus: "EICAR", Sender: "a@x", Raw: []byte("virus")}}})
	if err != nil {
		t.Fatal(err)
	}
	checkModes(t, path, 0o600)

	s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Chmod(p, 0o664) //nolint:errcheck // the -wal and -shm may be gone after Close
	}
	s, err = Open(path, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Commit(context.Background(), &store.Batch{Events: []store.Event{storetest.SampleEvent(2, storetest.T0)}}); err != nil {
		t.Fatal(err)
	}
	checkModes(t, path, 0o660)
}

func checkModes(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Mode().Perm(); m != want {
			t.Errorf("%s: mode %04o, want %04o", filepath.Base(p), m, want)
		}
	}
}
