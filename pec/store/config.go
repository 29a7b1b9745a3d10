package store

// Config is the store section of the YAML configuration:
//
//	store: {driver: sqlite, dsn: /var/lib/pec/pec.db}
//
// Open it with sqlite.Open (driver "sqlite"); a PostgreSQL driver will take the same shape.
type Config struct {
	Driver string `yaml:"driver"` // "sqlite"
	DSN    string `yaml:"dsn"`    // for sqlite: the database file path
}
