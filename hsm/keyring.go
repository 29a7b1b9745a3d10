// Package hsm hands the rest of the code a crypto.Signer and its certificate chain for each
// PEC domain, and hides everything PKCS#11-shaped.
//
// New(Config, Deps) loads the signer: section (Config documents its YAML shape): keys on a
// PKCS#11 token (github.com/miekg/pkcs11 directly, found by token label and key label or id,
// PIN from an environment variable or a file) or, for development only, a PEM key. At start-up
// every key must sign a probe that its certificate verifies, and every certificate must have
// the RFC 6109 §5.5 profile (CheckProfile) and be valid (CheckValidity). Check does the same
// and reports everything, for pecctl keys check.
//
// Each token has a pool of sessions sharing one login; a signature waits at most
// Config.SessionWait for a session. When the token or the library goes away the signer drops
// its sessions and reopens by itself, with backoff; meanwhile calls fail fast with an
// *UnavailableError (errors.Is(err, ErrUnavailable)). token.go and module.go describe the
// recovery and what SoftHSM2 does.
//
// Metrics (on Deps.Registerer): pec_hsm_signatures_total{outcome}, pec_hsm_errors_total{kind},
// pec_hsm_session_wait_seconds.
package hsm

import (
	"crypto"
	"crypto/x509"
	"errors"
)

// Keyring gives the signing key of a PEC domain. The chain starts with the signer's
// certificate, followed by the intermediates (never the root).
//
// The engine declares its own one-method interface with the same shape, so it does not import
// this package.
type Keyring interface {
	SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error)
}

// ErrUnavailable is returned (wrapped) when the token or module cannot sign right now: HSM down,
// no free session within the wait limit, token removed. Callers answer with a temporary failure
// so that Postfix retries.
var ErrUnavailable = errors.New("hsm: signer unavailable")

// ErrUnknownDomain is returned when no key is configured for a domain.
var ErrUnknownDomain = errors.New("hsm: no key for domain")
