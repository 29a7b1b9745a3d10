package main

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
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
)

func init() {
	register(command{name: "keys", summary: "check, show or create the provider's signing keys and certificates", run: runKeys})
}

const keysUsage = `usage:
  pecctl keys check -config FILE
      load every signer key as the daemons do; check that it matches its certificate, the
      RFC 6109 profile, the validity and the chain; exit 0 only when all is fine
  pecctl keys show (-config FILE | -cert FILE)
      subject, issuer, subjectAltName, SHA-1 fingerprint (providerCertificateHash), validity
  pecctl keys init [-config FILE] [-module M -token T -pin-env VAR|-pin-file F] -label L [-id HEX]
                   [-provider NAME -service-address ADDR] [-csr OUT]
                   [-ca-cert FILE -ca-key FILE -out CHAIN [-days N] [-store-cert]]
      create an RSA-2048 key on a development or lab token (never extractable), then write a
      CSR and/or issue a certificate with the RFC 6109 profile from a CA key in PEM
`

func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	switch args[0] {
	case "check":
		return keysCheck(args[1:], stdout, stderr)
	case "show":
		return keysShow(args[1:], stdout, stderr)
	case "init":
		return keysInit(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, keysUsage)
	return 2
}

// keysFile is the configuration pecctl keys reads: its provider and signer sections.
type keysFile = config.Config

func readKeysFile(path string) (*keysFile, error) { return config.Decode(path) }

func keysCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keys check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file` (provider: and signer: sections)")
	if err := fs.Parse(args); err != nil || *config == "" || fs.NArg() > 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	f, err := readKeysFile(*config)
	if err != nil {
		fmt.Fprintln(stderr, "pecctl keys check:", err)
		return 1
	}
	now := time.Now()
	reports, err := hsm.Check(f.Signer, hsm.Deps{
		Provider: f.Provider.HSM(),
		Logger:   slog.New(slog.DiscardHandler), // problems are in the report
		Now:      func() time.Time { return now },
	})
	if err != nil {
		fmt.Fprintln(stderr, "pecctl keys check:", err)
		return 1
	}
	ok := true
	for _, r := range reports {
		fmt.Fprintf(stdout, "key %s, domains %s\n", r.Key, domainList(r.Domains))
		fmt.Fprintf(stdout, "  certificate  %s\n", r.Certificate)
		if len(r.Chain) > 0 {
			c := r.Chain[0]
			fmt.Fprintf(stdout, "  subject      %s\n", c.Subject)
			fmt.Fprintf(stdout, "  sha1         %s\n", hsm.Fingerprint(c))
			fmt.Fprintf(stdout, "  expires      %s (%d days)\n", c.NotAfter.UTC().Format(time.RFC3339), hsm.DaysLeft(c, now))
		}
		if r.Err != nil {
			fmt.Fprintf(stdout, "  ERROR        %v\n", r.Err)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(stdout, "  PROBLEM      %s\n", p)
		}
		if r.OK() {
			fmt.Fprintln(stdout, "  OK")
		} else {
			ok = false
		}
	}
	if !ok {
		fmt.Fprintln(stdout, "FAILED")
		return 1
	}
	fmt.Fprintln(stdout, "all keys OK")
	return 0
}

func domainList(ds []string) string {
	if len(ds) == 0 {
		return "(any)"
	}
	return strings.Join(ds, ", ")
}

func keysShow(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keys show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "configuration `file`: show every configured certificate")
	certFile := fs.String("cert", "", "PEM certificate (chain) `file`")
	if err := fs.Parse(args); err != nil || (*config == "") == (*certFile == "") || fs.NArg() > 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	type item struct{ name, path string }
	var items []item
	if *certFile != "" {
		items = append(items, item{*certFile, *certFile})
	} else {
		f, err := readKeysFile(*config)
		if err != nil {
			fmt.Fprintln(stderr, "pecctl keys show:", err)
			return 1
		}
		if f.Signer.Certificate != "" {
			items = append(items, item{"signer", f.Signer.Certificate})
		}
		for i, k := range f.Signer.Keys {
			items = append(items, item{fmt.Sprintf("signer.keys[%d] (%s)", i, k.Domain), k.Certificate})
		}
	}
	status := 0
	now := time.Now()
	for _, it := range items {
		chain, err := hsm.ReadChain(it.path)
		if err != nil {
			fmt.Fprintln(stderr, "pecctl keys show:", err)
			status = 1
			continue
		}
		c := chain[0]
		fmt.Fprintf(stdout, "%s: %s\n", it.name, it.path)
		fmt.Fprintf(stdout, "  subject     %s\n", c.Subject)
		fmt.Fprintf(stdout, "  issuer      %s\n", c.Issuer)
		fmt.Fprintf(stdout, "  san         %s\n", strings.Join(c.EmailAddresses, ", "))
		fmt.Fprintf(stdout, "  sha1        %s\n", hsm.Fingerprint(c))
		fmt.Fprintf(stdout, "  not before  %s\n", c.NotBefore.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "  not after   %s\n", c.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "  days left   %d\n", hsm.DaysLeft(c, now))
		for _, ic := range chain[1:] {
			fmt.Fprintf(stdout, "  chain       %s\n", ic.Subject)
		}
	}
	return status
}

type initOpts struct {
	pc                      hsm.PKCS11Config
	label, id               string
	provider, service       string
	csr, caCert, caKey, out string
	days                    int
	storeCert, production   bool
}

func keysInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keys init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o initOpts
	config := fs.String("config", "", "configuration `file` giving module, token, PIN source, key label and provider")
	fs.StringVar(&o.pc.Module, "module", "", "PKCS#11 module `path`")
	fs.StringVar(&o.pc.Token, "token", "", "token `label`")
	fs.StringVar(&o.pc.PINEnv, "pin-env", "", "environment `variable` holding the user PIN")
	fs.StringVar(&o.pc.PINFile, "pin-file", "", "`file` holding the user PIN")
	fs.StringVar(&o.label, "label", "", "`label` of the new key")
	fs.StringVar(&o.id, "id", "", "CKA_ID of the new key in `hex` (default: random)")
	fs.StringVar(&o.provider, "provider", "", "provider `name` for the subject")
	fs.StringVar(&o.service, "service-address", "", "service `address` for the subjectAltName")
	fs.StringVar(&o.csr, "csr", "", "write a PKCS#10 request to `file`")
	fs.StringVar(&o.caCert, "ca-cert", "", "issuing CA certificate `file` (PEM)")
	fs.StringVar(&o.caKey, "ca-key", "", "issuing CA private key `file` (PEM; lab only)")
	fs.StringVar(&o.out, "out", "", "write the issued certificate to `file` (PEM)")
	fs.IntVar(&o.days, "days", 365, "validity of the issued certificate in `days`")
	fs.BoolVar(&o.storeCert, "store-cert", false, "also store the issued certificate on the token")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	if *config != "" {
		f, err := readKeysFile(*config)
		if err != nil {
			fmt.Fprintln(stderr, "pecctl keys init:", err)
			return 1
		}
		fill := func(dst *string, v string) {
			if *dst == "" {
				*dst = v
			}
		}
		s := f.Signer.PKCS11
		fill(&o.pc.Module, s.Module)
		fill(&o.pc.Token, s.Token)
		if o.pc.PINEnv == "" && o.pc.PINFile == "" {
			o.pc.PINEnv, o.pc.PINFile = s.PINEnv, s.PINFile
		}
		fill(&o.label, s.Key)
		fill(&o.id, s.KeyID)
		fill(&o.provider, f.Provider.Name)
		fill(&o.service, f.Provider.ServiceAddress)
		o.production = f.Provider.Production
	}
	if err := initKey(o, stdout); err != nil {
		fmt.Fprintln(stderr, "pecctl keys init:", err)
		return 1
	}
	return 0
}

// (Long on purpose: flag parsing and the token, certificate and profile steps of one command, in the order an operator reads them.)
func initKey(o initOpts, stdout io.Writer) error {
	if o.label == "" {
		return errors.New("-label: missing")
	}
	if (o.caCert == "") != (o.caKey == "") || (o.caCert != "" && o.out == "") {
		return errors.New("-ca-cert, -ca-key and -out go together")
	}
	if o.caKey != "" && o.production {
		return errors.New("-ca-key: issuing from a CA key in a file is for labs; provider.production is true")
	}
	if (o.csr != "" || o.caCert != "") && (o.provider == "" || o.service == "") {
		return errors.New("-provider and -service-address (or provider: in -config) are needed for the certificate subject")
	}
	var id []byte
	if o.id != "" {
		var err error
		if id, err = hex.DecodeString(strings.TrimPrefix(o.id, "0x")); err != nil || len(id) == 0 {
			return fmt.Errorf("-id %q: not hex", o.id)
		}
	} else {
		id = make([]byte, 8)
		rand.Read(id)
	}
	a, err := hsm.OpenAdmin(o.pc)
	if err != nil {
		return err
	}
	defer a.Close()
	pub, err := a.GenerateRSAKey(o.label, id, 2048)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created RSA-2048 key %q id %x on token %q\n", o.label, id, o.pc.Token)
	signer, err := a.Signer(o.label, id, pub)
	if err != nil {
		return err
	}
	if o.csr != "" {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{o.provider}, CommonName: "Posta Certificata " + o.provider},
			EmailAddresses: []string{o.service},
		}, signer)
		if err != nil {
			return fmt.Errorf("CSR: %w", err)
		}
		if err := os.WriteFile(o.csr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote CSR %s\n", o.csr)
	}
	if o.caCert == "" {
		return nil
	}
	ca, err := hsm.ReadChain(o.caCert)
	if err != nil {
		return err
	}
	caKey, err := hsm.ReadPEMKey(o.caKey)
	if err != nil {
		return fmt.Errorf("-ca-key: %w", err)
	}
	now := time.Now()
	tmpl, err := hsm.ProviderTemplate(o.provider, o.service, pub, now.Add(-5*time.Minute), now.AddDate(0, 0, o.days))
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca[0], pub, caKey)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	if ps := hsm.CheckProfile(cert, o.provider, o.service); ps != nil {
		return fmt.Errorf("issued certificate breaks the profile: %v", ps)
	}
	if err := hsm.MatchProbe(signer, cert); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote certificate %s (sha1 %s)\n", o.out, hsm.Fingerprint(cert))
	if o.storeCert {
		if err := a.StoreCertificate(o.label, id, cert); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stored the certificate on token %q\n", o.pc.Token)
	}
	return nil
}
