// Package storeopen opens the store a configuration names, for the daemons, pecctl and the
// tests: the one place that knows every driver.
package storeopen

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

// Open opens the store cfg names: sqlite (one node) or postgres (several nodes sharing one
// database). log and reg may be nil.
func Open(cfg store.Config, log *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	switch cfg.Driver {
	case "sqlite":
		return sqlite.New(cfg, sqlite.Deps{Logger: log, Registerer: reg})
	case "postgres":
		return postgres.New(cfg, postgres.Deps{Logger: log, Registerer: reg})
	default:
		return nil, fmt.Errorf("config: store.driver: %q: want sqlite or postgres", cfg.Driver)
	}
}

// Parse reads a store location given on a command line: "sqlite:PATH", "postgres:DSN", a
// postgres:// or postgresql:// URL, or a bare path (SQLite).
func Parse(s string) (store.Config, error) {
	switch {
	case s == "":
		return store.Config{}, fmt.Errorf("empty store location (want sqlite:PATH or postgres:DSN)")
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		return store.Config{Driver: "postgres", DSN: s}, nil
	case strings.HasPrefix(s, "postgres:"):
		return store.Config{Driver: "postgres", DSN: strings.TrimPrefix(s, "postgres:")}, nil
	case strings.HasPrefix(s, "sqlite:"):
		return store.Config{Driver: "sqlite", DSN: strings.TrimPrefix(s, "sqlite:")}, nil
	}
	return store.Config{Driver: "sqlite", DSN: s}, nil
}
