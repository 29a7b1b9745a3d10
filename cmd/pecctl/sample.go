package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
)

func init() {
	register(command{name: "sample", summary: "write a signed example of any PEC message kind", run: runSample})
}

const sampleUsage = `usage: pecctl sample list
       pecctl sample KIND [-o FILE] [--ca-out FILE] [--key FILE --cert FILE]
                          [--provider NAME] [--domain DOMAIN] [--digest sha256|sha1] [--html]

Writes a signed example message of KIND (see "pecctl sample list") to FILE or stdout.
Without --key/--cert it signs with a throw-away RSA-2048 key whose certificate (RFC 6109
§5.5 profile) is issued by a throw-away CA made in memory; --ca-out writes that CA so that
"pecctl verify --ca" or "openssl cms -verify -CAfile" can check the sample. With --key (PEM
private key) and --cert (PEM certificate chain, signer first) it signs with those; the
domain and service address then come from the certificate's rfc822Name.

flags:
`

// (Long on purpose: flag parsing and output of one command.)
func runSample(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "list" {
		for _, k := range pec.Kinds() {
			fmt.Fprintf(stdout, "%-24s %s\n", k, k.Info().Title)
		}
		return 0
	}
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, sampleUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "output file (default stdout)")
	caOut := fs.String("ca-out", "", "write the throw-away CA certificate (PEM) here")
	keyFile := fs.String("key", "", "PEM private key of the provider")
	certFile := fs.String("cert", "", "PEM certificate chain of the provider, signer first")
	name := fs.String("provider", "Provider A S.p.A.", "provider name (gestore-emittente)")
	domain := fs.String("domain", "pec-a.test", "provider domain (throw-away key only)")
	digest := fs.String("digest", "sha256", "CMS digest: sha256 or sha1")
	html := fs.Bool("html", false, "add a text/html alternative")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return 2
	}
	kindName := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pecctl sample: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	k, ok := pec.KindByName(kindName)
	if !ok || k == pec.KindOrdinary {
		fmt.Fprintf(stderr, "pecctl sample: unknown kind %q (see pecctl sample list)\n", kindName)
		return 2
	}
	opts := pec.Options{HTML: *html}
	switch strings.ToLower(*digest) {
	case "sha256", "sha-256":
		opts.Hash = crypto.SHA256
	case "sha1", "sha-1":
		opts.Hash = crypto.SHA1
	default:
		fmt.Fprintf(stderr, "pecctl sample: --digest must be sha256 or sha1\n")
		return 2
	}
	var (
		s   *sampleSigner
		err error
	)
	switch {
	case *keyFile != "" || *certFile != "":
		if *keyFile == "" || *certFile == "" || *caOut != "" {
			fmt.Fprintln(stderr, "pecctl sample: --key and --cert go together, without --ca-out")
			return 2
		}
		s, err = loadSigner(*keyFile, *certFile)
	default:
		var caPEM []byte
		s, caPEM, err = throwAwaySigner(*name, *domain, time.Now())
		if err == nil && *caOut != "" {
			err = os.WriteFile(*caOut, caPEM, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "pecctl sample: %v\n", err)
		return 1
	}
	p := pec.Identity{Name: *name, Domain: s.domain, ServiceAddress: s.service, ReceiptAddress: "ricevute@" + s.domain}
	msg, err := buildSample(k, p, s, time.Now(), opts)
	if err != nil {
		fmt.Fprintf(stderr, "pecctl sample: %v\n", err)
		return 1
	}
	if *out == "" {
		_, err = stdout.Write(msg)
	} else {
		err = os.WriteFile(*out, msg, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pecctl sample: %v\n", err)
		return 1
	}
	return 0
}

// sampleSigner implements pec.Signer with one key for every domain.
type sampleSigner struct {
	key     crypto.Signer
	chain   []*x509.Certificate
	domain  string
	service string
}

func (s *sampleSigner) SignerFor(string) (crypto.Signer, []*x509.Certificate, error) {
	return s.key, s.chain, nil
}

// throwAwaySigner makes a CA and a provider certificate with the RFC 6109 §5.5 profile:
// provider name in O and CN, service address as rfc822Name, critical keyUsage
// digitalSignature, extKeyUsage emailProtection, SKI/AKI, no BasicConstraints.
func throwAwaySigner(name, domain string, now time.Time) (*sampleSigner, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"IT"}, Organization: []string{"pecctl sample CA"}, CommonName: "pecctl throw-away CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true, SubjectKeyId: keyID(&caKey.PublicKey),
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	domain = strings.ToLower(domain)
	service := "posta-certificata@" + domain
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: "Posta Certificata " + name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{service},
		SubjectKeyId: keyID(&key.PublicKey), AuthorityKeyId: ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	s := &sampleSigner{key: key, chain: []*x509.Certificate{cert}, domain: domain, service: service}
	return s, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func keyID(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha1.Sum(der)
	return h[:]
}

func loadSigner(keyFile, certFile string) (*sampleSigner, error) {
	chain, err := hsm.ReadChain(certFile)
	if err != nil {
		return nil, fmt.Errorf("--cert: %v", err)
	}
	signer, err := hsm.ReadPEMKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--key: %v", err)
	}
	if len(chain[0].EmailAddresses) == 0 {
		return nil, errors.New("--cert: the certificate has no rfc822Name (service address)")
	}
	service := strings.ToLower(chain[0].EmailAddresses[0])
	_, domain, _ := strings.Cut(service, "@")
	return &sampleSigner{key: signer, chain: chain, domain: domain, service: service}, nil
}

