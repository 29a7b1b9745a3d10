// Package hsmtest is an in-memory Keyring with a throw-away CA, for fast tests. Its provider
// certificates have the RFC 6109 §5.5 profile (pec-spec.md §8.1): provider name in the
// subject, service address as rfc822 subjectAltName, critical keyUsage digitalSignature,
// extKeyUsage emailProtection, AKI/SKI, no BasicConstraints.
package hsmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
)

// CA is a throw-away certification authority standing in for AgID CA1.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA makes a self-signed CA valid from a year ago for ten years.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Country: []string{"IT"}, Organization: []string{"Test CA"}, CommonName: "Test PEC CA"},
		NotBefore:             now.AddDate(-1, 0, 0),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{Cert: cert, key: key}
}

// Pool is a pool holding only the CA certificate, for verification.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// PEM is the CA certificate in PEM, for openssl -CAfile.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the CA private key in PKCS#8 PEM, for tools that issue certificates themselves
// (pecctl keys init -ca-key).
func (ca *CA) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Issue signs any template for pub, for tests of certificates that break the profile. A zero
// SerialNumber gets a random one; AuthorityKeyId comes from the CA.
func (ca *CA) Issue(tb testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	tb.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// ProviderCert issues a provider signing certificate with the RFC 6109 profile for pub.
func (ca *CA) ProviderCert(tb testing.TB, providerName, serviceAddress string, pub crypto.PublicKey, notBefore, notAfter time.Time) *x509.Certificate {
	tb.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{providerName}, CommonName: "Posta Certificata " + providerName},
		NotBefore:      notBefore,
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{serviceAddress},
		SubjectKeyId:   skid(pub),
		AuthorityKeyId: ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

func skid(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	h := sha1.Sum(der)
	return h[:]
}

// Keyring is an in-memory hsm.Keyring: one RSA-2048 key and certificate per domain.
type Keyring struct {
	CA *CA
	mu sync.Mutex
	m  map[string]entry
}

type entry struct {
	signer crypto.Signer
	chain  []*x509.Certificate
}

var rsaKeys struct {
	sync.Mutex
	pool []*rsa.PrivateKey
}

// testKey returns an RSA-2048 key; keys are reused across tests of one process because
// generating them is slow.
func testKey(i int) *rsa.PrivateKey {
	rsaKeys.Lock()
	defer rsaKeys.Unlock()
	for len(rsaKeys.pool) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKeys.pool = append(rsaKeys.pool, k)
	}
	return rsaKeys.pool[i]
}

// New makes a Keyring with a fresh CA and one provider key per domain. providerName goes in
// the certificate subject; the service address is posta-certificata@<first domain>.
func New(tb testing.TB, providerName string, domains ...string) *Keyring {
	tb.Helper()
	ca := NewCA(tb)
	kr := &Keyring{CA: ca, m: map[string]entry{}}
	now := time.Now()
	for i, d := range domains {
		key := testKey(i)
		cert := ca.ProviderCert(tb, providerName, "posta-certificata@"+strings.ToLower(d), &key.PublicKey, now.AddDate(0, 0, -30), now.AddDate(1, 0, 0))
		kr.m[strings.ToLower(d)] = entry{signer: key, chain: []*x509.Certificate{cert}}
	}
	return kr
}

// SignerFor implements hsm.Keyring.
func (k *Keyring) SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[strings.ToLower(domain)]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", hsm.ErrUnknownDomain, domain)
	}
	return e.signer, e.chain, nil
}

var _ hsm.Keyring = (*Keyring)(nil)
