package main

import (
	"os"
	"testing"

	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
)

// TestMain stops the PostgreSQL cluster the log and stats tests start on first use
// (pgtest.Shared).
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}
