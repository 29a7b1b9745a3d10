package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/inspect"
)

func init() {
	register(command{name: "verify", summary: "check PEC messages (ours or another provider's) against the rules", run: runVerify})
}

const verifyUsage = `usage: pecctl verify [--ca FILE]... [--index FILE | -config FILE] [--crl FILE|URL]...
                    [--ocsp] [--at TIME] [--json] [--strict] FILE...

Checks each message as a PEC conformance checker: the S/MIME signature (integrity; with
--ca, the certificate chain to those trust anchors at the message's signing time), the
headers against its kind, the subject prefix, the MIME layout, daticert.xml against the DTD
and its consistency with the headers, and the provider certificate profile.

With a providers index (--index, an LDIF file; or -config, the index: section of the
configuration, falling back to its cache) it also runs the reception point's checks of
RFC 6109 §7 (pec-spec.md §7.2): the signer certificate listed in the index (SHA-1, then byte
for byte), the From domain and the certified sender's domain managed by that provider. With
--crl (a CRL file or http(s) URL, repeatable) the chain is checked against revocation too;
with --ocsp the signer's status is also asked of the OCSP responder its certificate names.
Checks whose input is not given are listed as not checked.

Every finding has a severity (error or warning), the rule it comes from (pec-spec.md
section) and where it is. Warnings are deviations real providers show in their everyday
traffic (a busta without X-TipoRicevuta, a DigitPA-era certificate with BasicConstraints);
errors make the message non-conforming.

FILE "-" reads standard input. Exit status: 0 when every file conforms (with --strict:
and has no warning either), 1 when one does not (or cannot be read), 2 on usage errors.

flags:
`

// caList is the repeatable --ca (and --crl) flag.
type caList []string

func (c *caList) String() string     { return strings.Join(*c, ",") }
func (c *caList) Set(v string) error { *c = append(*c, v); return nil }

// verifyReport is the per-file result, also the --json output.
type verifyReport struct {
	File        string          `json:"file"`
	Kind        string          `json:"kind"`
	Conforms    bool            `json:"conforms"`
	Signer      string          `json:"signer,omitempty"`
	SignerEmail []string        `json:"signer_email,omitempty"`
	SigningTime *time.Time      `json:"signing_time,omitempty"`
	Micalg      string          `json:"micalg,omitempty"`
	ChainTo     string          `json:"chain_to,omitempty"`
	Provider    *verifyProvider `json:"provider,omitempty"`
	Findings    []pec.Deviation `json:"findings"`
	NotChecked  []string        `json:"not_checked,omitempty"`
	// ContentFlags are the content flags a provider's access point set on a busta
	// (X-PEC-Macro, X-PEC-Non-Verificato: pec/inspect), as "Header: value".
	ContentFlags []string `json:"content_flags,omitempty"`
}

// verifyProvider is the signer's record in the providers index.
type verifyProvider struct {
	Name        string   `json:"name"`
	Unit        string   `json:"unit,omitempty"`
	MailReceipt string   `json:"mail_receipt"`
	Domains     []string `json:"domains"`
}

// verifier holds what is the same for every file of one run.
type verifier struct {
	trust *pec.Trust
	at    time.Time // --at; zero: the signing time
}

// (Long on purpose: flag parsing, the checks of every file and the report of one command.)
func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, verifyUsage); fs.PrintDefaults() }
	var cas, crls caList
	fs.Var(&cas, "ca", "trust anchor PEM file (repeatable); without it only integrity is checked")
	fs.Var(&crls, "crl", "CRL `file or http(s) URL` (repeatable), DER or PEM")
	ocspFlag := fs.Bool("ocsp", false, "also ask the OCSP responder the signer certificate names")
	indexFile := fs.String("index", "", "providers index LDIF `file`")
	configFile := fs.String("config", "", "configuration `file`: use its providers index (index: section)")
	asJSON := fs.Bool("json", false, "write a JSON array instead of the human report")
	atFlag := fs.String("at", "", "check the chain at this RFC 3339 time instead of the signing time")
	strict := fs.Bool("strict", false, "treat warnings as failures too")
	// Allow flags after file names: parse repeatedly.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) == 0 {
		fs.Usage()
		return 2
	}
	if *indexFile != "" && *configFile != "" {
		fmt.Fprintln(stderr, "pecctl verify: give --index or -config, not both")
		return 2
	}
	var v verifier
	if *atFlag != "" {
		t, err := time.Parse(time.RFC3339, *atFlag)
		if err != nil {
			fmt.Fprintf(stderr, "pecctl verify: --at: %v\n", err)
			return 2
		}
		v.at = t
	}
	cfg := pec.TrustConfig{Partial: true, CRLs: crls, OCSP: *ocspFlag}
	for _, f := range cas {
		certs, err := hsm.ReadChain(f)
		if err != nil || len(certs) == 0 {
			fmt.Fprintf(stderr, "pecctl verify: --ca %s: no certificate read (%v)\n", f, err)
			return 2
		}
		cfg.Anchors = append(cfg.Anchors, certs...)
	}
	var deps pec.TrustDeps
	idx, err := verifyIndex(*indexFile, *configFile)
	if err != nil {
		fmt.Fprintf(stderr, "pecctl verify: %v\n", err)
		return 2
	}
	if idx != nil {
		deps.Index = idx
	}
	if v.trust, err = pec.NewTrust(cfg, deps); err != nil {
		fmt.Fprintf(stderr, "pecctl verify: %v\n", err)
		return 2
	}
	var reports []verifyReport
	status := 0
	for _, f := range files {
		var r verifyReport
		if f == "-" {
			raw, err := io.ReadAll(os.Stdin)
			if err != nil {
				fmt.Fprintf(stderr, "pecctl verify: stdin: %v\n", err)
				return 1
			}
			r = v.message("-", raw)
		} else {
			r = v.file(f)
		}
		if !r.Conforms || (*strict && len(r.Findings) > 0) {
			status = 1
		}
		reports = append(reports, r)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return 1
		}
		return status
	}
	seen := map[string]bool{}
	var notes []string
	for _, r := range reports {
		writeHuman(stdout, r)
		for _, n := range r.NotChecked {
			if !seen[n] {
				seen[n] = true
				notes = append(notes, n)
			}
		}
	}
	for _, n := range notes {
		fmt.Fprintf(stdout, "not checked: %s\n", n)
	}
	return status
}

