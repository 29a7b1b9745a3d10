// Package hsm hands the rest of the code a crypto.Signer and its certificate chain for each
// PEC domain, and hides everything PKCS#11-shaped.
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
