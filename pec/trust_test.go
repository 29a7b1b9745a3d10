package pec_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/smime"
)

// The throw-away PKI of the trust tests: a root standing in for AgID CA1 and provider B's
// signing certificate, all at fixed dates around trNow.
var (
	trNow      = time.Date(2025, 11, 22, 9, 0, 0, 0, time.UTC)
	trProvider = "Provider B S.p.A."
)

type trCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var trKeys struct {
	sync.Mutex
	pool []*ecdsa.PrivateKey
}

// trKey returns the i-th P-256 key of the process (keys are reused across tests).
func trKey(i int) *ecdsa.PrivateKey {
	trKeys.Lock()
	defer trKeys.Unlock()
	for len(trKeys.pool) <= i {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		trKeys.pool = append(trKeys.pool, k)
	}
	return trKeys.pool[i]
}

func trSKI(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	h := sha1.Sum(der)
	return h[:]
}

func trCreate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// trNewCA makes a self-signed CA valid from nb to na.
func trNewCA(t testing.TB, keyIndex int, nb, na time.Time) *trCA {
	k := trKey(keyIndex)
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{Country: []string{"IT"}, Organization: []string{"Test CA"}, CommonName: "Test PEC CA " + string(rune('A'+keyIndex))},
		NotBefore: nb, NotAfter: na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		SubjectKeyId: trSKI(k),
	}
	return &trCA{cert: trCreate(t, tmpl, tmpl, k.Public(), k), key: k}
}

// provider issues a provider certificate with the RFC 6109 §5.5 profile.
func (ca *trCA) provider(t testing.TB, keyIndex int, name, addr string, nb, na time.Time) (*x509.Certificate, crypto.Signer) {
	k := trKey(keyIndex)
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: "Posta Certificata " + name},
		NotBefore: nb, NotAfter: na,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{addr},
		SubjectKeyId:   trSKI(k),
	}
	return trCreate(t, tmpl, ca.cert, k.Public(), ca.key), k
}

// crl issues a CRL valid from thisUpdate to nextUpdate (DER).
func (ca *trCA) crl(t testing.TB, thisUpdate, nextUpdate time.Time, revoked ...x509.RevocationListEntry) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(thisUpdate.Unix()), ThisUpdate: thisUpdate, NextUpdate: nextUpdate,
		RevokedCertificateEntries: revoked,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// trMsg describes a test message: a busta signed by key with chain.
type trMsg struct {
	key      crypto.Signer
	chain    []*x509.Certificate
	from     string // From address
	mittente string // daticert mittente
	at       time.Time
}

// bytes builds the message: a busta-shaped multipart/signed whose entity carries a text part
// and daticert.xml. Formal details do not matter to the trust check.
func (m trMsg) bytes(t testing.TB) []byte {
	t.Helper()
	d := &daticert.Postacert{
		Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno,
		Intestazione: daticert.Intestazione{Mittente: m.mittente, Destinatari: []daticert.Destinatario{{Addr: "alice@pec-a.test"}},
			Risposte: m.mittente, Oggetto: daticert.Subject("prova")},
		Dati: daticert.Dati{GestoreEmittente: trProvider, Data: daticert.Data{Zona: "+0100", Giorno: "22/11/2025", Ora: "10:00:00"},
			Identificativo: "trust.1@pec-b.test", Msgid: "<orig.1@client.example>"},
	}
	b64 := base64.StdEncoding.EncodeToString(daticert.Marshal(d))
	var lines []string
	for len(b64) > 76 {
		lines, b64 = append(lines, b64[:76]), b64[76:]
	}
	lines = append(lines, b64)
	entity := "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n" +
		"--inner\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nMessaggio di posta certificata\r\n" +
		"--inner\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + strings.Join(lines, "\r\n") + "\r\n--inner--\r\n"
	ct, body, err := smime.Sign([]byte(entity), m.key, m.chain, smime.SignOptions{SigningTime: m.at})
	if err != nil {
		t.Fatal(err)
	}
	hdr := "Date: " + m.at.Format(time.RFC1123Z) + "\r\n" +
		"From: \"Per conto di: " + m.mittente + "\" <" + m.from + ">\r\n" +
		"To: alice@pec-a.test\r\nSubject: POSTA CERTIFICATA: prova\r\nMessage-ID: <trust.1@pec-b.test>\r\n" +
		"X-Riferimento-Message-ID: <orig.1@client.example>\r\nX-Trasporto: posta-certificata\r\nX-TipoRicevuta: completa\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: " + ct + "\r\n\r\n"
	return append([]byte(hdr), body...)
}

