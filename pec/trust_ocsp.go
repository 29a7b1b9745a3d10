package pec

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP (RFC 6960) beside the CRLs: pec-spec.md §7.2 step 3 reads "check revocation via CRL
// (and/or OCSP; AIA http://ca1.agid.gov.it/OCSP)". With TrustConfig.OCSP the signer
// certificate's status is asked of the responder its Authority Information Access names,
// and the answer counts as a CRL of its issuer would: good covers the certificate, revoked
// is judged against the signing time as a CRL entry is. Intermediates are left to the CRLs
// (AgID's CA1 is an anchor; its own revocation is the anchor list's business).
//
// A response is cached per certificate and asked again after CRLRefresh, or sooner once
// its nextUpdate has passed; when the responder cannot be reached it stays usable for
// CRLMaxAge from the last current response, as a CRL does. A responder that cannot answer
// only matters when no CRL covers the certificate either: the status is then unknown and
// the reception point answers 4xx (ErrRevocationUnknown), never a verdict.

// maxOCSPResponse bounds a response (a few kilobytes in practice).
const maxOCSPResponse = 1 << 20

// ocspChecker asks responders and caches their answers.
type ocspChecker struct {
	cfg    *TrustConfig
	client *http.Client
	log    *slog.Logger

	mu    sync.Mutex
	cache map[string]*ocspEntry // issuer DER + serial -> entry
}

// ocspEntry is what we hold about one certificate.
type ocspEntry struct {
	mu      sync.Mutex // serialises the fetches of this certificate
	resp    *ocsp.Response
	good    time.Time // when resp was fetched: the last time we held a current response
	lastTry time.Time
	lastErr error
}

func newOCSPChecker(cfg *TrustConfig, client *http.Client, log *slog.Logger) *ocspChecker {
	return &ocspChecker{cfg: cfg, client: client, log: log.With(slog.String("component", "trust")), cache: map[string]*ocspEntry{}}
}

// responder is the first http(s) OCSP URL of cert's AIA, "" when it names none.
func responder(cert *x509.Certificate) string {
	for _, s := range cert.OCSPServer {
		if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			return s
		}
	}
	return ""
}

// status returns the answer of the responder at url about cert, issued by issuer, usable at
// now: from the cache, or asked again when due (at most once per crlRetry after a failure).
func (o *ocspChecker) status(ctx context.Context, url string, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	e := o.entry(cert, issuer, now)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !o.due(e, now) || (!e.lastTry.IsZero() && e.lastErr != nil && now.Sub(e.lastTry) < crlRetry) {
		return e.resp, o.errUnlessUsable(e, now)
	}
	e.lastTry = now
	resp, err := o.ask(ctx, url, cert, issuer, now)
	if err == nil {
		err = o.current(resp, now)
	}
	e.lastErr = err
	if err != nil {
		o.log.Warn("ocsp not refreshed", slog.String("responder", redact(url)), slog.String("serial", cert.SerialNumber.String()),
			slog.Any("error", err), slog.Bool("usable", o.usable(e, now)))
		return e.resp, o.errUnlessUsable(e, now)
	}
	e.resp, e.good = resp, now
	return resp, nil
}

// entry is the cache entry of cert, made when missing. Entries unused past CRLMaxAge are
// dropped when the cache grows (peers have a certificate or two each).
func (o *ocspChecker) entry(cert, issuer *x509.Certificate, now time.Time) *ocspEntry {
	key := string(issuer.Raw) + "|" + cert.SerialNumber.String()
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.cache[key]
	if e == nil {
		if len(o.cache) >= 1000 {
			for k, old := range o.cache {
				if old.mu.TryLock() {
					if now.Sub(old.lastTry) > o.cfg.CRLMaxAge {
						delete(o.cache, k)
					}
					old.mu.Unlock()
				}
			}
		}
		e = &ocspEntry{}
		o.cache[key] = e
	}
	return e
}

func (o *ocspChecker) due(e *ocspEntry, now time.Time) bool {
	if e.resp == nil || now.Sub(e.good) >= o.cfg.CRLRefresh {
		return true
	}
	return !e.resp.NextUpdate.IsZero() && now.After(e.resp.NextUpdate)
}

func (o *ocspChecker) usable(e *ocspEntry, now time.Time) bool {
	return e.resp != nil && !e.good.IsZero() && now.Sub(e.good) <= o.cfg.CRLMaxAge
}

func (o *ocspChecker) errUnlessUsable(e *ocspEntry, now time.Time) error {
	switch {
	case o.usable(e, now):
		return nil
	case e.lastErr != nil:
		return e.lastErr
	default:
		return fmt.Errorf("stale: last current response at %s", e.good.UTC().Format(time.RFC3339))
	}
}

// current checks that a response is in force at now: produced for a period that has begun
// (with the clock skew we allow a signer) and, when it says so, not yet over.
func (o *ocspChecker) current(resp *ocsp.Response, now time.Time) error {
	switch {
	case resp.ThisUpdate.After(now.Add(maxFutureSkew)):
		return fmt.Errorf("response thisUpdate %s is in the future", resp.ThisUpdate.UTC().Format(time.RFC3339))
	case !resp.NextUpdate.IsZero() && now.After(resp.NextUpdate):
		return fmt.Errorf("response past its nextUpdate %s", resp.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// ask posts an OCSP request for cert to url and returns the verified response.
func (o *ocspChecker) ask(ctx context.Context, url string, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	reqDER, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		return nil, err
	}
	body, err := fetch(ctx, o.client, o.cfg.CRLTimeout, http.MethodPost, url, reqDER,
		map[string]string{"Content-Type": "application/ocsp-request", "Accept": "application/ocsp-response"}, maxOCSPResponse)
	if err != nil {
		return nil, err
	}
	return verifyOCSP(body, cert, issuer, now)
}

// verifyOCSP parses a response about cert and checks who signed it (RFC 6960 §4.2.2.2): the
// issuer itself, or a responder certificate the issuer signed for that purpose
// (id-kp-OCSPSigning) and valid at now. golang.org/x/crypto/ocsp refuses a response that
// carries the issuer's own certificate when the issuer is not self-signed, and accepts a
// delegate without its extended key usage, so the parse leaves the signer to this check.
func verifyOCSP(der []byte, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	resp, err := ocsp.ParseResponseForCert(der, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	switch rc := resp.Certificate; {
	case rc == nil || bytes.Equal(rc.Raw, issuer.Raw):
		if err := resp.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("not signed by the issuer %s: %w", issuer.Subject, err)
		}
	default:
		if err := rc.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("responder certificate %s not issued by %s: %w", rc.Subject, issuer.Subject, err)
		}
		if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return nil, fmt.Errorf("responder certificate %s is not authorised for OCSP signing", rc.Subject)
		}
		if now.Before(rc.NotBefore) || now.After(rc.NotAfter) {
			return nil, fmt.Errorf("responder certificate %s not valid now", rc.Subject)
		}
		// ParseResponseForCert verified the response's signature with rc.
	}
	return resp, nil
}

// redact is a URL without its credentials, for logs and messages.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}
