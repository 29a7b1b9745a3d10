package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec/igpec"
)

func init() {
	register(command{name: "index", summary: "look up, dump, sync and export the PEC providers index (IGPEC)", run: runIndex})
}

const indexUsage = `usage:
  pecctl index lookup (-config FILE | -source SRC [-trust-anchor PEM]) [-cached] DOMAIN
  pecctl index lookup (-config FILE | -source SRC ...) -cert FILE | -hash HEX
      is DOMAIN certified, and by which provider; which record owns a signer certificate
      (PEM or DER) or a providerCertificateHash. Exit 0 when found, 1 when not.
  pecctl index dump (-config FILE | -source SRC [-trust-anchor PEM]) [-cached]
      the accepted records as LDIF on stdout; rejected records and warnings on stderr
  pecctl index sync (-config FILE | -source SRC -cache FILE)
      one refresh from the source; prints what changed against the cache and rewrites it
  pecctl index export -config FILE [-o OUT] [-url URL] [-description TEXT]
                      [-sign [-key KEY.pem] -o OUT.ldif.p7m]
      this provider's record as LDIF (provider: name, domains, receipt_address; certificate
      from signer:); with -sign, the signed .ldif.p7m (CMS SignedData, DER) the central index
      collects, signed by the configured signer (HSM) or by the PEM key -key

SRC is ldap://host:port/o=postacert, ldaps://..., a .ldif file or a signed .ldif.p7m.
-cached reads the local copy (index.cache) instead of the source. index.cache is read as the
daemons read it: unset, providers-index.ldif next to a SQLite store.dsn (else in
/var/lib/gestore); "off", no local copy.
`

func runIndex(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, indexUsage)
		return 2
	}
	switch args[0] {
	case "lookup":
		return indexLookup(args[1:], stdout, stderr)
	case "dump":
		return indexDump(args[1:], stdout, stderr)
	case "sync":
		return indexSync(args[1:], stdout, stderr)
	case "export":
		return indexExport(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, indexUsage)
	return 2
}

// indexFile is the configuration pecctl index reads: its provider, signer and index sections.
type indexFile = config.Config

func readIndexFile(path string) (*indexFile, error) { return config.Decode(path) }

// sourceFlags are the flags that name where the index comes from.
type sourceFlags struct {
	config, source, anchor, cache *string
	cached                        *bool
}

func addSourceFlags(fs *flag.FlagSet) sourceFlags {
	return sourceFlags{
		config: fs.String("config", "", "configuration `file` (its index: section)"),
		source: fs.String("source", "", "index source: ldap://host:port/o=postacert, .ldif or .ldif.p7m"),
		anchor: fs.String("trust-anchor", "", "PEM `file` of CA certificates for a .ldif.p7m source"),
		cache:  fs.String("cache", "", "local copy `file` (overrides index.cache)"),
		cached: fs.Bool("cached", false, "read the local copy (index.cache) instead of the source"),
	}
}

func (sf sourceFlags) indexConfig() (igpec.Config, error) {
	var cfg igpec.Config
	if *sf.config != "" {
		f, err := readIndexFile(*sf.config)
		if err != nil {
			return cfg, err
		}
		cfg = f.Index
	}
	if *sf.source != "" {
		cfg.Source = *sf.source
	}
	if *sf.anchor != "" {
		cfg.TrustAnchor = *sf.anchor
	}
	if *sf.cache != "" {
		cfg.Cache = *sf.cache
	}
	if cfg.Source == "" && !*sf.cached {
		return cfg, errors.New("no source: give -config or -source")
	}
	if *sf.cached && cfg.Cache == "" {
		return cfg, errors.New("-cached needs index.cache or -cache")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = igpec.DefaultTimeout
	}
	return cfg, nil
}

// snapshot loads the index once, from the source or (-cached) from the local copy. It never
// writes the cache: only sync (and the daemons) do.
func (sf sourceFlags) snapshot() (*igpec.Snapshot, error) {
	cfg, err := sf.indexConfig()
	if err != nil {
		return nil, err
	}
	if *sf.cached {
		return igpec.ReadCache(cfg.Cache)
	}
	src, err := igpec.NewSource(cfg, os.Getenv)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	return igpec.LoadSnapshot(ctx, src, time.Now())
}

