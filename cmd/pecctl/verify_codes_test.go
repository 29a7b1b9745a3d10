package main

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/smime"
)

// codeFix builds the messages of TestVerifyEveryErrorCode: provider A's messages signed by a
// throw-away CA, and the files pecctl verify reads.
type codeFix struct {
	t    *testing.T
	dir  string
	kr   *hsmtest.Keyring
	ca   string // the CA's PEM file, for --ca
	bd   *pec.Builder
	ref  pec.TimeRef
	orig *pec.Original
	tx   *pec.Transaction
}

const codeOriginal = "Date: Wed, 02 Dec 2026 10:00:00 +0100\r\nFrom: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\n" +
	"Subject: Fattura n. 1\r\nMessage-ID: <orig.1@client.example>\r\n\r\ntesto\r\n"

func newCodeFix(t *testing.T) *codeFix {
	f := &codeFix{t: t, dir: t.TempDir(), kr: hsmtest.New(t, "Provider A S.p.A.", "pec-a.test"), ref: pec.NewTimeRef(time.Now(), nil)}
	f.ca = f.write("ca.pem", f.kr.CA.PEM())
	f.bd = &pec.Builder{ID: pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test",
		ReceiptAddress: "ricevute@pec-a.test"}, Keys: f.kr}
	var err error
	if f.orig, err = pec.ParseOriginal([]byte(codeOriginal)); err != nil {
		t.Fatal(err)
	}
	f.tx = pec.NewSubmissionTransaction("20261202090000.n1.abcdefghijklmnop@pec-a.test", f.orig,
		pec.Envelope{MailFrom: "alice@pec-a.test", Rcpts: []string{"bruno@pec-b.test"}}, func(string) daticert.RecipientType { return daticert.Certificato })
	return f
}

