package pec

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/certprofile"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/smime"
)

// SignerIndex finds the providers index records that list a providerCertificateHash (hex
// SHA-1 of a certificate's DER, any case: RFC 6109 §4.5.1). igpec.Index and igpec.Snapshot
// have this shape. Lookups use the local copy of the index and do no I/O.
type SignerIndex interface {
	ByHash(hash string) []*igpec.Record
}

// TrustConfig configures the trust check of the reception point (pec-spec.md §7.2). NewTrust
// validates it and applies the defaults.
type TrustConfig struct {
	// Anchors are the trust roots signer chains must reach (AgID CA1, or its root). Required
	// unless Partial.
	Anchors []*x509.Certificate
	// CRLs are the revocation sources: paths of CRL files or http(s) URLs, DER or PEM
	// (pec-spec.md §7.2 step 3). A CRL covers the certificates of its issuer. Optional; with
	// none, revocation is not checked and TrustResult.Skipped says so.
	CRLs []string
	// CRLRefresh is how often a CRL is fetched again (sooner once its nextUpdate has passed);
	// default 1h, at most CRLMaxAge. pec-spec.md §7.2 step 3: the cache has a bounded refresh.
	CRLRefresh time.Duration
	// CRLMaxAge is how long a CRL that can no longer be refreshed stays usable, counted from
	// the last time we held a current one (fetched before its nextUpdate). Beyond it the
	// revocation status is unknown and Check fails temporarily (ErrRevocationUnknown);
	// default 24h.
	CRLMaxAge time.Duration
	// CRLTimeout bounds one fetch; default 15s. It bounds an OCSP request too.
	CRLTimeout time.Duration
	// OCSP asks the responder named in the signer certificate's Authority Information
	// Access for its status (RFC 6960), beside the CRLs (trust_ocsp.go). Its answers are
	// cached and aged as the CRLs are, with CRLRefresh and CRLMaxAge.
	OCSP bool
	// SigningWindow bounds how far before now a message's signing time may lie: the chain,
	// validity and revocation are checked at the signing time (a busta retried by the peer's
	// MTA for a day was still signed under a then valid certificate), but the signing time
	// is asserted by the signer, so live traffic bounds it to the longest a message can take
	// to reach us (Postfix's maximal_queue_lifetime is 5 days). A signing time more than 15
	// minutes in the future is refused as well. Zero leaves it unbounded: archived messages
	// (pecctl verify).
	SigningWindow time.Duration
	// Partial makes Anchors and the index optional, for a conformance checker (pecctl
	// verify): checks that need them are skipped and listed in TrustResult.Skipped. The
	// reception point leaves it false.
	Partial bool
}

// Defaults of TrustConfig.
const (
	DefaultCRLRefresh = time.Hour
	DefaultCRLMaxAge  = 24 * time.Hour
	DefaultCRLTimeout = 15 * time.Second
)

// maxFutureSkew is how far in the future a signing time may be (clocks of two providers).
const maxFutureSkew = 15 * time.Minute

// TrustDeps are the trust check's collaborators.
type TrustDeps struct {
	Index  SignerIndex  // the providers index; required unless TrustConfig.Partial
	Clock  Clock        // default SystemClock: CRL ages and the signing window
	HTTP   *http.Client // CRL downloads and OCSP requests; default a client with no cookies and CRLTimeout
	Logger *slog.Logger // CRL and OCSP fetch failures; default discard
}

// ErrRevocationUnknown is wrapped (inside a *Temporary) when the revocation status of a
// signer cannot be established: its CRL cannot be fetched and the cached copy is older than
// TrustConfig.CRLMaxAge, or was never loaded. The reception point answers 4xx so that the
// peer retries; it is not a verdict on the message.
var ErrRevocationUnknown = errors.New("pec: revocation status unknown")