// parseInterleaved parses flags that may come before and after positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// (Long on purpose: flag parsing and the report of one command.)
func indexLookup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("index lookup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSourceFlags(fs)
	certFile := fs.String("cert", "", "signer certificate `file` (PEM or DER)")
	hash := fs.String("hash", "", "providerCertificateHash (hex SHA-1, any case)")
	pos, err := parseInterleaved(fs, args)
	modes := len(pos)
	if *certFile != "" {
		modes++
	}
	if *hash != "" {
		modes++
	}
	if err != nil || modes != 1 || len(pos) > 1 {
		fmt.Fprint(stderr, indexUsage)
		return 2
	}
	snap, err := sf.snapshot()
	if err != nil {
		fmt.Fprintln(stderr, "pecctl index lookup:", err)
		return 1
	}
	switch {
	case len(pos) == 1:
		r, ok := snap.DomainRecord(pos[0])
		if !ok {
			fmt.Fprintf(stdout, "%s: not certified (esterno)\n", pos[0])
			return 1
		}
		fmt.Fprintf(stdout, "%s: certified\n", pos[0])
		printRecord(stdout, r)
	case *certFile != "":
		der, err := readCertDER(*certFile)
		if err != nil {
			fmt.Fprintln(stderr, "pecctl index lookup:", err)
			return 1
		}
		r, ok := snap.Signer(der, "")
		if !ok {
			h := igpec.CertificateHash(der)
			if rs := snap.ByHash(h); len(rs) > 0 {
				fmt.Fprintf(stdout, "SHA-1 %s is listed by %s but the certificate differs: not a provider signature\n", h, rs[0])
			} else {
				fmt.Fprintf(stdout, "SHA-1 %s: no provider in the index\n", h)
			}
			return 1
		}
		printRecord(stdout, r)
	default:
		rs := snap.ByHash(*hash)
		if len(rs) == 0 {
			fmt.Fprintf(stdout, "%s: no provider in the index\n", *hash)
			return 1
		}
		for i, r := range rs {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printRecord(stdout, r)
		}
	}
	return 0
}

func printRecord(w io.Writer, r *igpec.Record) {
	fmt.Fprintf(w, "  provider     %s\n", r.Name)
	if r.Unit != "" {
		fmt.Fprintf(w, "  unit         %s\n", r.Unit)
	}
	fmt.Fprintf(w, "  dn           %s\n", r.DN)
	fmt.Fprintf(w, "  mailReceipt  %s\n", r.MailReceipt)
	fmt.Fprintf(w, "  domains      %s\n", strings.Join(r.Domains, ", "))
	for i, c := range r.Certificates {
		fmt.Fprintf(w, "  certificate  %s  %s  until %s\n", r.Hashes[i], c.Subject, c.NotAfter.UTC().Format("2006-01-02"))
	}
	if r.LDIFLocationURL != "" {
		fmt.Fprintf(w, "  ldif         %s\n", r.LDIFLocationURL)
	}
}

func readCertDER(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	if _, err := x509.ParseCertificate(b); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return b, nil
}

func printRejected(w io.Writer, snap *igpec.Snapshot) {
	for _, r := range snap.Rejected {
		fmt.Fprintf(w, "rejected: %s\n", r)
	}
	for _, m := range snap.Warnings {
		fmt.Fprintf(w, "warning: %s\n", m)
	}
}

func indexDump(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("index dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSourceFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, indexUsage)
		return 2
	}
	snap, err := sf.snapshot()
	if err != nil {
		fmt.Fprintln(stderr, "pecctl index dump:", err)
		return 1
	}
	fmt.Fprintf(stdout, "# source: %s\n# loaded: %s\n# records: %d, domains: %d, rejected: %d\n",
		snap.Source, snap.Loaded.UTC().Format(time.RFC3339), len(snap.Records), snap.Domains(), len(snap.Rejected))
	if err := igpec.WriteLDIF(stdout, snap.Records); err != nil {
		fmt.Fprintln(stderr, "pecctl index dump:", err)
		return 1
	}
	printRejected(stderr, snap)
	return 0
}

func indexSync(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("index sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := addSourceFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *sf.cached {
		fmt.Fprint(stderr, indexUsage)
		return 2
	}
	cfg, err := sf.indexConfig()
	if err == nil && cfg.Cache == "" {
		err = errors.New("sync needs a local copy to compare and write: index.cache or -cache")
	}
	if err != nil {
		fmt.Fprintln(stderr, "pecctl index sync:", err)
		return 1
	}
	prev, err := igpec.ReadCache(cfg.Cache)
	if err != nil && !errors.Is(err, igpec.ErrNoCache) {
		fmt.Fprintf(stderr, "pecctl index sync: the current local copy is unreadable (%v); it will be replaced\n", err)
	}
	snap, err := sf.snapshot()
	if err != nil {
		fmt.Fprintln(stderr, "pecctl index sync: refresh failed, local copy unchanged:", err)
		return 1
	}
	if err := igpec.WriteCache(cfg.Cache, snap); err != nil {
		fmt.Fprintln(stderr, "pecctl index sync:", err)
		return 1
	}
	ch := igpec.Compare(prev, snap)
	fmt.Fprintf(stdout, "synced %s -> %s: %d records, %d domains, %d rejected\n",
		snap.Source, cfg.Cache, len(snap.Records), snap.Domains(), len(snap.Rejected))
	if prev == nil {
		fmt.Fprintln(stdout, "no previous local copy")
	}
	if ch.Empty() && prev != nil {
		fmt.Fprintln(stdout, "no change")
	}
	for _, l := range []struct {
		what string
		list []string
	}{{"added", ch.Added}, {"removed", ch.Removed}, {"changed", ch.Changed},
		{"domain added", ch.DomainsAdded}, {"domain removed", ch.DomainsRemoved}} {
		for _, v := range l.list {
			fmt.Fprintf(stdout, "%s: %s\n", l.what, v)
		}
	}
	printRejected(stdout, snap)
	return 0
}