func (f *codeFix) write(name string, b []byte) string {
	f.t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// build makes a message of the kind named (pec.Kind names) with the Builder methods.
func (f *codeFix) build(kind string) []byte {
	f.t.Helper()
	var (
		m   *pec.Message
		err error
	)
	switch kind {
	case "busta":
		m, err = f.bd.Busta(f.ref, f.tx, f.orig)
	case "anomalia":
		m, err = f.bd.Anomalia(f.ref, f.orig, pec.Envelope{MailFrom: "alice@pec-a.test"}, "firma assente")
	case "accettazione":
		m, err = f.bd.Accettazione(f.ref, f.tx)
	case "non-accettazione":
		m, err = f.bd.NonAccettazione(f.ref, f.tx, &pec.FormalError{Reason: pec.ReasonBcc})
	case "non-accettazione-virus":
		m, err = f.bd.NonAccettazioneVirus(f.ref, f.tx, "Eicar-Signature")
	case "rilevazione-virus":
		m, err = f.bd.RilevazioneVirus(f.ref, f.tx, "ricevute@pec-a.test", "bruno@pec-b.test", "Eicar-Signature")
	case "consegna-completa":
		m, err = f.bd.Consegna(f.ref, f.tx, "bruno@pec-b.test", true, pec.PostacertEML(f.orig, f.tx.ID))
	case "mancata-consegna":
		m, err = f.bd.MancataConsegna(f.ref, f.tx, "bruno@pec-b.test", daticert.ErroreNoDest, "5.1.1 - Provider A S.p.A. - indirizzo non valido")
	default:
		f.t.Fatalf("no builder for %s", kind)
	}
	if err != nil {
		f.t.Fatalf("%s: %v", kind, err)
	}
	return m.Bytes()
}

// header edits the top-level header (not signed): fn gets and returns the fields.
func header(t *testing.T, msg []byte, fn func(pec.Header) pec.Header) []byte {
	t.Helper()
	h, body, err := pec.SplitHeader(msg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, fl := range fn(h) {
		b.Write(fl.Raw)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

func field(name, value string) pec.Field {
	return pec.Field{Name: name, Raw: []byte(name + ": " + value + "\r\n")}
}

// set replaces the field name (or appends it); value "" deletes it.
func set(t *testing.T, msg []byte, name, value string) []byte {
	return header(t, msg, func(h pec.Header) pec.Header {
		var out pec.Header
		done := false
		for _, fl := range h {
			if !strings.EqualFold(fl.Name, name) {
				out = append(out, fl)
			} else if !done && value != "" {
				out, done = append(out, field(name, value)), true
			}
		}
		if !done && value != "" {
			out = append(out, field(name, value))
		}
		return out
	})
}

func add(t *testing.T, msg []byte, name, value string) []byte {
	return header(t, msg, func(h pec.Header) pec.Header { return append(pec.Header{field(name, value)}, h...) })
}

// resign replaces the signed entity by edit(entity) and signs it again with provider A's key:
// the signature verifies, the content is what the case needs.
func (f *codeFix) resign(msg []byte, edit func(string) string) []byte {
	f.t.Helper()
	v, err := smime.Verify(msg, smime.VerifyOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	ent := edit(string(v.Entity))
	if ent == string(v.Entity) {
		f.t.Fatal("resign: the edit changed nothing")
	}
	key, chain, _ := f.kr.SignerFor("pec-a.test")
	ct, body, err := smime.Sign([]byte(ent), key, chain, smime.SignOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	out := header(f.t, msg, func(h pec.Header) pec.Header {
		var keep pec.Header
		for _, fl := range h {
			switch strings.ToLower(fl.Name) {
			case "content-type", "mime-version", "content-transfer-encoding":
			default:
				keep = append(keep, fl)
			}
		}
		return append(keep, field("MIME-Version", "1.0"), field("Content-Type", ct))
	})
	i := bytes.Index(out, []byte("\r\n\r\n"))
	return append(out[:i+4], body...)
}

// parts splits a multipart/mixed entity at its boundary: the head, the parts, the tail.
func parts(t *testing.T, ent string) (head string, ps []string, tail string, delim string) {
	t.Helper()
	m := regexp.MustCompile(`boundary="?([^";\r\n]+)"?`).FindStringSubmatch(ent)
	if m == nil {
		t.Fatal("no boundary")
	}
	delim = "\r\n--" + m[1]
	all := strings.Split(ent, delim)
	return all[0], all[1 : len(all)-1], all[len(all)-1], delim
}

// dropPart removes part i (0-based) of the entity; addPart appends one.
func dropPart(t *testing.T, i int) func(string) string {
	return func(ent string) string {
		head, ps, tail, d := parts(t, ent)
		ps = append(ps[:i:i], ps[i+1:]...)
		return head + d + strings.Join(ps, d) + d + tail
	}
}

func addPart(t *testing.T, part string) func(string) string {
	return func(ent string) string {
		head, ps, tail, d := parts(t, ent)
		return head + d + strings.Join(append(ps, "\r\n"+part), d) + d + tail
	}
}

// daticertXML rewrites the decoded daticert.xml with old -> new.
func daticertXML(t *testing.T, old, new string) func(string) string {
	return func(ent string) string {
		head, ps, tail, d := parts(t, ent)
		for i, p := range ps {
			if !strings.Contains(p, `name="daticert.xml"`) {
				continue
			}
			j := strings.Index(p, "\r\n\r\n")
			x, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r\n", "").Replace(p[j+4:]))
			if err != nil || !strings.Contains(string(x), old) {
				t.Fatalf("daticert.xml lacks %q (%v)", old, err)
			}
			ps[i] = p[:j+4] + base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(x), old, new, 1)))
		}
		return head + d + strings.Join(ps, d) + d + tail
	}
}

// daticertBody replaces the daticert.xml part's body as transmitted.
func daticertBody(t *testing.T, body string) func(string) string {
	return func(ent string) string {
		head, ps, tail, d := parts(t, ent)
		for i, p := range ps {
			if strings.Contains(p, `name="daticert.xml"`) {
				ps[i] = p[:strings.Index(p, "\r\n\r\n")+4] + body
			}
		}
		return head + d + strings.Join(ps, d) + d + tail
	}
}

// index writes an LDIF providers index with one record for certs managing domains.
func (f *codeFix) index(certs []*x509.Certificate, domains ...string) string {
	f.t.Helper()
	rec, err := igpec.NewRecord("Provider A S.p.A.", "", "ricevute@pec-a.test", certs, domains...)
	if err != nil {
		f.t.Fatal(err)
	}
	var b bytes.Buffer
	if err := igpec.WriteLDIF(&b, []*igpec.Record{rec}); err != nil {
		f.t.Fatal(err)
	}
	return f.write("index-"+strings.Join(domains, "+")+".ldif", b.Bytes())
}

func (f *codeFix) signerCert() *x509.Certificate {
	_, chain, _ := f.kr.SignerFor("pec-a.test")
	return chain[0]
}

// codeCase makes the message (and the extra pecctl verify arguments) that raises code.
type codeCase struct {
	code string
	make func(f *codeFix) (msg []byte, args []string)
}

// variantCase reaches a second place in the checker that raises code for another reason.
type variantCase struct {
	codeCase
	variant string
}

func msgOnly(fn func(f *codeFix) []byte) func(f *codeFix) ([]byte, []string) {
	return func(f *codeFix) ([]byte, []string) { return fn(f), nil }
}

// notFromPecctl are Error codes pecctl verify cannot raise, and where each is tested instead.
// (pec.Trust raises not-signed and signature too, on a message Classify did not verify;
// pecctl runs it only on verified messages, and pec/trust_test.go TestTrustNotSigned covers
// those; the same codes from pec.Classify are covered here.)
var notFromPecctl = map[string]string{
	"signing-time":         "pec.Trust with TrustConfig.SigningWindow (the reception point); pecctl checks archives at any age. pec/trust_test.go TestTrustSigningWindow",
	"signer-cert-mismatch": "an LDIF or LDAP index whose hash names another certificate is refused when loaded (igpec); pec/trust_test.go TestTrustHashHitBytesDiffer",
}

// errorCodes lists every code the checker can raise as an Error, read from the product
// sources, so that a new one without a case here fails TestVerifyEveryErrorCode.
func errorCodes(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob("../../pec/*.go")
	files = append(files, "verify.go")
	re := regexp.MustCompile(`add\(Error, "([a-z0-9-]+)"|Code: "([a-z0-9-]+)", Severity: pec\.Error`)
	seen := map[string]bool{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]+m[2]] = true
		}
	}
	var out []string
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	if len(out) < 40 {
		t.Fatalf("only %d error codes found in the sources: %v", len(out), out)
	}
	return out
}