// trFix is a valid setting: CA, provider B's certificate listed in the index for pec-b.test,
// a CRL of the CA in a file, and a good message signed an hour before trNow.
type trFix struct {
	ca     *trCA
	cert   *x509.Certificate
	key    crypto.Signer
	rec    *igpec.Record
	index  *igpec.Snapshot
	crl    string // CRL file
	msg    trMsg
	now    atomic.Pointer[time.Time]
	clock  pec.Clock
	config pec.TrustConfig
}

func newTrFix(t testing.TB) *trFix {
	t.Helper()
	f := &trFix{ca: trNewCA(t, 0, trNow.AddDate(-5, 0, 0), trNow.AddDate(5, 0, 0))}
	f.cert, f.key = f.ca.provider(t, 1, trProvider, "posta-certificata@pec-b.test", trNow.AddDate(-1, 0, 0), trNow.AddDate(1, 0, 0))
	var err error
	f.rec, err = igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{f.cert}, "pec-b.test")
	if err != nil {
		t.Fatal(err)
	}
	f.index = igpec.NewSnapshot("test", trNow, f.rec)
	f.crl = filepath.Join(t.TempDir(), "ca.crl")
	f.writeCRL(t)
	f.msg = trMsg{key: f.key, chain: []*x509.Certificate{f.cert}, from: "posta-certificata@pec-b.test", mittente: "bruno@pec-b.test", at: trNow.Add(-time.Hour)}
	now := trNow
	f.now.Store(&now)
	f.clock = pec.ClockFunc(func() time.Time { return *f.now.Load() })
	f.config = pec.TrustConfig{Anchors: []*x509.Certificate{f.ca.cert}, CRLs: []string{f.crl}, SigningWindow: 5 * 24 * time.Hour}
	return f
}

