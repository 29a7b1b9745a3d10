package config

import (
	"fmt"
	"net/url"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec"
)

// Trust is the reception point's trust check of incoming PEC messages (pec.TrustConfig;
// RFC 6109 §7, pec-spec.md §7.2): the anchors peers' signatures must chain to at their
// signing time, the CRLs that say which provider certificates are revoked, and how far back a
// signing time may lie. Required by pec-milter.
type Trust struct {
	// Anchors are PEM files of the trust anchors: AgID CA1 (or its root, Actalis
	// Authentication Root CA), and the former DigitPA CA1 to accept messages signed under it.
	Anchors []string `yaml:"anchors"`
	// CRLs are CRL files or http(s) URLs (DER or PEM), e.g. AgID CA1's
	// http://ca1.agid.gov.it/CRL. Without any, revocation is not checked (logged per message).
	CRLs []string `yaml:"crls"`
	// CRLRefresh is how often a CRL is fetched again; default 1h (pec-spec.md §7.2 step 3: a
	// bounded refresh).
	CRLRefresh time.Duration `yaml:"crl_refresh"`
	// CRLMaxAge is how long a CRL that cannot be refreshed stays usable; past it messages whose
	// revocation status depends on it are temp-failed (4xx). Default 24h.
	CRLMaxAge time.Duration `yaml:"crl_max_age"`
	// CRLTimeout bounds one CRL download, and one OCSP request; default 15s.
	CRLTimeout time.Duration `yaml:"crl_timeout"`
	// OCSP also asks the OCSP responder that a signer certificate names (AgID CA1's
	// certificates name http://ca1.agid.gov.it/OCSP) for its status, beside the CRLs;
	// answers are cached and aged with crl_refresh and crl_max_age. Either source saying
	// revoked refuses the message; when neither can answer it is temp-failed (4xx). Default
	// false: the CRLs alone.
	OCSP bool `yaml:"ocsp"`
	// SigningWindow is how far before now a message's signing time may lie (certificates are
	// checked at the signing time, which the signer asserts). Default 120h, Postfix's
	// maximal_queue_lifetime: no message can take longer to arrive.
	SigningWindow time.Duration `yaml:"signing_window"`
}

// DefaultSigningWindow is Postfix's default maximal_queue_lifetime.
const DefaultSigningWindow = 5 * 24 * time.Hour

func (t *Trust) validate() error {
	if len(t.Anchors) == 0 {
		return bad("trust.anchors", "required (PEM files of the CA certificates peers' signatures chain to: AgID CA1)")
	}
	for i, c := range t.CRLs {
		if u, err := url.Parse(c); c == "" || (err == nil && u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" && len(u.Scheme) > 1) {
			return bad(fmt.Sprintf("trust.crls[%d]", i), "%q: want a file or an http(s) URL", c)
		}
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{
		{"trust.crl_refresh", &t.CRLRefresh, pec.DefaultCRLRefresh}, {"trust.crl_max_age", &t.CRLMaxAge, pec.DefaultCRLMaxAge},
		{"trust.crl_timeout", &t.CRLTimeout, pec.DefaultCRLTimeout}, {"trust.signing_window", &t.SigningWindow, DefaultSigningWindow},
	} {
		if *d.v < 0 {
			return bad(d.key, "%v: must not be negative", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if t.CRLRefresh > t.CRLMaxAge {
		return bad("trust.crl_refresh", "%v: longer than trust.crl_max_age %v", t.CRLRefresh, t.CRLMaxAge)
	}
	return nil
}

// TrustConfig reads the anchors and returns the engine's trust configuration.
func (t *Trust) TrustConfig() (pec.TrustConfig, error) {
	tc := pec.TrustConfig{CRLs: t.CRLs, CRLRefresh: t.CRLRefresh, CRLMaxAge: t.CRLMaxAge, CRLTimeout: t.CRLTimeout, OCSP: t.OCSP,
		SigningWindow: t.SigningWindow}
	for i, f := range t.Anchors {
		certs, err := hsm.ReadChain(f)
		if err != nil || len(certs) == 0 {
			return tc, bad(fmt.Sprintf("trust.anchors[%d]", i), "%s: no certificate read (%v)", f, err)
		}
		tc.Anchors = append(tc.Anchors, certs...)
	}
	return tc, nil
}
