package main

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/smime"
)

func init() {
	register(command{name: "verify", summary: "check PEC messages (ours or another provider's) against the rules", run: runVerify})
}

const verifyUsage = `usage: pecctl verify [--ca FILE]... [--at TIME] [--json] [--strict] FILE...

Checks each message as a PEC conformance checker: the S/MIME signature (integrity; with
--ca, the certificate chain to those trust anchors at the message's signing time), the
headers against its kind, the subject prefix, the MIME layout, daticert.xml against the DTD
and its consistency with the headers, and the provider certificate profile.

Every finding has a severity (error or warning), the rule it comes from (pec-spec.md
section) and where it is. Warnings are deviations real providers show in their everyday
traffic (a busta without X-TipoRicevuta, a DigitPA-era certificate with BasicConstraints);
errors make the message non-conforming.

FILE "-" reads standard input. Exit status: 0 when every file conforms (with --strict:
and has no warning either), 1 when one does not (or cannot be read), 2 on usage errors.

flags:
`

// caList is the repeatable --ca flag.
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
	Findings    []pec.Deviation `json:"findings"`
}

func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, verifyUsage); fs.PrintDefaults() }
	var cas caList
	fs.Var(&cas, "ca", "trust anchor PEM file (repeatable); without it only integrity is checked")
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
	var at time.Time
	if *atFlag != "" {
		t, err := time.Parse(time.RFC3339, *atFlag)
		if err != nil {
			fmt.Fprintf(stderr, "pecctl verify: --at: %v\n", err)
			return 2
		}
		at = t
	}
	var roots []*x509.Certificate
	for _, f := range cas {
		certs, err := hsm.ReadChain(f)
		if err != nil || len(certs) == 0 {
			fmt.Fprintf(stderr, "pecctl verify: --ca %s: no certificate read (%v)\n", f, err)
			return 2
		}
		roots = append(roots, certs...)
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
			r = verifyMessage("-", raw, roots, at)
		} else {
			r = verifyFile(f, roots, at)
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
	for _, r := range reports {
		writeHuman(stdout, r)
	}
	return status
}

func verifyFile(file string, roots []*x509.Certificate, at time.Time) verifyReport {
	r := verifyReport{File: file, Findings: []pec.Deviation{}}
	raw, err := os.ReadFile(file)
	if err != nil {
		r.Kind = "unreadable"
		r.Findings = append(r.Findings, pec.Deviation{Code: "read", Severity: pec.Error, Where: file, Message: err.Error()})
		return r
	}
	return verifyMessage(file, raw, roots, at)
}