func (f *trFix) writeCRL(t testing.TB, revoked ...x509.RevocationListEntry) {
	t.Helper()
	if err := os.WriteFile(f.crl, f.ca.crl(t, trNow.Add(-2*time.Hour), trNow.Add(7*24*time.Hour), revoked...), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *trFix) advance(d time.Duration) {
	n := f.now.Load().Add(d)
	f.now.Store(&n)
}

func (f *trFix) trust(t testing.TB, index pec.SignerIndex) *pec.Trust {
	t.Helper()
	tr, err := pec.NewTrust(f.config, pec.TrustDeps{Index: index, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func trCheck(t *testing.T, tr *pec.Trust, raw []byte) *pec.TrustResult {
	t.Helper()
	r, err := tr.Check(context.Background(), raw, pec.Classify(raw, pec.ClassifyOptions{}))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return r
}

func trCodes(r *pec.TrustResult) map[string]pec.Severity {
	m := map[string]pec.Severity{}
	for _, d := range r.Findings {
		m[d.Code] = d.Severity
	}
	return m
}

// wantOnly asserts r is not trusted and has code as its only Error.
func wantError(t *testing.T, r *pec.TrustResult, code string) {
	t.Helper()
	if r.Trusted {
		t.Errorf("trusted, want %s: %+v", code, r.Findings)
	}
	var errs []string
	for _, d := range r.Findings {
		if d.Severity == pec.Error {
			errs = append(errs, d.Code)
		}
	}
	if len(errs) != 1 || errs[0] != code {
		t.Errorf("errors %v, want [%s]: %+v", errs, code, r.Findings)
	}
}

func TestTrustValid(t *testing.T) {
	f := newTrFix(t)
	r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	if !r.Trusted || len(r.Findings) != 0 || len(r.Skipped) != 0 {
		t.Fatalf("trusted %v findings %+v skipped %v", r.Trusted, r.Findings, r.Skipped)
	}
	if r.Provider != f.rec || r.Provider.MailReceipt != "ricevute@pec-b.test" {
		t.Errorf("provider %v", r.Provider)
	}
	if len(r.Chain) != 2 || !r.Chain[1].Equal(f.ca.cert) || !r.At.Equal(f.msg.at) {
		t.Errorf("chain %d, at %s", len(r.Chain), r.At)
	}
	// The index lookup is case-insensitive on the hash (igpec.Index has the same method).
	var _ pec.SignerIndex = (*igpec.Index)(nil)
}

// trIndexFunc is a SignerIndex over a function.
type trIndexFunc func(string) []*igpec.Record

func (f trIndexFunc) ByHash(h string) []*igpec.Record { return f(h) }

func TestTrustSignerNotInIndex(t *testing.T) {
	f := newTrFix(t)
	r := trCheck(t, f.trust(t, igpec.NewSnapshot("empty", trNow)), f.msg.bytes(t))
	wantError(t, r, "signer-unlisted")
	if r.Provider != nil {
		t.Errorf("provider %v", r.Provider)
	}
}

// A record lists the signer's hash but holds another certificate (a SHA-1 collision, or a
// forged index): the byte-for-byte comparison refuses it.
func TestTrustHashHitBytesDiffer(t *testing.T) {
	f := newTrFix(t)
	other, _ := f.ca.provider(t, 2, trProvider, "posta-certificata@pec-b.test", trNow.AddDate(-1, 0, 0), trNow.AddDate(1, 0, 0))
	rec, err := igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{other}, "pec-b.test")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToLower(igpec.CertificateHash(f.cert.Raw))
	idx := trIndexFunc(func(h string) []*igpec.Record {
		if strings.EqualFold(h, want) {
			return []*igpec.Record{rec}
		}
		return nil
	})
	r := trCheck(t, f.trust(t, idx), f.msg.bytes(t))
	wantError(t, r, "signer-cert-mismatch")
}

func TestTrustRevokedByCRL(t *testing.T) {
	f := newTrFix(t)
	raw := f.msg.bytes(t)
	for _, tc := range []struct {
		name   string
		when   time.Time
		reason int
		code   string
		sev    pec.Severity
	}{
		{"before signing", f.msg.at.Add(-time.Minute), 4, "revoked", pec.Error},
		{"after signing, superseded", f.msg.at.Add(time.Minute), 4, "revoked-later", pec.Warning},
		{"after signing, key compromise", f.msg.at.Add(time.Minute), 1, "revoked", pec.Error},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.writeCRL(t, x509.RevocationListEntry{SerialNumber: f.cert.SerialNumber, RevocationTime: tc.when, ReasonCode: tc.reason})
			r := trCheck(t, f.trust(t, f.index), raw)
			if got := trCodes(r)[tc.code]; got != tc.sev || r.Trusted != (tc.sev == pec.Warning) {
				t.Errorf("%s %s, trusted %v: %+v", tc.code, got, r.Trusted, r.Findings)
			}
		})
	}
	// A CRL that its issuer did not sign is no answer: status unknown.
	other := trNewCA(t, 3, trNow.AddDate(-5, 0, 0), trNow.AddDate(5, 0, 0))
	other.cert = &x509.Certificate{Raw: other.cert.Raw, RawSubject: f.ca.cert.RawSubject, Subject: f.ca.cert.Subject,
		PublicKey: other.cert.PublicKey, PublicKeyAlgorithm: other.cert.PublicKeyAlgorithm, SubjectKeyId: f.ca.cert.SubjectKeyId, KeyUsage: x509.KeyUsageCRLSign}
	if err := os.WriteFile(f.crl, other.crl(t, trNow.Add(-time.Hour), trNow.AddDate(0, 0, 7)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := f.trust(t, f.index).Check(context.Background(), raw, nil)
	if !errors.Is(err, pec.ErrRevocationUnknown) {
		t.Errorf("forged CRL: err %v", err)
	}
}

// The CRL comes over HTTP; while the server is down the cached copy serves up to CRLMaxAge
// after the last current copy, then the status is unknown: a temporary failure, not a verdict.
func TestTrustCRLStaleUnreachableIsTemporary(t *testing.T) {
	f := newTrFix(t)
	var down atomic.Bool
	var fetches atomic.Int32
	crl := f.ca.crl(t, trNow.Add(-time.Hour), trNow.AddDate(0, 0, 7))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write(crl)
	}))
	defer srv.Close()
	f.config.CRLs = []string{srv.URL + "/ca.crl"}
	f.config.SigningWindow = 0
	tr := f.trust(t, f.index)
	raw := f.msg.bytes(t)
	if r := trCheck(t, tr, raw); !r.Trusted {
		t.Fatalf("%+v", r.Findings)
	}
	trCheck(t, tr, raw)
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (cached)", n)
	}
	down.Store(true)
	f.advance(2 * time.Hour) // due for refresh (1h), refresh fails, cache still usable (24h)
	if r := trCheck(t, tr, raw); !r.Trusted {
		t.Fatalf("cached CRL within max age: %+v", r.Findings)
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	trCheck(t, tr, raw)
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (no retry within a minute)", n)
	}
	f.advance(23 * time.Hour)
	r, err := tr.Check(context.Background(), raw, nil)
	var tmp interface{ Temporary() bool }
	if !errors.Is(err, pec.ErrRevocationUnknown) || !errors.As(err, &tmp) || !tmp.Temporary() {
		t.Fatalf("stale and unreachable: err %v", err)
	}
	if r == nil || r.Trusted || trCodes(r)["revocation-unknown"] != pec.Error {
		t.Fatalf("result %+v", r)
	}
	if strings.Contains(err.Error(), "revoked") {
		t.Errorf("temporary error reads like a verdict: %v", err)
	}
	// The server comes back: the next check after the retry delay refreshes.
	down.Store(false)
	f.advance(2 * time.Minute)
	if r := trCheck(t, tr, raw); !r.Trusted {
		t.Fatalf("after recovery: %+v", r.Findings)
	}
}