// verifyIndex loads the providers index: an LDIF file, or the configuration's index (its
// source, else its cache, as the daemons do). Nil, nil when neither is given.
func verifyIndex(file, configFile string) (pec.SignerIndex, error) {
	switch {
	case file != "":
		src, err := igpec.NewSource(igpec.Config{Source: file}, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("--index: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), igpec.DefaultTimeout)
		defer cancel()
		snap, err := igpec.LoadSnapshot(ctx, src, time.Now())
		if err != nil {
			return nil, fmt.Errorf("--index: %w", err)
		}
		return snap, nil
	case configFile != "":
		c, err := config.Decode(configFile)
		if err != nil {
			return nil, err
		}
		x, err := igpec.New(c.Index, igpec.Deps{})
		if err != nil {
			return nil, err
		}
		return x, nil
	}
	return nil, nil
}

func (v *verifier) file(file string) verifyReport {
	r := verifyReport{File: file, Findings: []pec.Deviation{}}
	raw, err := os.ReadFile(file)
	if err != nil {
		r.Kind = "unreadable"
		r.Findings = append(r.Findings, pec.Deviation{Code: "read", Severity: pec.Error, Where: file, Message: err.Error()})
		return r
	}
	return v.message(file, raw)
}

// message is the checker proper, usable in-process by tests: pec.Classify for the format,
// then, when the signature verified, the reception point's trust check (pec.Trust).
func (v *verifier) message(name string, raw []byte) verifyReport {
	r := verifyReport{File: name}
	c := pec.Classify(raw, pec.ClassifyOptions{})
	r.Kind = c.Kind.String()
	r.Findings = append([]pec.Deviation{}, c.Deviations...)
	for _, name := range []string{inspect.HeaderMacro, inspect.HeaderUnchecked} {
		if v, ok := c.Header.Get(name); ok {
			r.ContentFlags = append(r.ContentFlags, name+": "+strings.TrimSpace(v))
		}
	}
	if c.Kind == pec.KindOrdinary {
		r.Findings = append(r.Findings, pec.Deviation{Code: "not-pec", Severity: pec.Error, Rule: "§3.1", Where: "header",
			Message: "no X-Trasporto or X-Ricevuta header and no daticert.xml: not a PEC message"})
	}
	if c.Verified != nil {
		r.Signer = c.Signer.Subject.String()
		r.SignerEmail = c.Signer.EmailAddresses
		r.Micalg = c.Verified.Micalg
		if t := c.Verified.SigningTime; !t.IsZero() {
			r.SigningTime = &t
		}
		// The error is a temporary revocation failure, also reported as a finding.
		tr, _ := v.trust.CheckAt(context.Background(), raw, c, v.at)
		r.Findings = append(r.Findings, tr.Findings...)
		r.NotChecked = tr.Skipped
		if len(tr.Chain) > 0 {
			r.ChainTo = tr.Chain[len(tr.Chain)-1].Subject.String()
		}
		if p := tr.Provider; p != nil {
			r.Provider = &verifyProvider{Name: p.Name, Unit: p.Unit, MailReceipt: p.MailReceipt, Domains: p.Domains}
		}
	}
	r.Conforms = true
	for _, f := range r.Findings {
		if f.Severity == pec.Error {
			r.Conforms = false
		}
	}
	return r
}

func writeHuman(w io.Writer, r verifyReport) {
	verdict := "conforms"
	if !r.Conforms {
		verdict = "DOES NOT CONFORM"
	}
	fmt.Fprintf(w, "%s: %s, %s\n", r.File, r.Kind, verdict)
	for _, f := range r.ContentFlags {
		fmt.Fprintf(w, "  content flag %s\n", f)
	}
	if r.Signer != "" {
		fmt.Fprintf(w, "  signed by %s %v", r.Signer, r.SignerEmail)
		if r.SigningTime != nil {
			fmt.Fprintf(w, " at %s", r.SigningTime.UTC().Format(time.RFC3339))
		}
		if r.Micalg != "" {
			fmt.Fprintf(w, ", micalg %s", r.Micalg)
		}
		fmt.Fprintln(w)
	}
	if r.ChainTo != "" {
		fmt.Fprintf(w, "  chain to %s\n", r.ChainTo)
	}
	if p := r.Provider; p != nil {
		fmt.Fprintf(w, "  provider %s, mailReceipt %s\n", p.Name, p.MailReceipt)
	}
	for _, f := range r.Findings {
		rule := f.Rule
		if rule == "" {
			rule = "-"
		}
		fmt.Fprintf(w, "  %-7s %-5s %s: %s [%s]\n", f.Severity, rule, f.Where, f.Message, f.Code)
	}
}
