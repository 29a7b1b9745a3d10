package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"

	"github.com/miekg/pkcs11"
)

// Admin is a logged-in token for operator tasks: create a key, read a public key, store a
// certificate (pecctl keys init). It is not safe for concurrent use.
type Admin struct {
	tok *token
	met *metrics
}

// OpenAdmin opens the token of c (module, token and PIN; the key fields are not used) and
// logs in.
func OpenAdmin(c PKCS11Config) (*Admin, error) {
	if c.URI == "" && c.Key == "" && c.KeyID == "" {
		c.Key = "-" // resolve wants a key; Admin methods name their own
	}
	rc, err := c.resolve()
	if err != nil {
		return nil, fmt.Errorf("pkcs11.%v", err)
	}
	pin, err := rc.pin()
	if err != nil {
		return nil, fmt.Errorf("pkcs11.%v", err)
	}
	m, err := openModule(rc.module)
	if err != nil {
		return nil, err
	}
	cfg := Config{PoolSize: 1}
	cfg.applyDefaults()
	met := newMetrics(nil)
	t := newToken(m, rc.token, pin, &cfg, slog.New(slog.DiscardHandler), met)
	t.flags |= pkcs11.CKF_RW_SESSION
	if err := t.open(); err != nil {
		m.close()
		return nil, err
	}
	return &Admin{tok: t, met: met}, nil
}

// Close logs out and releases the module.
func (a *Admin) Close() {
	a.tok.close()
	a.tok.mod.close()
}

// with runs f on a session of the token.
func (a *Admin) with(f func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error) error {
	l, err := a.tok.acquire(&p11Key{})
	if err != nil {
		return err
	}
	a.tok.mod.mu.RLock()
	err = f(a.tok.mod.ctx, l.h)
	a.tok.mod.mu.RUnlock()
	a.tok.release(l, err != nil && lostToken(err))
	return err
}

// GenerateRSAKey creates an RSA key pair on the token that can never leave it: CKA_TOKEN,
// CKA_PRIVATE, CKA_SENSITIVE true, CKA_EXTRACTABLE false. It refuses to create a second
// private key with the same label or id.
func (a *Admin) GenerateRSAKey(label string, id []byte, bits int) (crypto.PublicKey, error) {
	if label == "" || len(id) == 0 {
		return nil, errors.New("hsm: a new key needs a label and an id")
	}
	var pub crypto.PublicKey
	err := a.with(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		for _, tmpl := range [][]*pkcs11.Attribute{
			{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)},
			{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id)},
		} {
			objs, err := findObjects(ctx, sh, tmpl, 1)
			if err != nil {
				return err
			}
			if len(objs) > 0 {
				return fmt.Errorf("hsm: token %q already has a private key with label %q or id %x", a.tok.label, label, id)
			}
		}
		pubT := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		privT := []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
		ph, _, err := ctx.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubT, privT)
		if err != nil {
			return fmt.Errorf("hsm: C_GenerateKeyPair: %w", err)
		}
		pub, err = publicKeyOf(ctx, sh, ph)
		return err
	})
	return pub, err
}

// PublicKey reads the public key object with the given label and/or id.
func (a *Admin) PublicKey(label string, id []byte) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	err := a.with(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY)}
		if label != "" {
			tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
		}
		if id != nil {
			tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
		}
		objs, err := findObjects(ctx, sh, tmpl, 2)
		if err != nil {
			return err
		}
		if len(objs) != 1 {
			return fmt.Errorf("hsm: token %q: %d public keys match label %q id %x, want 1", a.tok.label, len(objs), label, id)
		}
		pub, err = publicKeyOf(ctx, sh, objs[0])
		return err
	})
	return pub, err
}

// Signer gives a crypto.Signer for the private key with the given label and/or id, whose
// public key is pub (from PublicKey or GenerateRSAKey). It lives as long as the Admin.
func (a *Admin) Signer(label string, id []byte, pub crypto.PublicKey) (crypto.Signer, error) {
	k := &p11Key{label: label, id: id}
	if err := a.tok.addKey(k); err != nil {
		return nil, err
	}
	return &p11Signer{tok: a.tok, key: k, pub: pub, met: a.met}, nil
}

// StoreCertificate writes cert on the token as a CKO_CERTIFICATE object with the key's label
// and id, as pkcs11-tool --write-object does.
func (a *Admin) StoreCertificate(label string, id []byte, cert *x509.Certificate) error {
	return a.with(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		_, err := ctx.CreateObject(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
			pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_SUBJECT, cert.RawSubject),
			pkcs11.NewAttribute(pkcs11.CKA_ISSUER, cert.RawIssuer),
			pkcs11.NewAttribute(pkcs11.CKA_SERIAL_NUMBER, mustMarshal(cert.SerialNumber)),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, cert.Raw),
		})
		if err != nil {
			return fmt.Errorf("hsm: C_CreateObject: %w", err)
		}
		return nil
	})
}

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// publicKeyOf decodes an RSA or EC public key object.
func publicKeyOf(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle, h pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	attrs, err := ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return nil, fmt.Errorf("hsm: CKA_KEY_TYPE: %w", err)
	}
	switch uint(bytesToUint(attrs[0].Value)) {
	case pkcs11.CKK_RSA:
		attrs, err = ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, fmt.Errorf("hsm: RSA public key: %w", err)
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31 {
			return nil, errors.New("hsm: RSA public exponent too large")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
	case pkcs11.CKK_EC:
		attrs, err = ctx.GetAttributeValue(sh, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil), pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("hsm: EC public key: %w", err)
		}
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(attrs[0].Value, &oid); err != nil {
			return nil, fmt.Errorf("hsm: CKA_EC_PARAMS: %w", err)
		}
		// CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point (PKCS#11 v2.40).
		var point []byte
		if _, err := asn1.Unmarshal(attrs[1].Value, &point); err != nil {
			point = attrs[1].Value
		}
		spki, err := asn1.Marshal(struct {
			Alg struct{ Algo, Curve asn1.ObjectIdentifier }
			Key asn1.BitString
		}{struct{ Algo, Curve asn1.ObjectIdentifier }{asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, oid}, asn1.BitString{Bytes: point, BitLength: 8 * len(point)}})
		if err != nil {
			return nil, err
		}
		pub, err := x509.ParsePKIXPublicKey(spki)
		if err != nil {
			return nil, fmt.Errorf("hsm: EC point: %w", err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return nil, errors.New("hsm: EC point: not an ECDSA key")
		}
		return ec, nil
	}
	return nil, errors.New("hsm: public key type not supported")
}