// A CRL never loaded (server down from the start) may be the one covering the signer.
func TestTrustCRLNeverLoadedIsTemporary(t *testing.T) {
	f := newTrFix(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	f.config.CRLs = []string{srv.URL + "/ca.crl"}
	tr := f.trust(t, f.index)
	if err := tr.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh: no error from a 404")
	}
	if _, err := tr.Check(context.Background(), f.msg.bytes(t), nil); !errors.Is(err, pec.ErrRevocationUnknown) {
		t.Fatalf("err %v", err)
	}
	// Not listed in the index: not trusted whatever the CRL says, no reason to retry.
	tr = f.trust(t, igpec.NewSnapshot("empty", trNow))
	r, err := tr.Check(context.Background(), f.msg.bytes(t), nil)
	if err != nil || r.Trusted || trCodes(r)["signer-unlisted"] != pec.Error || trCodes(r)["revocation-unknown"] != pec.Error {
		t.Fatalf("unlisted signer, CRL down: %v %+v", err, r.Findings)
	}
}

func TestTrustExpiredAtSigningTime(t *testing.T) {
	f := newTrFix(t)
	// The signer's certificate expired before the signing time.
	f.msg.at = f.cert.NotAfter.Add(time.Hour)
	f.config.SigningWindow = 0
	r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	wantError(t, r, "cert-validity")
	// The CA expired before the signing time, the signer's certificate did not.
	f = newTrFix(t)
	ca := trNewCA(t, 4, trNow.AddDate(-5, 0, 0), trNow.AddDate(0, 0, -1))
	cert, key := ca.provider(t, 1, trProvider, "posta-certificata@pec-b.test", trNow.AddDate(-1, 0, 0), trNow.AddDate(1, 0, 0))
	rec, _ := igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{cert}, "pec-b.test")
	f.config.Anchors = []*x509.Certificate{ca.cert}
	f.config.CRLs = nil
	f.msg.key, f.msg.chain = key, []*x509.Certificate{cert}
	r = trCheck(t, f.trust(t, igpec.NewSnapshot("t", trNow, rec)), f.msg.bytes(t))
	wantError(t, r, "chain")
	// The same message checked when the CA was still valid (pecctl verify --at).
	r, err := f.trust(t, igpec.NewSnapshot("t", trNow, rec)).CheckAt(context.Background(), f.msg.bytes(t), nil, trNow.AddDate(0, 0, -2))
	if err != nil || !r.Trusted {
		t.Fatalf("at an earlier time: %v %+v", err, r.Findings)
	}
}

