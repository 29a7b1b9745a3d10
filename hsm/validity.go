package hsm

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// validSigner signs only while its certificate is valid (issue 12 item 10): a signature made
// before NotBefore or after NotAfter would be refused by every peer verifying it (RFC 6109
// §5.5, pec-spec §7.2 point 3, "check the validity period"), so signing it would attest
// nothing. Outside the validity the signer fails with a temporary *UnavailableError of kind
// "certificate" (the engine answers 4xx, Postfix keeps the mail) and logs an error at most
// once a minute: the alarm (metric pec_hsm_errors_total{kind="certificate"}). New refuses to
// start with such a certificate; WarnExpiring warns before it expires.
type validSigner struct {
	crypto.Signer
	cert *x509.Certificate
	now  func() time.Time
	met  *metrics
	log  *slog.Logger
	key  string // "signer" or "signer.keys[i]", for the log

	mu      sync.Mutex
	lastLog time.Time
}

// certificateLogEvery bounds the error log of a signer refusing to sign.
const certificateLogEvery = time.Minute

func (v *validSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := v.check(); err != nil {
		v.met.done(err)
		return nil, err
	}
	return v.Signer.Sign(rand, digest, opts)
}

func (v *validSigner) check() error {
	now := v.now()
	var why string
	switch {
	case now.Before(v.cert.NotBefore):
		why = "not valid before " + v.cert.NotBefore.UTC().Format(time.RFC3339)
	case now.After(v.cert.NotAfter):
		why = "expired on " + v.cert.NotAfter.UTC().Format(time.RFC3339)
	default:
		return nil
	}
	err := &UnavailableError{Kind: "certificate", Err: fmt.Errorf("signing certificate %s %s: no signature until a valid certificate is configured", Fingerprint(v.cert), why)}
	v.mu.Lock()
	logNow := v.lastLog.IsZero() || now.Sub(v.lastLog) >= certificateLogEvery || now.Before(v.lastLog)
	if logNow {
		v.lastLog = now
	}
	v.mu.Unlock()
	if logNow {
		v.log.Error("hsm: signing refused: the certificate is not valid now", slog.String("key", v.key),
			slog.String("subject", v.cert.Subject.String()), slog.String("sha1", Fingerprint(v.cert)),
			slog.Time("not_before", v.cert.NotBefore), slog.Time("not_after", v.cert.NotAfter))
	}
	return err
}
