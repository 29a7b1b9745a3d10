package storeopen

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/pec/store"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]store.Config{
		"/var/lib/gestore/pec.db":    {Driver: "sqlite", DSN: "/var/lib/gestore/pec.db"},
		"sqlite:pec.db":              {Driver: "sqlite", DSN: "pec.db"},
		"postgres:host=db1 dbname=x": {Driver: "postgres", DSN: "host=db1 dbname=x"},
		"postgres://pec@db1,db2/pec": {Driver: "postgres", DSN: "postgres://pec@db1,db2/pec"},
		"postgresql://pec@db1/pec":   {Driver: "postgres", DSN: "postgresql://pec@db1/pec"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := Parse(""); err == nil {
		t.Error("empty location accepted")
	}
}

func TestOpen(t *testing.T) {
	s, err := Open(store.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "pec.db")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(store.Config{Driver: "mysql", DSN: "x"}, nil, nil); err == nil || !strings.Contains(err.Error(), "want sqlite or postgres") {
		t.Errorf("unknown driver: %v", err)
	}
	if _, err := Open(store.Config{Driver: "postgres", DSN: "postgres://nobody@127.0.0.1:1/x?connect_timeout=2"}, nil, nil); err == nil || !strings.Contains(err.Error(), "store.dsn") {
		t.Errorf("unreachable PostgreSQL: %v", err)
	}
}