func TestTrustFromDomainNotManaged(t *testing.T) {
	f := newTrFix(t)
	f.msg.from = "posta-certificata@pec-z.test"
	r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	wantError(t, r, "from-domain-unmanaged")
	if r.Provider != f.rec {
		t.Errorf("provider %v", r.Provider)
	}
}

func TestTrustMittenteDomainNotManaged(t *testing.T) {
	f := newTrFix(t)
	f.msg.mittente = "mallory@pec-a.test"
	r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	wantError(t, r, "mittente-domain-unmanaged")
}

// Several records share the certificate (a main entry and a secondary environment): the one
// managing the From domain is the sender's (pec-spec.md §9.3 step 3).
func TestTrustSecondaryEnvironment(t *testing.T) {
	f := newTrFix(t)
	unit, err := igpec.NewRecord(trProvider, "Ambiente 2", "ricevute@pec2-b.test", []*x509.Certificate{f.cert}, "pec2-b.test")
	if err != nil {
		t.Fatal(err)
	}
	f.msg.from, f.msg.mittente = "posta-certificata@pec2-b.test", "carla@pec2-b.test"
	r := trCheck(t, f.trust(t, igpec.NewSnapshot("t", trNow, f.rec, unit)), f.msg.bytes(t))
	if !r.Trusted || r.Provider != unit {
		t.Fatalf("provider %v, %+v", r.Provider, r.Findings)
	}
}

func TestTrustSignature(t *testing.T) {
	f := newTrFix(t)
	tr := f.trust(t, f.index)
	r := trCheck(t, tr, []byte("From: a@b.test\r\nTo: c@d.test\r\nSubject: hi\r\n\r\nbody\r\n"))
	wantError(t, r, "not-signed")
	raw := f.msg.bytes(t)
	bad := []byte(strings.Replace(string(raw), "Messaggio di posta", "Messaggio di Posta", 1))
	r = trCheck(t, tr, bad)
	wantError(t, r, "signature")
	// Classify told to skip the signature: Check verifies it.
	c := pec.Classify(raw, pec.ClassifyOptions{SkipSignature: true})
	if r, err := tr.Check(context.Background(), raw, c); err != nil || !r.Trusted {
		t.Fatalf("%v %+v", err, r.Findings)
	}
}

func TestTrustSigningWindow(t *testing.T) {
	f := newTrFix(t)
	f.msg.at = trNow.AddDate(0, 0, -6)
	r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	wantError(t, r, "signing-time")
	f.msg.at = trNow.Add(time.Hour)
	r = trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
	wantError(t, r, "signing-time")
	f.config.SigningWindow = 0 // archives: any past signing time
	f.msg.at = trNow.AddDate(0, 0, -6)
	if r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t)); !r.Trusted {
		t.Fatalf("%+v", r.Findings)
	}
}