var codeCases = []codeCase{
	// Whole-message problems.
	{"read", func(f *codeFix) ([]byte, []string) { return nil, []string{filepath.Join(f.dir, "missing.eml")} }},
	{"malformed", msgOnly(func(f *codeFix) []byte {
		return []byte("From: alice@pec-a.test\r\nno colon on this line\r\n\r\nbody\r\n")
	})},
	{"not-pec", msgOnly(func(f *codeFix) []byte { return []byte(codeOriginal) })},
	{"not-signed", msgOnly(func(f *codeFix) []byte {
		return []byte("From: posta-certificata@pec-a.test\r\nTo: alice@pec-a.test\r\nX-Ricevuta: accettazione\r\nSubject: ACCETTAZIONE: Fattura n. 1\r\n\r\nfalso\r\n")
	})},
	{"signature", msgOnly(func(f *codeFix) []byte {
		return bytes.Replace(f.build("accettazione"), []byte("Il giorno"), []byte("Il Giorno"), 1)
	})},
	{"mime", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("accettazione"), func(e string) string {
			return strings.Replace(e, "filename=\"daticert.xml\"\r\n", "filename=\"daticert.xml\"\r\na header line without a colon\r\n", 1)
		})
	})},
	// Type headers.
	{"type-header-value", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("mancata-consegna"), "X-Ricevuta", "mancata-consegna")
	})},
	{"type-header-both", msgOnly(func(f *codeFix) []byte { return add(f.t, f.build("accettazione"), "X-Trasporto", "posta-certificata") })},
	{"type-header-missing", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("accettazione"), "X-Ricevuta", "") })},
	{"daticert-tipo-mismatch", msgOnly(func(f *codeFix) []byte {
		return set(f.t, set(f.t, f.build("accettazione"), "X-Ricevuta", "presa-in-carico"), "Subject", "PRESA IN CARICO: Fattura n. 1")
	})},
	{"verifica-sicurezza-value", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("non-accettazione-virus"), "X-VerificaSicurezza", "ok")
	})},
	{"verifica-sicurezza-missing", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("non-accettazione-virus"), "X-VerificaSicurezza", "") })},
	{"x-mittente-missing", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("rilevazione-virus"), "X-Mittente", "") })},
	{"x-mittente-mismatch", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("rilevazione-virus"), "X-Mittente", "eve@pec-a.test") })},
	{"tiporicevuta-value", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("busta"), "X-TipoRicevuta", "ridotta") })},
	// The other header fields, against the spec and the signed copies.
	{"header-missing", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("accettazione"), "Date", "") })},
	{"header-repeated", msgOnly(func(f *codeFix) []byte {
		return add(f.t, f.build("accettazione"), "Subject", "ACCETTAZIONE: Fattura n. 1")
	})},
	{"subject-prefix", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("accettazione"), "Subject", "AVVENUTA ACCETTAZIONE: Fattura n. 1")
	})},
	{"subject-mismatch", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("busta"), "Subject", "POSTA CERTIFICATA: Bonifico urgente IBAN IT60X0542811101000000123456")
	})},
	{"from-invalid", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("accettazione"), "From", "posta-certificata@@pec-a.test")
	})},
	{"from-not-signer", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("accettazione"), "From", "posta-certificata@pec-z.test")
	})},
	{"from-sender-mismatch", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("busta"), "From", `"Per conto di: direttore@banca.example" <posta-certificata@pec-a.test>`)
	})},
	{"riferimento-mismatch", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("accettazione"), "X-Riferimento-Message-ID", "<other@client.example>")
	})},
	{"message-id-identificativo", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("busta"), "Message-ID", "<other@pec-a.test>") })},
	{"recipients-mismatch", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("busta"), "To", "eve@pec-b.test") })},
	{"to-not-sender", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("accettazione"), "To", "eve@pec-a.test") })},
	// The signed content (signed again after the change).
	{"text-missing", msgOnly(func(f *codeFix) []byte { return f.resign(f.build("accettazione"), dropPart(f.t, 0)) })},
	{"daticert-missing", msgOnly(func(f *codeFix) []byte { return f.resign(f.build("accettazione"), dropPart(f.t, 1)) })},
	{"postacert-missing", msgOnly(func(f *codeFix) []byte { return f.resign(f.build("busta"), dropPart(f.t, 2)) })},
	{"postacert-forbidden", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("non-accettazione"), addPart(f.t, "Content-Type: message/rfc822; name=\"postacert.eml\"\r\n\r\n"+codeOriginal))
	})},
	{"daticert-forbidden", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("anomalia"), addPart(f.t, "Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
			base64.StdEncoding.EncodeToString(daticert.Marshal(f.build2Daticert()))))
	})},
	{"anomalia-extra-part", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("anomalia"), addPart(f.t, "Content-Type: application/octet-stream; name=\"bonifico.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAA=="))
	})},
	{"postacert-message-id", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("busta"), func(e string) string {
			return strings.Replace(e, "Message-ID: <"+f.tx.ID+">", "Message-ID: <orig.1@client.example>", 1)
		})
	})},
	{"daticert-encoding", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("accettazione"), daticertBody(f.t, "PD94bWwg!!!!\r\n"))
	})},
	{"daticert-invalid", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("accettazione"), daticertXML(f.t, "</postacert>", "</postacert"))
	})},
	{"daticert-errore", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("accettazione"), daticertXML(f.t, `errore="nessuno"`, `errore="altro"`))
	})},
	{"daticert-rule", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("mancata-consegna"), daticertXML(f.t, "<consegna>bruno@pec-b.test</consegna>", "<consegna>bruno@pec-b.test, eve@pec-b.test</consegna>"))
	})},
	{"consegna-content", msgOnly(func(f *codeFix) []byte {
		return f.resign(f.build("consegna-completa"), daticertXML(f.t, `<ricevuta tipo="completa" />`, `<ricevuta tipo="sintetica" />`))
	})},
	// Trust (pec-spec.md §7.2), with the inputs pecctl verify takes.
	{"chain", func(f *codeFix) ([]byte, []string) {
		return f.build("accettazione"), []string{"--ca", f.write("other-ca.pem", hsmtest.NewCA(f.t).PEM())}
	}},
	{"cert-validity", func(f *codeFix) ([]byte, []string) {
		return f.build("accettazione"), []string{"--ca", f.ca, "--at", time.Now().AddDate(3, 0, 0).UTC().Format(time.RFC3339)}
	}},
	{"signer-unlisted", func(f *codeFix) ([]byte, []string) {
		other := hsmtest.NewCA(f.t).ProviderCert(f.t, "Provider A S.p.A.", "posta-certificata@pec-a.test", f.signerCert().PublicKey, time.Now().Add(-time.Hour), time.Now().AddDate(1, 0, 0))
		return f.build("accettazione"), []string{"--ca", f.ca, "--index", f.index([]*x509.Certificate{other}, "pec-a.test")}
	}},
	{"from-domain-unmanaged", func(f *codeFix) ([]byte, []string) {
		return f.build("accettazione"), []string{"--ca", f.ca, "--index", f.index([]*x509.Certificate{f.signerCert()}, "pec-z.test")}
	}},
	{"mittente-domain-unmanaged", func(f *codeFix) ([]byte, []string) {
		tx := *f.tx
		tx.Sender = "alice@altro-gestore.test"
		m, err := f.bd.Accettazione(f.ref, &tx)
		if err != nil {
			f.t.Fatal(err)
		}
		return m.Bytes(), []string{"--ca", f.ca, "--index", f.index([]*x509.Certificate{f.signerCert()}, "pec-a.test")}
	}},
	{"revoked", func(f *codeFix) ([]byte, []string) {
		blk, _ := pem.Decode(f.kr.CA.KeyPEM())
		caKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			f.t.Fatal(err)
		}
		crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().AddDate(0, 0, 7),
			RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: f.signerCert().SerialNumber, RevocationTime: time.Now().AddDate(0, 0, -40)}},
		}, f.kr.CA.Cert, caKey.(crypto.Signer))
		if err != nil {
			f.t.Fatal(err)
		}
		return f.build("accettazione"), []string{"--ca", f.ca, "--crl", f.write("ca.crl", crl)}
	}},
	{"revocation-unknown", func(f *codeFix) ([]byte, []string) {
		srv := httptest.NewServer(http.NotFoundHandler())
		f.t.Cleanup(srv.Close)
		return f.build("accettazione"), []string{"--ca", f.ca, "--crl", srv.URL + "/ca.crl"}
	}},
}