func indexExport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("index export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file` (provider: and signer: sections)")
	out := fs.String("o", "", "output `file` (default stdout; required with -sign)")
	url := fs.String("url", "", "LDIFLocationURL: where the signed LDIF will be published")
	desc := fs.String("description", "", "description of the record")
	sign := fs.Bool("sign", false, "write the signed .ldif.p7m instead of the LDIF")
	keyFile := fs.String("key", "", "PEM private `key` to sign with (default: the configured signer)")
	if err := fs.Parse(args); err != nil || *config == "" || fs.NArg() > 0 || (*sign && *out == "") || (*keyFile != "" && !*sign) {
		fmt.Fprint(stderr, indexUsage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "pecctl index export:", err)
		return 1
	}
	f, err := readIndexFile(*config)
	if err != nil {
		return fail(err)
	}
	rec, chain, err := ownRecord(f, *url, *desc)
	if err != nil {
		return fail(err)
	}
	var ldif bytes.Buffer
	if err := igpec.WriteLDIF(&ldif, []*igpec.Record{rec}); err != nil {
		return fail(err)
	}
	data := ldif.Bytes()
	if *sign {
		key, signChain, closeFn, err := exportSigner(f, *keyFile, chain)
		if err != nil {
			return fail(err)
		}
		defer closeFn()
		if data, err = igpec.SignLDIF(data, key, signChain); err != nil {
			return fail(err)
		}
	}
	if *out == "" {
		_, err = stdout.Write(data)
	} else {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// ownRecord builds this provider's record from the configuration, validated the way every
// other provider will validate it when loading the index.
func ownRecord(f *indexFile, url, desc string) (*igpec.Record, []*x509.Certificate, error) {
	p := f.Provider
	if p.Name == "" || len(p.Domains) == 0 || p.ReceiptAddress == "" {
		return nil, nil, errors.New("provider.name, provider.domains and provider.receipt_address are required")
	}
	if f.Signer.Certificate == "" {
		return nil, nil, errors.New("signer.certificate is required")
	}
	chain, err := hsm.ReadChain(f.Signer.Certificate)
	if err != nil {
		return nil, nil, err
	}
	certs := []*x509.Certificate{chain[0]}
	// Per-domain keys (signer.keys) have their own certificates: all are the provider's.
	for _, k := range f.Signer.Keys {
		if k.Certificate == "" {
			continue
		}
		c, err := hsm.ReadChain(k.Certificate)
		if err != nil {
			return nil, nil, err
		}
		certs = append(certs, c[0])
	}
	rec, err := igpec.NewRecord(p.Name, "", p.ReceiptAddress, certs, p.Domains...)
	if err != nil {
		return nil, nil, fmt.Errorf("the record would be rejected by the index: %v", err)
	}
	rec.LDIFLocationURL, rec.Description = url, desc
	return rec, chain, nil
}

// exportSigner returns the key that signs the .ldif.p7m: a PEM key file with the configured
// certificate chain, or the configured signer (PKCS#11 token or pem_key) through hsm.
func exportSigner(f *indexFile, keyFile string, chain []*x509.Certificate) (crypto.Signer, []*x509.Certificate, func(), error) {
	if keyFile != "" {
		key, err := hsm.ReadPEMKey(keyFile)
		if err != nil {
			return nil, nil, nil, err
		}
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(chain[0].PublicKey) {
			return nil, nil, nil, fmt.Errorf("%s does not match the certificate in signer.certificate", keyFile)
		}
		return key, chain, func() {}, nil
	}
	keys, err := hsm.New(f.Signer, hsm.Deps{
		Provider: f.Provider.HSM(),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	// The record is the provider's: its main identity signs it (the first of Identities, that
	// of the service address's domain), as the daemons sign what concerns no single domain.
	key, signChain, err := keys.SignerFor(f.Identities()[0].Domain)
	if err != nil {
		keys.Close()
		return nil, nil, nil, err
	}
	return key, signChain, func() { keys.Close() }, nil
}
