package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"

	"github.com/gestore-pec/gestore/pec/store/migrate"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
)

func init() {
	register(command{name: "store", summary: "migrate a single-node SQLite store to PostgreSQL", run: runStore})
}

const storeUsage = `usage:
  pecctl store migrate -from sqlite:PATH -to postgres:DSN
      copy every table of a SQLite store (the legal log with its sequence numbers and
      seals verbatim, tracking, outbox, quarantine, held steps, delivery records) into an
      empty PostgreSQL store, in one transaction, then read both back and compare every
      event and seal. Stop pec-milter and pec-lmtpd first; afterwards set
      store: {driver: postgres, dsn: ...} and check the seals with pecctl log verify.
`

func runStore(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "migrate" {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	fs := flag.NewFlagSet("store migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the SQLite store: sqlite:PATH")
	to := fs.String("to", "", "the empty PostgreSQL store: postgres:DSN or a postgres:// URL")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *from == "" || *to == "" {
		fmt.Fprint(stderr, storeUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "pecctl store migrate:", err); return 1 }
	src, err := storeopen.Parse(*from)
	if err != nil {
		return fail(fmt.Errorf("-from: %w", err))
	}
	dst, err := storeopen.Parse(*to)
	if err != nil {
		return fail(fmt.Errorf("-to: %w", err))
	}
	if src.Driver != "sqlite" || dst.Driver != "postgres" {
		return fail(fmt.Errorf("only sqlite to postgres is supported (got %s to %s)", src.Driver, dst.Driver))
	}
	rep, err := migrate.SQLiteToPostgres(context.Background(), src.DSN, dst.DSN)
	if err != nil {
		return fail(err)
	}
	names := make([]string, 0, len(rep.Rows))
	for n := range rep.Rows {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(stdout, "%-12s %d rows\n", n, rep.Rows[n])
	}
	fmt.Fprintf(stdout, "last sequence number %d; %d sealed days compared; every event compared: identical (%v)\n",
		rep.LastSeq, rep.Seals, rep.Elapsed.Round(1e6))
	return 0
}