// variantCases reach the other places that raise a code already covered above.
var variantCases = []variantCase{
	{codeCase{"type-header-value", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("consegna-completa"), "X-Ricevuta", "Avvenuta-Consegna")
	})}, "case"},
	{codeCase{"subject-prefix", msgOnly(func(f *codeFix) []byte { return set(f.t, f.build("accettazione"), "Subject", "") })}, "missing"},
	{codeCase{"from-sender-mismatch", msgOnly(func(f *codeFix) []byte {
		return set(f.t, f.build("busta"), "From", `"Banca d'Italia" <posta-certificata@pec-a.test>`)
	})}, "display-name"},
	{codeCase{"cert-validity", func(f *codeFix) ([]byte, []string) {
		return f.build("accettazione"), []string{"--ca", f.ca, "--at", time.Now().AddDate(0, 0, -40).UTC().Format(time.RFC3339)}
	}}, "not-yet"},
	{codeCase{"chain", func(f *codeFix) ([]byte, []string) {
		// A certificate whose keyUsage does not allow signing (RFC 5750 §4.4.2).
		key, chain, _ := f.kr.SignerFor("pec-a.test")
		cert := f.kr.CA.Issue(f.t, &x509.Certificate{Subject: chain[0].Subject, EmailAddresses: chain[0].EmailAddresses,
			NotBefore: chain[0].NotBefore, NotAfter: chain[0].NotAfter, KeyUsage: x509.KeyUsageKeyEncipherment}, key.Public())
		msg := f.build("accettazione")
		v, err := smime.Verify(msg, smime.VerifyOptions{})
		if err != nil {
			f.t.Fatal(err)
		}
		ct, body, err := smime.Sign(v.Entity, key, []*x509.Certificate{cert}, smime.SignOptions{})
		if err != nil {
			f.t.Fatal(err)
		}
		msg = set(f.t, msg, "Content-Type", ct)
		return append(msg[:bytes.Index(msg, []byte("\r\n\r\n"))+4], body...), []string{"--ca", f.ca}
	}}, "key-usage"},
	{codeCase{"from-domain-unmanaged", func(f *codeFix) ([]byte, []string) {
		return set(f.t, f.build("accettazione"), "From", ""), []string{"--ca", f.ca, "--index", f.index([]*x509.Certificate{f.signerCert()}, "pec-a.test")}
	}}, "no-from"},
	{codeCase{"mittente-domain-unmanaged", func(f *codeFix) ([]byte, []string) {
		tx := *f.tx
		tx.Sender = "alice"
		m, err := f.bd.Accettazione(f.ref, &tx)
		if err != nil {
			f.t.Fatal(err)
		}
		return m.Bytes(), []string{"--ca", f.ca, "--index", f.index([]*x509.Certificate{f.signerCert()}, "pec-a.test")}
	}}, "no-domain"},
}

