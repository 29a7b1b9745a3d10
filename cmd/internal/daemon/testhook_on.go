//go:build testhooks

package daemon

import (
	"crypto"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec"
)

// hookKeys delays every signature by the duration written in $PEC_TEST_HOOK_DIR/sign-delay
// (read at each signature), to play a hung HSM. Only in binaries built with -tags testhooks.
func hookKeys(keys pec.Signer) pec.Signer { return delayKeys{keys} }

type delayKeys struct{ pec.Signer }

func (d delayKeys) SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error) {
	s, chain, err := d.Signer.SignerFor(domain)
	return delaySigner{s}, chain, err
}

type delaySigner struct{ crypto.Signer }

func (d delaySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if b, err := os.ReadFile(filepath.Join(os.Getenv("PEC_TEST_HOOK_DIR"), "sign-delay")); err == nil {
		if dur, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
			time.Sleep(dur)
		}
	}
	return d.Signer.Sign(r, digest, opts)
}