// Trust is the reception point's trust check (RFC 6109 §7, pec-spec.md §7.2 steps 1–4):
// signature, signer in the providers index, chain to the anchors at the signing time,
// validity, revocation, certificate profile, and the domains the signer's provider manages.
// It is safe for concurrent use.
type Trust struct {
	cfg   TrustConfig
	index SignerIndex
	clock Clock
	roots *x509.CertPool
	crls  []*crlSource
	ocsp  *ocspChecker // nil unless TrustConfig.OCSP
}

// NewTrust validates cfg and deps and applies the defaults. It does no I/O besides checking
// that CRL files exist: CRLs are loaded on first use (or by Refresh).
func NewTrust(cfg TrustConfig, deps TrustDeps) (*Trust, error) {
	if cfg.CRLRefresh == 0 {
		cfg.CRLRefresh = DefaultCRLRefresh
	}
	if cfg.CRLMaxAge == 0 {
		cfg.CRLMaxAge = DefaultCRLMaxAge
	}
	if cfg.CRLTimeout == 0 {
		cfg.CRLTimeout = DefaultCRLTimeout
	}
	switch {
	case cfg.CRLRefresh < 0 || cfg.CRLMaxAge < 0 || cfg.CRLTimeout < 0 || cfg.SigningWindow < 0:
		return nil, errors.New("trust: negative duration")
	case cfg.CRLRefresh > cfg.CRLMaxAge:
		return nil, fmt.Errorf("trust: crl refresh %s is longer than the crl max age %s", cfg.CRLRefresh, cfg.CRLMaxAge)
	case !cfg.Partial && len(cfg.Anchors) == 0:
		return nil, errors.New("trust: no trust anchors")
	case !cfg.Partial && deps.Index == nil:
		return nil, errors.New("trust: no providers index")
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock
	}
	if deps.HTTP == nil {
		deps.HTTP = &http.Client{Timeout: cfg.CRLTimeout}
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	t := &Trust{cfg: cfg, index: deps.Index, clock: deps.Clock}
	if len(cfg.Anchors) > 0 {
		t.roots = x509.NewCertPool()
		for i, a := range cfg.Anchors {
			if a == nil {
				return nil, fmt.Errorf("trust: anchor %d is nil", i)
			}
			t.roots.AddCert(a)
		}
	}
	if cfg.OCSP {
		t.ocsp = newOCSPChecker(&t.cfg, deps.HTTP, deps.Logger)
	}
	seen := map[string]bool{}
	for _, loc := range cfg.CRLs {
		if seen[loc] {
			return nil, fmt.Errorf("trust: crl %s listed twice", loc)
		}
		seen[loc] = true
		s, err := newCRLSource(loc, &cfg, deps.HTTP, deps.Logger)
		if err != nil {
			return nil, err
		}
		t.crls = append(t.crls, s)
	}
	return t, nil
}

// TrustResult is what Check found about one message.
type TrustResult struct {
	// Trusted is true when no finding is an Error: the message was signed by the listed
	// provider Provider, with a valid, unrevoked certificate chaining to an anchor (as far as
	// the configured checks go: see Skipped).
	Trusted bool
	// Provider is the signer's record in the providers index: its mailReceipt receives the
	// presa in carico and the rilevazione virus (pec-spec.md §9.3 step 3). Nil when the
	// signer is not listed or no index was given.
	Provider *igpec.Record
	Signer   *x509.Certificate   // the verified signer certificate; nil when the signature failed
	At       time.Time           // the time the certificates were checked at
	Chain    []*x509.Certificate // signer first, anchor last; nil when not built
	Findings []Deviation
	// Skipped lists the checks that were not run because their input was not configured
	// (TrustConfig.Partial): no anchors, no index, no CRL.
	Skipped []string
}

func (r *TrustResult) add(sev Severity, code, rule, where, f string, a ...any) {
	r.Findings = append(r.Findings, Deviation{Code: code, Severity: sev, Rule: rule, Where: where, Message: fmt.Sprintf(f, a...)})
}

func (r *TrustResult) done() *TrustResult {
	r.Trusted = true
	for _, f := range r.Findings {
		if f.Severity == Error {
			r.Trusted = false
		}
	}
	return r
}

const whereSigner = "smime.p7s signer certificate"

// Check runs the trust check on raw, the exact message bytes received, at the message's
// signing time (the CMS signingTime, else the Date header). c is Classify's result for raw
// (nil: Check classifies); when Classify skipped the signature, Check verifies it.
//
// The error is nil or a *Temporary wrapping ErrRevocationUnknown: the signer's revocation
// status cannot be established now and the message, which nothing else condemns, must be
// retried, not judged (the result is complete, with a revocation-unknown Error). Every
// verdict is in the result: Trusted, and Findings with their codes.
func (t *Trust) Check(ctx context.Context, raw []byte, c *Classified) (*TrustResult, error) {
	return t.CheckAt(ctx, raw, c, time.Time{})
}

// CheckAt is Check at a given time instead of the signing time (pecctl verify --at); the
// signing window does not apply.
func (t *Trust) CheckAt(ctx context.Context, raw []byte, c *Classified, at time.Time) (*TrustResult, error) {
	if c == nil {
		c = Classify(raw, ClassifyOptions{})
	}
	r := &TrustResult{}
	// pec-spec.md §7.2 step 1: a signature is present; step 3: it verifies.
	v, sigErr := c.Verified, c.SigErr
	if c.Signed && v == nil && sigErr == nil { // Classify was told to skip it
		v, sigErr = smime.Verify(raw, smime.VerifyOptions{})
	}
	switch {
	case !c.Signed:
		r.add(Error, "not-signed", "§7.2", "Content-Type", "no S/MIME signature: not signed by a PEC provider")
		return r.done(), nil
	case v == nil:
		r.add(Error, "signature", "§7.2", "smime.p7s", "%v", sigErr)
		return r.done(), nil
	}
	r.Signer = v.Signer
	r.At = t.checkTime(r, v, c, at)
	from := fromDomain(c)
	t.lookup(r, from)
	leafOK := t.validity(r)
	if leafOK {
		t.chain(r, v)
	}
	err := t.revocation(ctx, r)
	// pec-spec.md §8.1: the profile of a peer's certificate only warns (§8.2, §13 #8).
	name := ""
	if r.Provider != nil {
		name = r.Provider.Name
	}
	for _, f := range certprofile.Check(r.Signer, certprofile.Options{Role: certprofile.Peer, ProviderName: name}) {
		r.add(Warning, "cert-"+strings.ReplaceAll(f.Check, "_", "-"), "§8.1", "signer certificate", "%s", f.Detail)
	}
	t.domains(r, c, from)
	r.done()
	if err != nil {
		// An unknown revocation status only defers a message that would otherwise be
		// trusted: with another Error the verdict stands whatever the CRL says.
		for _, f := range r.Findings {
			if f.Severity == Error && f.Code != "revocation-unknown" {
				return r, nil
			}
		}
	}
	return r, err
}

// checkTime is the time to check certificates at, and the signing window check.
func (t *Trust) checkTime(r *TrustResult, v *smime.Verified, c *Classified, at time.Time) time.Time {
	if !at.IsZero() {
		return at
	}
	now := t.clock.Now()
	at = v.SigningTime
	if at.IsZero() {
		at = c.SignedAt()
	}
	if at.IsZero() {
		return now
	}
	if w := t.cfg.SigningWindow; w > 0 {
		switch {
		case at.Before(now.Add(-w)):
			r.add(Error, "signing-time", "§7.2", "smime.p7s signingTime", "signed at %s, more than %s ago: the signing time is not credible", at.UTC().Format(time.RFC3339), w)
		case at.After(now.Add(maxFutureSkew)):
			r.add(Error, "signing-time", "§7.2", "smime.p7s signingTime", "signed at %s, in the future", at.UTC().Format(time.RFC3339))
		}
	}
	return at
}

// lookup finds the signer in the providers index (pec-spec.md §7.2 step 2, §9.3 step 2):
// SHA-1 of the certificate's DER in providerCertificateHash, then the certificate compared
// byte for byte with the record's providerCertificate. When several records hold it (a main
// entry and a secondary environment sharing a certificate) the one managing the From domain
// wins (§9.3 step 3).
func (t *Trust) lookup(r *TrustResult, from string) {
	if t.index == nil {
		r.Skipped = append(r.Skipped, "providers index: none given; the signer was not looked up and its managed domains were not checked")
		return
	}
	hash := igpec.CertificateHash(r.Signer.Raw)
	recs := t.index.ByHash(hash)
	var match []*igpec.Record
	for _, rec := range recs {
		if rec.HasCertificate(r.Signer.Raw) {
			match = append(match, rec)
		}
	}
	switch {
	case len(match) == 0 && len(recs) > 0:
		r.add(Error, "signer-cert-mismatch", "§7.2", whereSigner, "providerCertificateHash %s is listed by %s, but its providerCertificate differs from the signer's", hash, recs[0])
		return
	case len(match) == 0:
		r.add(Error, "signer-unlisted", "§7.2", whereSigner, "%s (sha1 %s) is not a provider certificate in the index", r.Signer.Subject, hash)
		return
	}
	r.Provider = match[0]
	for _, rec := range match {
		if from != "" && rec.Manages(from) {
			r.Provider = rec
			break
		}
	}
}

// domains: RFC 6109 §7 (SHOULD; pec-spec.md §7.2 step 4, §9.3 step 4): the From domain is one
// of the signer's managedDomains. We apply it as a rule: a listed provider signing for a domain
// it does not manage is the spoofing it guards against, and the busta di anomalia still
// delivers the message.
//
// INFERENCE (pec-spec.md §7.2 step 4): the certified sender (daticert mittente) is checked
// the same way, on the kinds the sender's own provider signs (busta, accettazione, the
// avvisi to the sender). The receipts of the recipient's provider carry another provider's
// mittente and are not checked. A provider can only certify senders in domains it manages:
// any other domain would be esterno to every peer.
func (t *Trust) domains(r *TrustResult, c *Classified, from string) {
	if r.Provider == nil {
		return
	}
	switch {
	case from == "":
		r.add(Error, "from-domain-unmanaged", "§7.2", "From", "no From address to check against the managed domains of %s", r.Provider)
	case !r.Provider.Manages(from):
		r.add(Error, "from-domain-unmanaged", "§7.2", "From", "%s is not a managed domain of %s", from, r.Provider)
	}
	if c.Daticert == nil || !signedBySenderProvider(c.Kind) {
		return
	}
	m := c.Daticert.Intestazione.Mittente
	d := addrDomain(m)
	switch {
	case d == "":
		r.add(Error, "mittente-domain-unmanaged", "§7.2", "daticert.xml intestazione/mittente", "%q has no domain", m)
	case !r.Provider.Manages(d):
		r.add(Error, "mittente-domain-unmanaged", "§7.2", "daticert.xml intestazione/mittente", "%s is not a managed domain of %s", d, r.Provider)
	}
}

// signedBySenderProvider reports whether the sender's provider signs messages of kind k (so
// the daticert mittente is one of its users).
func signedBySenderProvider(k Kind) bool {
	switch k {
	case KindBusta, KindAccettazione, KindNonAccettazione, KindNonAccettazioneVirus,
		KindMancataConsegnaVirus, KindPreavviso12h, KindPreavviso24h:
		return true
	}
	return false
}

// fromDomain is the domain of the From address, lower case, or "".
func fromDomain(c *Classified) string {
	v, ok := c.Header.Get("From")
	if !ok {
		return ""
	}
	a, err := addrOf(v)
	if err != nil {
		return ""
	}
	return addrDomain(a.Address)
}

func addrDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 || i == len(addr)-1 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}