// The profile of a peer's certificate only warns.
func TestTrustProfileWarns(t *testing.T) {
	f := newTrFix(t)
	k := trKey(1)
	cert := trCreate(t, &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{trProvider}, CommonName: "Posta Certificata " + trProvider},
		NotBefore: trNow.AddDate(-1, 0, 0), NotAfter: trNow.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		EmailAddresses: []string{"posta-certificata@pec-b.test"}, SubjectKeyId: trSKI(k),
	}, f.ca.cert, k.Public(), f.ca.key)
	rec, _ := igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{cert}, "pec-b.test")
	f.msg.chain = []*x509.Certificate{cert}
	r := trCheck(t, f.trust(t, igpec.NewSnapshot("t", trNow, rec)), f.msg.bytes(t))
	if !r.Trusted || trCodes(r)["cert-basic-constraints"] != pec.Warning {
		t.Fatalf("%+v", r.Findings)
	}
}

func TestNewTrustValidates(t *testing.T) {
	f := newTrFix(t)
	for name, tc := range map[string]struct {
		cfg pec.TrustConfig
		idx pec.SignerIndex
	}{
		"no anchors":         {pec.TrustConfig{}, f.index},
		"no index":           {pec.TrustConfig{Anchors: f.config.Anchors}, nil},
		"refresh > max age":  {pec.TrustConfig{Anchors: f.config.Anchors, CRLRefresh: 2 * time.Hour, CRLMaxAge: time.Hour}, f.index},
		"negative":           {pec.TrustConfig{Anchors: f.config.Anchors, SigningWindow: -1}, f.index},
		"missing file":       {pec.TrustConfig{Anchors: f.config.Anchors, CRLs: []string{"/nonexistent/ca.crl"}}, f.index},
		"ldap crl":           {pec.TrustConfig{Anchors: f.config.Anchors, CRLs: []string{"ldap://ca1.example/cn=crl"}}, f.index},
		"crl listed twice":   {pec.TrustConfig{Anchors: f.config.Anchors, CRLs: []string{f.crl, f.crl}}, f.index},
		"http without host":  {pec.TrustConfig{Anchors: f.config.Anchors, CRLs: []string{"http:///ca.crl"}}, f.index},
		"nil anchor":         {pec.TrustConfig{Anchors: []*x509.Certificate{nil}}, f.index},
		"partial nil anchor": {pec.TrustConfig{Partial: true, Anchors: []*x509.Certificate{nil}}, nil},
	} {
		if _, err := pec.NewTrust(tc.cfg, pec.TrustDeps{Index: tc.idx}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	tr, err := pec.NewTrust(pec.TrustConfig{Partial: true}, pec.TrustDeps{})
	if err != nil {
		t.Fatal(err)
	}
	r := trCheck(t, tr, f.msg.bytes(t))
	if !r.Trusted || len(r.Findings) != 0 || len(r.Skipped) != 3 {
		t.Fatalf("partial: %+v %q", r.Findings, r.Skipped)
	}
}

// Concurrent checks share the CRL cache; one fetch serves them all (run with -race).
func TestTrustConcurrentCRL(t *testing.T) {
	f := newTrFix(t)
	var fetches atomic.Int32
	crl := f.ca.crl(t, trNow.Add(-time.Hour), trNow.AddDate(0, 0, 7))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		time.Sleep(20 * time.Millisecond)
		w.Write(crl)
	}))
	defer srv.Close()
	f.config.CRLs = []string{srv.URL}
	tr := f.trust(t, f.index)
	raw := f.msg.bytes(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tr.Check(context.Background(), raw, nil)
			if err != nil || !r.Trusted {
				t.Errorf("%v %+v", err, r.Findings)
			}
		}()
	}
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}