// sampleOriginal is the user message the samples are about: 8-bit text and a named
// attachment, two certified recipients in To and Cc and one ordinary.
func sampleOriginal(domain string) string {
	return "Date: Sat, 22 Nov 2025 10:00:00 +0100\r\n" +
		"From: Alice Rossi <alice@" + domain + ">\r\n" +
		"To: Bruno Bianchi <bruno@pec-b.test>, oscar@posta.test\r\n" +
		"Cc: bianca@pec-b.test\r\n" +
		"Subject: =?utf-8?q?Fattura_n=2E_42_=E2=80=93_perch=C3=A8?=\r\n" +
		"Message-ID: <sample.42@client.example>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"sample-b1\"\r\n" +
		"\r\n" +
		"--sample-b1\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"In allegato la fattura, perch\xc3\xa8 resti agli atti.\r\n" +
		"--sample-b1\r\n" +
		"Content-Type: application/pdf; name=\"fattura-42.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"fattura-42.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		"JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKJSVFT0YK\r\n" +
		"--sample-b1--\r\n"
}

// buildSample builds one message of kind k about the sample original.
func buildSample(k pec.Kind, p pec.Identity, s pec.Signer, now time.Time, o pec.Options) ([]byte, error) {
	m, err := sampleMessage(k, &pec.Builder{ID: p, Keys: s, Opt: o}, now)
	if err != nil {
		return nil, err
	}
	return m.Bytes(), nil
}

func sampleMessage(k pec.Kind, bd *pec.Builder, now time.Time) (*pec.Message, error) {
	orig, err := pec.ParseOriginal([]byte(sampleOriginal(bd.ID.Domain)))
	if err != nil {
		return nil, err
	}
	env := pec.Envelope{MailFrom: orig.Sender(), Rcpts: []string{"bruno@pec-b.test", "oscar@posta.test", "bianca@pec-b.test"}}
	id, err := pec.NewIdentificativo(now, "sample", bd.ID.MailDomain(), nil)
	if err != nil {
		return nil, err
	}
	typeOf := func(a string) daticert.RecipientType {
		if strings.HasSuffix(a, "@posta.test") {
			return daticert.Esterno
		}
		return daticert.Certificato
	}
	tx := pec.NewSubmissionTransaction(id, orig, env, typeOf)
	ref := pec.NewTimeRef(now, nil)
	const virus = "Eicar-Test-Signature"
	switch k {
	case pec.KindBusta:
		return bd.Busta(ref, tx, orig)
	case pec.KindAnomalia:
		return bd.Anomalia(ref, orig, env, "il messaggio non è firmato da un gestore di posta certificata")
	case pec.KindAccettazione:
		return bd.Accettazione(ref, tx)
	case pec.KindNonAccettazione:
		return bd.NonAccettazione(ref, tx, &pec.FormalError{Reason: pec.ReasonRcptNotInHeader, Detail: "carla@pec-b.test"})
	case pec.KindNonAccettazioneVirus:
		return bd.NonAccettazioneVirus(ref, tx, virus)
	case pec.KindPresaInCarico:
		return bd.PresaInCarico(ref, tx, "ricevute@pec-b.test", []string{"bruno@pec-b.test", "bianca@pec-b.test"})
	case pec.KindRilevazioneVirus:
		return bd.RilevazioneVirus(ref, tx, "ricevute@pec-b.test", "bruno@pec-b.test", virus)
	case pec.KindMancataConsegnaVirus:
		return bd.MancataConsegnaVirus(ref, tx, "bruno@pec-b.test", virus)
	case pec.KindConsegnaCompleta, pec.KindConsegnaBreve, pec.KindConsegnaSintetica:
		tx.Receipt = map[pec.Kind]daticert.ReceiptType{pec.KindConsegnaCompleta: daticert.Completa, pec.KindConsegnaBreve: daticert.Breve, pec.KindConsegnaSintetica: daticert.Sintetica}[k]
		return bd.Consegna(ref, tx, "bruno@pec-b.test", true, pec.PostacertEML(orig, id))
	case pec.KindMancataConsegna:
		return bd.MancataConsegna(ref, tx, "bruno@pec-b.test", daticert.ErroreNoDest, pec.DeliveryErrorText("5.1.1", bd.ID.Name, "indirizzo non valido"))
	case pec.KindPreavviso12h:
		return bd.Preavviso(ref, tx, "bruno@pec-b.test", 12)
	case pec.KindPreavviso24h:
		return bd.Preavviso(ref, tx, "bruno@pec-b.test", 24)
	}
	return nil, fmt.Errorf("no sample for %s", k)
}
