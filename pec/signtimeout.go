package pec

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"time"
)

// boundedKeys bounds every signature: a hung HSM (a PKCS#11 call that never returns, a
// network HSM that stopped answering) must not hold an end-of-message, nor a sweeper or
// drainer, for ever. After the timeout the call fails with a temporary error; the PKCS#11
// call may still finish in the background, and its result is dropped.
type boundedKeys struct {
	keys    Signer
	timeout time.Duration
}

func (b boundedKeys) SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error) {
	s, chain, err := b.keys.SignerFor(domain)
	if err != nil {
		return nil, nil, err
	}
	return boundedSigner{s, b.timeout}, chain, nil
}

type boundedSigner struct {
	crypto.Signer
	timeout time.Duration
}

// ErrSignTimeout is the error of a signature that did not come back in time.
var ErrSignTimeout = fmt.Errorf("pec: the signing key did not answer in time")

func (s boundedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	type result struct {
		sig []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sig, err := s.Signer.Sign(r, digest, opts)
		ch <- result{sig, err}
	}()
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case res := <-ch:
		return res.sig, res.err
	case <-t.C:
		return nil, fmt.Errorf("%w (%s)", ErrSignTimeout, s.timeout)
	}
}