// build2Daticert is the daticert of an accettazione, for a part that must not be there.
func (f *codeFix) build2Daticert() *daticert.Postacert {
	m, err := f.bd.Accettazione(f.ref, f.tx)
	if err != nil {
		f.t.Fatal(err)
	}
	return m.Daticert
}

// One case per Error code the conformance checker can raise (issue 20 item 3): pecctl verify
// reports the code as an error, in JSON and in the human report, and exits 1. The messages
// the cases start from conform (exit 0), so each code comes from its one change.
func TestVerifyEveryErrorCode(t *testing.T) {
	f := newCodeFix(t)
	for _, kind := range []string{"busta", "anomalia", "accettazione", "non-accettazione", "non-accettazione-virus", "rilevazione-virus", "consegna-completa", "mancata-consegna"} {
		p := f.write("base-"+kind+".eml", f.build(kind))
		if code, r, out := verifyJSON(t, "--ca", f.ca, "--index", f.index([]*x509.Certificate{f.signerCert()}, "pec-a.test"), p); code != 0 || len(r.Findings) != 0 {
			t.Fatalf("base %s: exit %d\n%s", kind, code, out)
		}
	}
	covered := map[string]bool{}
	all := make([]variantCase, 0, len(codeCases)+len(variantCases))
	for _, c := range codeCases {
		all = append(all, variantCase{codeCase: c})
	}
	for _, tc := range append(all, variantCases...) {
		covered[tc.code] = true
		name := tc.code
		if tc.variant != "" {
			name += "/" + tc.variant
		}
		t.Run(name, func(t *testing.T) {
			f.t = t
			msg, args := tc.make(f)
			if msg != nil {
				args = append(args, f.write(tc.code+".eml", msg))
			}
			code, r, out := verifyJSON(t, args...)
			if code != 1 || r.Conforms {
				t.Errorf("exit %d, conforms %v; want exit 1\n%s", code, r.Conforms, out)
			}
			found := false
			for _, d := range r.Findings {
				if d.Code == tc.code {
					found = true
					if d.Severity != pec.Error {
						t.Errorf("%s is a %s, want an error: %s", tc.code, d.Severity, d.Message)
					}
				}
			}
			if !found {
				t.Errorf("%s not reported\n%s", tc.code, out)
			}
			var hum, errb bytes.Buffer
			if code := runVerify(args, &hum, &errb); code != 1 || !strings.Contains(hum.String(), "DOES NOT CONFORM") ||
				!regexp.MustCompile(`(?m)^  error .*\[`+regexp.QuoteMeta(tc.code)+`\]$`).MatchString(hum.String()) {
				t.Errorf("human report: exit %d\n%s%s", code, hum.String(), errb.String())
			}
		})
	}
	f.t = t
	for _, c := range errorCodes(t) {
		if _, why := notFromPecctl[c]; !covered[c] && !why {
			t.Errorf("error code %s has no case here", c)
		}
	}
	for c := range notFromPecctl {
		if covered[c] {
			t.Errorf("%s is listed as not raised by pecctl verify but has a case", c)
		}
	}
}
