package pec_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// ocspResponder is an in-process OCSP responder for the trust fixture's CA (the real one,
// openssl ocsp, is in trust_ocsp_openssl_test.go): it answers what status says, signed by
// signer (with cert embedded when set), or fails with HTTP 503 while down.
type ocspResponder struct {
	srv      *httptest.Server
	requests atomic.Int64

	mu      sync.Mutex
	status  int
	revoked time.Time
	reason  int
	signer  crypto.Signer
	cert    *x509.Certificate // embedded responder certificate, nil: none
	down    bool
	at      func() time.Time
	issuer  *x509.Certificate
}

func newOCSPResponder(t *testing.T, f *trFix) *ocspResponder {
	o := &ocspResponder{status: ocsp.Good, signer: f.ca.key, issuer: f.ca.cert, at: func() time.Time { return *f.now.Load() }}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *ocspResponder) set(fn func(o *ocspResponder)) { o.mu.Lock(); fn(o); o.mu.Unlock() }

func (o *ocspResponder) serve(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	req, err := ocsp.ParseRequest(body)
	if o.down || err != nil || r.Header.Get("Content-Type") != "application/ocsp-request" {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	now := o.at()
	id := o.cert // the responder's name in the response
	if id == nil {
		id = o.issuer
	}
	der, err := ocsp.CreateResponse(o.issuer, id, ocsp.Response{
		Status: o.status, SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
		RevokedAt: o.revoked, RevocationReason: o.reason, Certificate: o.cert,
	}, o.signer)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(der)
}

// ocspFix is the trust fixture with provider B's certificate naming the responder in its
// AIA, OCSP on, and no CRL unless a case adds it.
func ocspFix(t *testing.T) (*trFix, *ocspResponder) {
	f := newTrFix(t)
	o := newOCSPResponder(t, f)
	k := trKey(1)
	f.cert = trCreate(t, &x509.Certificate{
		Subject:   pkix.Name{Country: []string{"IT"}, Organization: []string{trProvider}, CommonName: "Posta Certificata " + trProvider},
		NotBefore: trNow.AddDate(-1, 0, 0), NotAfter: trNow.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{"posta-certificata@pec-b.test"}, SubjectKeyId: trSKI(k),
		OCSPServer: []string{o.srv.URL + "/ocsp"},
	}, f.ca.cert, k.Public(), f.ca.key)
	var err error
	if f.rec, err = igpec.NewRecord(trProvider, "", "ricevute@pec-b.test", []*x509.Certificate{f.cert}, "pec-b.test"); err != nil {
		t.Fatal(err)
	}
	f.index = igpec.NewSnapshot("test", trNow, f.rec)
	f.msg.chain = []*x509.Certificate{f.cert}
	f.config.CRLs, f.config.OCSP = nil, true
	return f, o
}

// checkErr is Check with its error.
func checkErr(t *testing.T, tr *pec.Trust, raw []byte) (*pec.TrustResult, error) {
	t.Helper()
	return tr.Check(context.Background(), raw, pec.Classify(raw, pec.ClassifyOptions{}))
}

// wantUnknown checks that Check fails temporarily with ErrRevocationUnknown, saying why.
func wantUnknown(t *testing.T, tr *pec.Trust, raw []byte, why string) {
	t.Helper()
	r, err := checkErr(t, tr, raw)
	var tmp *pec.Temporary
	if !errors.Is(err, pec.ErrRevocationUnknown) || !errors.As(err, &tmp) || trCodes(r)["revocation-unknown"] != pec.Error ||
		!strings.Contains(err.Error(), why) {
		t.Fatalf("err %v, findings %+v; want a temporary ErrRevocationUnknown saying %q", err, r.Findings, why)
	}
}

// TestTrustOCSP: with trust.ocsp the signer's status comes from its responder: good is
// trusted without any CRL; revoked is judged against the signing time as a CRL entry is;
// a responder that does not know the certificate, cannot answer, or signs with a key that
// is not the issuer's or an authorised delegate's leaves the status unknown (4xx) unless a
// CRL covers the certificate; either source saying revoked is enough.
func TestTrustOCSP(t *testing.T) {
	t.Run("good, no CRL", func(t *testing.T) {
		f, o := ocspFix(t)
		r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
		if !r.Trusted || len(r.Findings) != 0 || len(r.Skipped) != 0 || o.requests.Load() != 1 {
			t.Fatalf("trusted %v findings %+v skipped %v requests %d", r.Trusted, r.Findings, r.Skipped, o.requests.Load())
		}
	})
	for _, tc := range []struct {
		name   string
		at     time.Duration // revocation time from the signing time
		reason int
		want   pec.Severity
	}{
		{"revoked before signing", -time.Minute, ocsp.Unspecified, pec.Error},
		{"revoked after signing, superseded", time.Minute, ocsp.Superseded, pec.Warning},
		{"revoked after signing, key compromise", time.Minute, ocsp.KeyCompromise, pec.Error},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, o := ocspFix(t)
			o.set(func(o *ocspResponder) { o.status, o.revoked, o.reason = ocsp.Revoked, f.msg.at.Add(tc.at), tc.reason })
			r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t))
			code := map[pec.Severity]string{pec.Error: "revoked", pec.Warning: "revoked-later"}[tc.want]
			if trCodes(r)[code] != tc.want || r.Trusted != (tc.want == pec.Warning) {
				t.Fatalf("trusted %v findings %+v; want %s", r.Trusted, r.Findings, code)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		f, o := ocspFix(t)
		o.set(func(o *ocspResponder) { o.status = ocsp.Unknown })
		wantUnknown(t, f.trust(t, f.index), f.msg.bytes(t), "does not know the certificate")
		f.config.CRLs = []string{f.crl} // a CRL of the issuer covers it
		if r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t)); !r.Trusted {
			t.Fatalf("with a CRL: %+v", r.Findings)
		}
	})
	t.Run("responder down", func(t *testing.T) {
		f, o := ocspFix(t)
		o.set(func(o *ocspResponder) { o.down = true })
		wantUnknown(t, f.trust(t, f.index), f.msg.bytes(t), "503")
		f.config.CRLs = []string{f.crl}
		if r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t)); !r.Trusted {
			t.Fatalf("with a CRL: %+v", r.Findings)
		}
	})
	t.Run("revoked by OCSP, good by CRL", func(t *testing.T) {
		f, o := ocspFix(t)
		f.config.CRLs = []string{f.crl}
		o.set(func(o *ocspResponder) { o.status, o.revoked = ocsp.Revoked, f.msg.at.Add(-time.Hour) })
		wantError(t, trCheck(t, f.trust(t, f.index), f.msg.bytes(t)), "revoked")
	})
	t.Run("signed by another key", func(t *testing.T) {
		f, o := ocspFix(t)
		o.set(func(o *ocspResponder) { o.signer = trKey(7) })
		wantUnknown(t, f.trust(t, f.index), f.msg.bytes(t), "not signed by the issuer")
	})
	t.Run("delegated responder", func(t *testing.T) {
		f, o := ocspFix(t)
		k := trKey(8)
		delegate := func(eku ...x509.ExtKeyUsage) *x509.Certificate {
			return trCreate(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Test OCSP responder"},
				NotBefore: trNow.AddDate(0, -1, 0), NotAfter: trNow.AddDate(0, 1, 0), KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: eku}, f.ca.cert, k.Public(), f.ca.key)
		}
		o.set(func(o *ocspResponder) { o.signer, o.cert = k, delegate(x509.ExtKeyUsageOCSPSigning) })
		if r := trCheck(t, f.trust(t, f.index), f.msg.bytes(t)); !r.Trusted {
			t.Fatalf("delegate with id-kp-OCSPSigning: %+v", r.Findings)
		}
		// The same key and issuer, but a certificate that does not authorise OCSP signing.
		o.set(func(o *ocspResponder) { o.cert = delegate(x509.ExtKeyUsageEmailProtection) })
		wantUnknown(t, f.trust(t, f.index), f.msg.bytes(t), "not authorised for OCSP signing")
	})
	t.Run("cached, then stale", func(t *testing.T) {
		f, o := ocspFix(t)
		tr := f.trust(t, f.index)
		for range 3 {
			trCheck(t, tr, f.msg.bytes(t))
		}
		if n := o.requests.Load(); n != 1 {
			t.Fatalf("%d requests for three checks, want 1", n)
		}
		// Past CRLRefresh (1h) the responder is asked again; down, the answer of two hours
		// ago still serves within CRLMaxAge (24h), and no longer after it.
		o.set(func(o *ocspResponder) { o.down = true })
		f.advance(2 * time.Hour)
		f.msg.at = f.now.Load().Add(-time.Hour)
		if r := trCheck(t, tr, f.msg.bytes(t)); !r.Trusted || o.requests.Load() != 2 {
			t.Fatalf("within CRLMaxAge: trusted %v, %d requests, %+v", r.Trusted, o.requests.Load(), r.Findings)
		}
		f.advance(25 * time.Hour)
		f.msg.at = f.now.Load().Add(-time.Hour)
		wantUnknown(t, tr, f.msg.bytes(t), "503")
	})
}
