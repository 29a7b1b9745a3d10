package store

// Config is the store section of the YAML configuration:
//
//	store: {driver: sqlite, dsn: /var/lib/gestore/pec.db}
//	store: {driver: postgres, dsn: "postgres://pec@db1,db2/pec?target_session_attrs=read-write"}
//
// Open it with sqlite.New (driver "sqlite", one node) or postgres.New (driver "postgres",
// several nodes sharing one database).
type Config struct {
	Driver string `yaml:"driver"` // "sqlite" or "postgres"
	DSN    string `yaml:"dsn"`    // sqlite: the database file path; postgres: a libpq URL or key=value string
}
