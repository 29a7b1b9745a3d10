package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
)

func (f *logFile) sealer(st store.Store, withSigner bool) (*seal.Sealer, func(), error) {
	d := seal.Deps{Store: st, Provider: f.Provider.Name, Location: f.loc, Logger: slog.New(slog.DiscardHandler)}
	// The log is the provider's, not one domain's: the main identity seals it, as in pec-milter.
	if ids := f.Identities(); len(ids) > 0 {
		d.Domain = ids[0].Domain
	}
	closer := func() {}
	if withSigner {
		if d.Domain == "" {
			return nil, nil, errors.New("provider.domains: needed to pick the signing key")
		}
		k, err := hsm.New(f.Signer, hsm.Deps{Provider: f.Provider.HSM(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, nil, err
		}
		d.Keyring, closer = k, func() { k.Close() }
	}
	var cfg seal.Config
	if f.Seal != nil {
		cfg = *f.Seal
	}
	s, err := seal.New(cfg, d)
	if err != nil {
		closer()
		return nil, nil, err
	}
	return s, closer, nil
}

func logSeal(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("log seal", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file`")
	db := fs.String("db", "", "store `location`: sqlite:PATH, postgres:DSN, a postgres:// URL or a SQLite path (overrides store:)")
	day := fs.String("day", "", "the local `day` to seal, YYYY-MM-DD")
	due := fs.Bool("due", false, "seal every day that is over and not sealed yet")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || (*day == "") == !*due {
		fmt.Fprint(stderr, logUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "pecctl log seal:", err); return 1 }
	f, err := readLogFile(*config, *db)
	if err != nil {
		return fail(err)
	}
	st, err := f.open()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	s, closeKeys, err := f.sealer(st, true)
	if err != nil {
		return fail(err)
	}
	defer closeKeys()
	days := []string{*day}
	if *due {
		if days, err = s.SealDue(context.Background()); err != nil {
			return fail(err)
		}
	} else if _, err := s.Seal(context.Background(), *day); err != nil {
		return fail(err)
	}
	for _, d := range days {
		x, err := st.GetSeal(context.Background(), d)
		if err != nil {
			return fail(err)
		}
		ef, pf, tf := s.Files(d)
		fmt.Fprintf(stdout, "sealed %s: %d events (seq %d-%d), sha256 %x\n  %s\n  %s\n  %s\n", d, x.Count, x.FirstSeq, x.LastSeq, x.Hash, ef, pf, tf)
	}
	return 0
}

func logVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("log verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file`")
	db := fs.String("db", "", "store `location`: sqlite:PATH, postgres:DSN, a postgres:// URL or a SQLite path (overrides store:)")
	day := fs.String("day", "", "the sealed `day`, YYYY-MM-DD")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *day == "" {
		fmt.Fprint(stderr, logUsage)
		return 2
	}
	fail := func(err error) int { fmt.Fprintln(stderr, "pecctl log verify:", err); return 1 }
	f, err := readLogFile(*config, *db)
	if err != nil {
		return fail(err)
	}
	st, err := f.open()
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	s, _, err := f.sealer(st, false)
	if err != nil {
		return fail(err)
	}
	r, err := s.Verify(context.Background(), *day)
	if err != nil {
		return fail(err)
	}
	if r.OK() {
		fmt.Fprintf(stdout, "%s: OK (%d events; chain, signature, timestamp and log content verified)\n", r.Day, r.Count)
		return 0
	}
	fmt.Fprintf(stdout, "%s: FAILED\n", r.Day)
	for _, p := range r.Problems {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	for _, x := range []struct {
		what string
		seqs []int64
	}{{"changed", r.Changed}, {"missing", r.Missing}, {"added", r.Added}} {
		if len(x.seqs) > 0 {
			fmt.Fprintf(stdout, "  events %s since the seal (seq): %v\n", x.what, x.seqs)
		}
	}
	return 1
}
