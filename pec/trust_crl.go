package pec

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// maxCRLSize bounds a CRL download or file (AgID CA1's CRL is a few kilobytes).
const maxCRLSize = 32 << 20

// crlRetry is the least time between two fetches of one source, so that an unreachable
// server is not asked again for every message (each would wait CRLTimeout).
const crlRetry = time.Minute

// crlSource is one configured CRL: a file or an http(s) URL, fetched on demand when due and
// cached. Loads are serialised; readers use the current state without locking.
type crlSource struct {
	loc    string // as configured
	name   string // for logs and messages (URL without credentials)
	url    bool
	cfg    *TrustConfig
	client *http.Client
	log    *slog.Logger

	state atomic.Pointer[crlState]

	mu      sync.Mutex // serialises loads; guards lastTry, lastErr
	lastTry time.Time
	lastErr error
}

// crlState is one loaded CRL, immutable but for the signature cache.
type crlState struct {
	list    *x509.RevocationList
	revoked map[string]*x509.RevocationListEntry // serial (decimal) -> entry
	fetched time.Time                            // when it was loaded
	// good is the last time we held a current CRL (loaded before its nextUpdate): the
	// start of CRLMaxAge.
	good time.Time

	sigMu  sync.Mutex
	sigErr map[string]error // issuer certificate DER -> CheckSignatureFrom result
}

func newCRLSource(loc string, cfg *TrustConfig, client *http.Client, log *slog.Logger) (*crlSource, error) {
	s := &crlSource{loc: loc, name: loc, cfg: cfg, client: client}
	switch u, err := url.Parse(loc); {
	case loc == "":
		return nil, errors.New("trust: empty crl source")
	case err == nil && (u.Scheme == "http" || u.Scheme == "https"):
		if u.Host == "" {
			return nil, fmt.Errorf("trust: crl %s: no host", u.Redacted())
		}
		s.url, s.name = true, u.Redacted()
	case err == nil && u.Scheme != "" && len(u.Scheme) > 1:
		return nil, fmt.Errorf("trust: crl %s: only files and http(s) URLs are supported", u.Redacted())
	default:
		if _, err := os.Stat(loc); err != nil {
			return nil, fmt.Errorf("trust: crl: %w", err)
		}
	}
	s.log = log.With(slog.String("component", "trust"), slog.String("crl", s.name))
	return s, nil
}

// due reports whether st should be loaded again at now.
func (s *crlSource) due(st *crlState, now time.Time) bool {
	if st == nil || now.Sub(st.fetched) >= s.cfg.CRLRefresh {
		return true
	}
	return !st.list.NextUpdate.IsZero() && now.After(st.list.NextUpdate)
}

// usable reports whether st may answer at now: CRLMaxAge from the last current copy.
func (s *crlSource) usable(st *crlState, now time.Time) bool {
	return st != nil && !st.good.IsZero() && now.Sub(st.good) <= s.cfg.CRLMaxAge
}