// verifyMessage is the checker proper, usable in-process by tests.
func verifyMessage(name string, raw []byte, roots []*x509.Certificate, at time.Time) verifyReport {
	r := verifyReport{File: name}
	c := pec.Classify(raw, pec.ClassifyOptions{})
	r.Kind = c.Kind.String()
	r.Findings = append([]pec.Deviation{}, c.Deviations...)
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
		r.Findings = append(r.Findings, certProfile(c.Signer)...)
		if roots != nil {
			when := at
			if when.IsZero() {
				when = c.SignedAt()
			}
			pool := x509.NewCertPool()
			for _, c := range roots {
				pool.AddCert(c)
			}
			v, err := smime.Verify(raw, smime.VerifyOptions{Roots: pool, At: when})
			switch {
			case err != nil && sha1Chain(c.Signer, c.Verified.Certs, roots, when) == nil:
				// crypto/x509 refuses SHA-1 certificate signatures; the DigitPA-era chains of
				// 2014 (pec-spec.md §8.2–8.3) use them. We check that chain ourselves: a real,
				// legacy deviation, not a forgery.
				r.Findings = append(r.Findings, pec.Deviation{Code: "chain-sha1", Severity: pec.Warning, Rule: "§8.3", Where: "smime.p7s signer certificate",
					Message: fmt.Sprintf("chain verified at %s with SHA-1 certificate signatures (legacy, refused by modern verifiers)", when.UTC().Format(time.RFC3339))})
			case err != nil:
				r.Findings = append(r.Findings, pec.Deviation{Code: "chain", Severity: pec.Error, Rule: "§7.2", Where: "smime.p7s signer certificate",
					Message: fmt.Sprintf("chain not trusted at %s: %v", when.UTC().Format(time.RFC3339), err)})
			case len(v.Chains) > 0:
				ch := v.Chains[0]
				r.ChainTo = ch[len(ch)-1].Subject.String()
			}
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

// certProfile checks the provider certificate against RFC 6109 §5.5 (pec-spec.md §8.1).
// All are warnings: the DigitPA-era certificates of real providers violate them
// (pec-spec.md §13 #8), and the chain check is what decides trust.
func certProfile(c *x509.Certificate) []pec.Deviation {
	var out []pec.Deviation
	add := func(code, f string, a ...any) {
		out = append(out, pec.Deviation{Code: code, Severity: pec.Warning, Rule: "§8.1", Where: "signer certificate", Message: fmt.Sprintf(f, a...)})
	}
	if c.BasicConstraintsValid {
		add("cert-basic-constraints", "BasicConstraints must not be present in a provider certificate")
	}
	kuCritical := false
	for _, e := range c.Extensions {
		if e.Id.Equal([]int{2, 5, 29, 15}) {
			kuCritical = e.Critical
		}
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		add("cert-key-usage", "keyUsage must include digitalSignature")
	} else if !kuCritical {
		add("cert-key-usage-critical", "keyUsage must be critical")
	}
	if len(c.EmailAddresses) == 0 {
		add("cert-san", "no rfc822Name subjectAltName (the service address)")
	}
	if len(c.SubjectKeyId) == 0 {
		add("cert-ski", "subjectKeyIdentifier missing")
	}
	if len(c.AuthorityKeyId) == 0 {
		add("cert-aki", "authorityKeyIdentifier missing")
	}
	return out
}

func writeHuman(w io.Writer, r verifyReport) {
	verdict := "conforms"
	if !r.Conforms {
		verdict = "DOES NOT CONFORM"
	}
	fmt.Fprintf(w, "%s: %s, %s\n", r.File, r.Kind, verdict)
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
	for _, f := range r.Findings {
		rule := f.Rule
		if rule == "" {
			rule = "-"
		}
		fmt.Fprintf(w, "  %-7s %-5s %s: %s [%s]\n", f.Severity, rule, f.Where, f.Message, f.Code)
	}
}

// sha1Chain checks a chain whose certificate signatures are RSA with SHA-1, which
// crypto/x509 refuses: from leaf up through the CMS certificates to one of roots, each
// certificate valid at at and signed by the next. Other algorithms are left to crypto/x509.
func sha1Chain(leaf *x509.Certificate, pool, roots []*x509.Certificate, at time.Time) error {
	cur := leaf
	for depth := 0; depth < 5; depth++ {
		if at.Before(cur.NotBefore) || at.After(cur.NotAfter) {
			return fmt.Errorf("%s not valid at %s", cur.Subject, at)
		}
		for _, r := range roots {
			if bytes.Equal(r.Raw, cur.Raw) {
				return nil
			}
		}
		var parent *x509.Certificate
		for _, cand := range append(append([]*x509.Certificate{}, roots...), pool...) {
			if bytes.Equal(cand.RawSubject, cur.RawIssuer) && cand != cur && checkSHA1Sig(cur, cand) == nil {
				parent = cand
				break
			}
		}
		if parent == nil {
			return errors.New("no issuer found")
		}
		if !parent.IsCA && parent.BasicConstraintsValid {
			return errors.New("issuer is not a CA")
		}
		cur = parent
	}
	return errors.New("chain too long")
}

func checkSHA1Sig(c, parent *x509.Certificate) error {
	if c.SignatureAlgorithm != x509.SHA1WithRSA {
		return c.CheckSignatureFrom(parent)
	}
	pub, ok := parent.PublicKey.(*rsa.PublicKey)
	if !ok {
		return errors.New("issuer key is not RSA")
	}
	h := sha1.Sum(c.RawTBSCertificate)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA1, h[:], c.Signature)
}
