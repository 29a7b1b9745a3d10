package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"

	"github.com/miekg/pkcs11"
)

// p11Signer is a crypto.Signer for a private key on a token.
type p11Signer struct {
	tok *token
	key *p11Key
	pub crypto.PublicKey
	met *metrics
}

func (s *p11Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest, already hashed with opts.HashFunc() (crypto.Signer contract).
//
// RSA PKCS#1 v1.5 uses CKM_RSA_PKCS over a DigestInfo built here (RFC 8017 §9.2), because the
// token is given a digest, not the message: CKM_SHA256_RSA_PKCS would hash it again. So any
// hash works, SHA-1 included (PEC peers still use it, pec-spec §8.2). *rsa.PSSOptions selects
// CKM_RSA_PKCS_PSS; ECDSA keys use CKM_ECDSA and the token's r‖s is turned into ASN.1.
func (s *p11Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.sign(digest, opts)
	s.met.done(err)
	return sig, err
}

func (s *p11Signer) sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	mech, data, err := s.mechanism(digest, opts)
	if err != nil {
		return nil, err
	}
	// A lost token is retried once at once: after an HSM failover the reopen usually works
	// and the caller never sees the error.
	for attempt := 0; ; attempt++ {
		sig, err := s.try(mech, data)
		if err == nil {
			if _, ok := s.pub.(*ecdsa.PublicKey); ok {
				return ecdsaASN1(sig)
			}
			return sig, nil
		}
		var ue *UnavailableError
		if attempt > 0 || !errors.As(err, &ue) || ue.Kind != "lost" {
			return nil, err
		}
	}
}

// try makes one signature on one session.
func (s *p11Signer) try(mech []*pkcs11.Mechanism, data []byte) ([]byte, error) {
	l, err := s.tok.acquire(s.key)
	if err != nil {
		return nil, err
	}
	m := s.tok.mod
	m.mu.RLock()
	var sig []byte
	if m.gen.Load() != l.modGen {
		err = pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
	} else if err = m.ctx.SignInit(l.h, mech, l.key); err == nil {
		sig, err = m.ctx.Sign(l.h, data)
	}
	m.mu.RUnlock()
	if err == nil {
		s.tok.release(l, false)
		return sig, nil
	}
	// Re-initialise before closing the session: after a reset under us its handle may name
	// another goroutine's new session.
	if lostToken(err) && moduleReset(err) {
		if rerr := m.reinit(l.modGen); rerr != nil {
			s.tok.log.Warn("hsm: module re-initialisation failed", slog.Any("error", rerr))
		}
	}
	s.tok.release(l, true)
	if lostToken(err) {
		s.tok.drop(l.gen, err)
		return nil, &UnavailableError{Kind: "lost", Err: fmt.Errorf("sign: %w", err)}
	}
	return nil, fmt.Errorf("hsm: sign: %w", err)
}

func (s *p11Signer) mechanism(digest []byte, opts crypto.SignerOpts) ([]*pkcs11.Mechanism, []byte, error) {
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, nil, inputError{fmt.Sprintf("digest is %d bytes, %v wants %d", len(digest), h, h.Size())}
	}
	switch pub := s.pub.(type) {
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			return pssMechanism(pub, h, pss.SaltLength, digest)
		}
		if h == 0 {
			return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, digest, nil
		}
		prefix, ok := digestInfoPrefix[h]
		if !ok {
			return nil, nil, inputError{fmt.Sprintf("hash %v is not supported", h)}
		}
		data := make([]byte, 0, len(prefix)+len(digest))
		data = append(append(data, prefix...), digest...)
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}, data, nil
	case *ecdsa.PublicKey:
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, digest, nil
	}
	return nil, nil, inputError{fmt.Sprintf("key type %T is not supported", s.pub)}
}

// digestInfoPrefix is the DER of DigestInfo up to the digest (RFC 8017 §9.2 note 1).
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var pssHash = map[crypto.Hash][2]uint{
	crypto.SHA1:   {pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1},
	crypto.SHA224: {pkcs11.CKM_SHA224, pkcs11.CKG_MGF1_SHA224},
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

func pssMechanism(pub *rsa.PublicKey, h crypto.Hash, salt int, digest []byte) ([]*pkcs11.Mechanism, []byte, error) {
	hm, ok := pssHash[h]
	if !ok {
		return nil, nil, inputError{fmt.Sprintf("PSS with hash %v is not supported", h)}
	}
	switch salt {
	case rsa.PSSSaltLengthAuto: // as large as possible, like crypto/rsa
		salt = (pub.N.BitLen()-1+7)/8 - 2 - h.Size()
	case rsa.PSSSaltLengthEqualsHash:
		salt = h.Size()
	}
	if salt < 0 {
		return nil, nil, inputError{"PSS salt length is negative"}
	}
	params := pkcs11.NewPSSParams(hm[0], hm[1], uint(salt))
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, params)}, digest, nil
}

// ecdsaASN1 turns PKCS#11's r‖s (PKCS#11 v2.40 §2.3.1) into the ASN.1 ECDSA-Sig-Value
// crypto.Signer callers expect (RFC 3279 §2.2.3).
func ecdsaASN1(rs []byte) ([]byte, error) {
	if len(rs) == 0 || len(rs)%2 != 0 {
		return nil, fmt.Errorf("hsm: ECDSA signature of odd length %d", len(rs))
	}
	n := len(rs) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(rs[:n]), new(big.Int).SetBytes(rs[n:])})
}