// current returns the state to use at now, loading the CRL first when it is due (at most
// once per crlRetry). The error is the last load failure when the state is not usable.
func (s *crlSource) current(ctx context.Context, now time.Time) (*crlState, error) {
	if st := s.state.Load(); !s.due(st, now) {
		return st, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state.Load()
	if !s.due(st, now) || (!s.lastTry.IsZero() && now.Sub(s.lastTry) < crlRetry) {
		return st, s.errUnlessUsable(st, now)
	}
	s.lastTry = now
	next, err := s.load(ctx, now, st)
	s.lastErr = err
	if err != nil {
		s.log.Warn("crl not refreshed", slog.Any("error", err), slog.Bool("usable", s.usable(st, now)))
		return st, s.errUnlessUsable(st, now)
	}
	s.state.Store(next)
	return next, s.errUnlessUsable(next, now)
}

func (s *crlSource) errUnlessUsable(st *crlState, now time.Time) error {
	switch {
	case s.usable(st, now):
		return nil
	case s.lastErr != nil:
		return s.lastErr
	case st == nil:
		return errors.New("not loaded")
	case st.good.IsZero():
		return fmt.Errorf("past its nextUpdate %s", st.list.NextUpdate.UTC().Format(time.RFC3339))
	default:
		return fmt.Errorf("stale: last current copy at %s", st.good.UTC().Format(time.RFC3339))
	}
}

// load reads and parses the CRL. prev is the state it replaces (its good time carries over
// when the new copy is itself past its nextUpdate).
func (s *crlSource) load(ctx context.Context, now time.Time, prev *crlState) (*crlState, error) {
	raw, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(raw); b != nil && b.Type == "X509 CRL" {
		raw = b.Bytes
	}
	list, err := x509.ParseRevocationList(raw)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	st := &crlState{list: list, fetched: now, revoked: make(map[string]*x509.RevocationListEntry, len(list.RevokedCertificateEntries)), sigErr: map[string]error{}}
	for i := range list.RevokedCertificateEntries {
		e := &list.RevokedCertificateEntries[i]
		if e.SerialNumber != nil {
			st.revoked[e.SerialNumber.String()] = e
		}
	}
	switch {
	case list.NextUpdate.IsZero() || !now.After(list.NextUpdate):
		st.good = now
	case prev != nil && bytes.Equal(prev.list.RawIssuer, list.RawIssuer):
		st.good = prev.good
	}
	return st, nil
}

func (s *crlSource) read(ctx context.Context) ([]byte, error) {
	if !s.url {
		f, err := os.Open(s.loc)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readLimited(f, maxCRLSize)
	}
	return fetch(ctx, s.client, s.cfg.CRLTimeout, http.MethodGet, s.loc, nil, nil, maxCRLSize)
}

// readLimited reads r whole, refusing more than limit bytes.
func readLimited(r io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// fetch makes one HTTP request of the trust check (a CRL download, an OCSP request) within
// timeout and returns the body of a 200 answer, at most limit bytes.
func fetch(ctx context.Context, client *http.Client, timeout time.Duration, method, url string, body []byte, hdr map[string]string, limit int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("http status %s", resp.Status)
	}
	return readLimited(resp.Body, limit)
}

// signedBy reports whether issuer signed the CRL (cached per issuer).
func (st *crlState) signedBy(issuer *x509.Certificate) error {
	st.sigMu.Lock()
	defer st.sigMu.Unlock()
	key := string(issuer.Raw)
	if err, ok := st.sigErr[key]; ok {
		return err
	}
	err := st.list.CheckSignatureFrom(issuer)
	st.sigErr[key] = err
	return err
}

// Refresh loads every CRL source now, whether due or not, and returns the failures joined. A
// daemon may call it at start-up and on a timer, to keep loads off the message path.
func (t *Trust) Refresh(ctx context.Context) error {
	now := t.clock.Now()
	var errs []error
	for _, s := range t.crls {
		s.mu.Lock()
		s.lastTry = now
		next, err := s.load(ctx, now, s.state.Load())
		s.lastErr = err
		if err == nil {
			s.state.Store(next)
		}
		s.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("crl %s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// compromised lists the CRL reasons after which a certificate's signatures cannot be trusted
// whatever signing time they claim: the key may have been used by someone else, who can set
// signingTime before the revocation (RFC 5280 §5.3.1).
var compromised = []int{1, 2, 10} // keyCompromise, cACompromise, aACompromise

// removeFromCRL (RFC 5280 §5.3.1) only appears in delta CRLs, which we do not read.
const removeFromCRL = 8

// revocation checks every certificate of the chain but the anchor against the configured
// CRLs (pec-spec.md §7.2 step 3), and the signer against its OCSP responder when
// TrustConfig.OCSP is set. The signer must be covered by a CRL of its issuer or by a
// current OCSP response; an intermediate is checked when a CRL covers it. A certificate is
// revoked for a signature made at r.At when it was revoked at or before r.At, or for a key
// compromise at any time; revoked later for another reason is a warning. Either source
// saying revoked is enough.
//
// It returns a *Temporary wrapping ErrRevocationUnknown when no source covers the signer (or
// an intermediate a CRL may cover) and one that would could not be asked: a CRL that cannot
// be fetched with a cached copy too old, a responder that cannot answer.
func (t *Trust) revocation(ctx context.Context, r *TrustResult) error {
	switch {
	case len(t.crls) == 0 && t.ocsp == nil:
		r.Skipped = append(r.Skipped, "revocation: no CRL given")
		return nil
	case len(r.Chain) < 2:
		return nil // no chain built (reported), or the signer is itself an anchor
	}
	now := t.clock.Now()
	states := make([]*crlState, len(t.crls))
	errs := make([]error, len(t.crls))
	for i, s := range t.crls {
		states[i], errs[i] = s.current(ctx, now)
	}
	for i := 0; i < len(r.Chain)-1; i++ {
		cert, issuer := r.Chain[i], r.Chain[i+1]
		where := whereSigner
		if i > 0 {
			where = fmt.Sprintf("intermediate certificate %s", cert.Subject)
		}
		covered, unknown := t.crlStatus(r, where, i, states, errs)
		if i == 0 && t.ocsp != nil {
			c, u := t.ocspStatus(ctx, r, where, cert, issuer, now)
			covered, unknown = covered || c, append(unknown, u...)
		}
		switch {
		case covered:
		case len(unknown) > 0:
			msg := strings.Join(unknown, "; ")
			r.add(Error, "revocation-unknown", "§7.2", where, "revocation status unknown (temporary): %s", msg)
			return &Temporary{Op: "revocation", Err: fmt.Errorf("%w: %s", ErrRevocationUnknown, msg)}
		case i == 0 && t.ocsp != nil:
			r.add(Warning, "revocation-unchecked", "§7.2", where, "no configured CRL is issued by %s and the certificate names no OCSP responder", issuer.Subject)
		case i == 0:
			r.add(Warning, "revocation-unchecked", "§7.2", where, "no configured CRL is issued by %s", issuer.Subject)
		}
	}
	return nil
}

// crlStatus checks r.Chain[i] against the CRLs: whether one of its issuer covers it, and
// the sources that cover it, or may (never loaded), but could not be used.
func (t *Trust) crlStatus(r *TrustResult, where string, i int, states []*crlState, errs []error) (covered bool, unknown []string) {
	cert, issuer := r.Chain[i], r.Chain[i+1]
	for j, st := range states {
		sameIssuer := st != nil && bytes.Equal(st.list.RawIssuer, cert.RawIssuer)
		switch {
		case errs[j] != nil && (sameIssuer || (st == nil && i == 0)):
			unknown = append(unknown, fmt.Sprintf("%s: %v", t.crls[j].name, errs[j]))
			continue
		case !sameIssuer || errs[j] != nil:
			continue
		}
		if err := st.signedBy(issuer); err != nil {
			unknown = append(unknown, fmt.Sprintf("%s: signature by %s does not verify: %v", t.crls[j].name, issuer.Subject, err))
			continue
		}
		covered = true
		if e := st.revoked[cert.SerialNumber.String()]; e != nil && e.ReasonCode != removeFromCRL {
			revokedAt(r, where, e.RevocationTime, e.ReasonCode, t.crls[j].name)
		}
	}
	return covered, unknown
}

// ocspStatus asks the signer's OCSP responder (trust_ocsp.go). Good or revoked covers the
// certificate; a responder that answers unknown, or cannot answer, does not.
func (t *Trust) ocspStatus(ctx context.Context, r *TrustResult, where string, cert, issuer *x509.Certificate, now time.Time) (covered bool, unknown []string) {
	url := responder(cert)
	if url == "" {
		return false, nil
	}
	name := "OCSP " + redact(url)
	resp, err := t.ocsp.status(ctx, url, cert, issuer, now)
	switch {
	case err != nil:
		return false, []string{fmt.Sprintf("%s: %v", name, err)}
	case resp.Status == ocsp.Good:
		return true, nil
	case resp.Status == ocsp.Revoked:
		revokedAt(r, where, resp.RevokedAt, resp.RevocationReason, name)
		return true, nil
	}
	return false, []string{name + ": the responder does not know the certificate"}
}

// revokedAt records a revocation found by source: an Error when it applies to a signature
// made at r.At (revoked at or before it, or a compromised key), else a Warning.
func revokedAt(r *TrustResult, where string, at time.Time, reason int, source string) {
	if !at.After(r.At) || slices.Contains(compromised, reason) {
		r.add(Error, "revoked", "§7.2", where, "revoked on %s (reason %d) by %s; signed at %s", at.UTC().Format(time.RFC3339), reason, source, r.At.UTC().Format(time.RFC3339))
		return
	}
	r.add(Warning, "revoked-later", "§7.2", where, "revoked on %s (reason %d), after the signing time %s", at.UTC().Format(time.RFC3339), reason, r.At.UTC().Format(time.RFC3339))
}
