package hsm

import (
	"crypto"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Hooks for the external tests (package hsm_test imports hsmtest, which imports hsm).

// unwrap gives the signer under the certificate-validity check.
func unwrap(s crypto.Signer) crypto.Signer {
	if v, ok := s.(*validSigner); ok {
		return v.Signer
	}
	return s
}

// HoldSession borrows a session of s's token, as a signature in flight would.
func HoldSession(s crypto.Signer) (release func(), err error) {
	ps := unwrap(s).(*p11Signer)
	l, err := ps.tok.acquire(ps.key)
	if err != nil {
		return nil, err
	}
	return func() { ps.tok.release(l, false) }, nil
}

// FinalizeModule calls C_Finalize on k's first module behind the signers' back; with
// initialize, C_Initialize too.
func FinalizeModule(k *Keys, initialize bool) error {
	m := k.modules[0]
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.ctx.Finalize()
	if initialize {
		err = m.ctx.Initialize()
	}
	return err
}

func TokenCount(k *Keys) int { return len(k.tokens) }

func metricsOf(s crypto.Signer) *metrics {
	switch s := unwrap(s).(type) {
	case *p11Signer:
		return s.met
	case *pemSigner:
		return s.met
	}
	panic("signer type")
}

// SignatureCount and ErrorCount read the metrics of s.
func SignatureCount(s crypto.Signer, outcome string) float64 {
	return counterValue(metricsOf(s).signatures.WithLabelValues(outcome))
}

func ErrorCount(s crypto.Signer, kind string) float64 {
	return counterValue(metricsOf(s).errors.WithLabelValues(kind))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// RawSession opens a session of its own on the token of s, through the same *pkcs11.Ctx (one
// C_Initialize per process), and returns a function making one raw C_SignInit + C_Sign
// CKM_RSA_PKCS signature: the baseline the benchmark compares the signer with.
func RawSession(s crypto.Signer) (sign func(data []byte) error, closeFn func(), err error) {
	ps := unwrap(s).(*p11Signer)
	t := ps.tok
	t.mu.Lock()
	slot, key := t.slot, ps.key.handle
	t.mu.Unlock()
	ctx := t.mod.ctx
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, nil, err
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
	sign = func(data []byte) error {
		if err := ctx.SignInit(sh, mech, key); err != nil {
			return err
		}
		_, err := ctx.Sign(sh, data)
		return err
	}
	return sign, func() { ctx.CloseSession(sh) }, nil
}

// DigestInfo is the CKM_RSA_PKCS input the signer builds for a digest.
func DigestInfo(h crypto.Hash, digest []byte) []byte {
	return append(append([]byte{}, digestInfoPrefix[h]...), digest...)
}

// LoginCount is the number of C_Login calls made through k's modules.
func LoginCount(k *Keys) int64 {
	var n int64
	for _, m := range k.modules {
		n += m.logins.Load()
	}
	return n
}

// SetUserPIN changes the user PIN of s's token through a read-write session of its own (the
// token is logged in for the whole process), as an operator changing it on the HSM would.
func SetUserPIN(s crypto.Signer, oldPIN, newPIN string) error {
	t := unwrap(s).(*p11Signer).tok
	t.mu.Lock()
	slot := t.slot
	t.mu.Unlock()
	t.mod.mu.RLock()
	defer t.mod.mu.RUnlock()
	ctx := t.mod.ctx
	sh, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	defer ctx.CloseSession(sh)
	return ctx.SetPIN(sh, oldPIN, newPIN)
}

// AdminSetPIN changes the user PIN of a's token.
func AdminSetPIN(a *Admin, oldPIN, newPIN string) error {
	return a.with(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error { return ctx.SetPIN(sh, oldPIN, newPIN) })
}
