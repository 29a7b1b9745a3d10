// Package tsa is an RFC 3161 time-stamping client, used to put the daily qualified timestamp
// on the legal log (DPR 68/2005 art. 10; pec-spec §6.4), and a small time-stamping server
// for tests and the lab. The ASN.1 of requests, responses and TSTInfo is encoding/asn1
// (rfc3161.go); the token is a CMS SignedData that pec/smime signs and verifies, the same
// code as for PEC messages, the seal and the signed index.
package tsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// Config is the TSA part of the seal configuration.
type Config struct {
	URL     string        `yaml:"tsa_url"` // RFC 3161 over HTTP (application/timestamp-query)
	CA      string        `yaml:"tsa_ca"`  // PEM file with the TSA's trust anchor(s)
	Timeout time.Duration `yaml:"tsa_timeout"`
}

// Client asks a TSA for timestamps and checks them.
type Client struct {
	url   string
	roots *x509.CertPool
	http  *http.Client
}

// New builds a Client; cfg.CA is required so that every token is verified when received.
func New(cfg Config, hc *http.Client) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("seal.tsa_url: required")
	}
	if cfg.CA == "" {
		return nil, errors.New("seal.tsa_ca: required (PEM trust anchor of the TSA)")
	}
	roots, err := LoadPool(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("seal.tsa_ca: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if hc == nil {
		hc = &http.Client{Timeout: cfg.Timeout}
	}
	return &Client{url: cfg.URL, roots: roots, http: hc}, nil
}

// LoadPool reads a PEM file of certificates into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// Token is a verified time-stamp token: its TSTInfo (RFC 3161 §2.4.2) and signer.
type Token struct {
	Time          time.Time // genTime
	Accuracy      time.Duration
	HashAlgorithm crypto.Hash
	HashedMessage []byte
	SerialNumber  *big.Int
	Nonce         *big.Int // nil when the request had none
	Policy        asn1.ObjectIdentifier
	Signer        *x509.Certificate // the TSA certificate, chained to the roots at Time
}

// Timestamp asks for a token over a SHA-256 digest and returns the whole DER
// TimeStampResp (what `openssl ts -verify -in` reads) after verifying it.
func (c *Client) Timestamp(ctx context.Context, digest []byte) ([]byte, *Token, error) {
	nonce, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, nil, err
	}
	body, err := marshalRequest(crypto.SHA256, digest, nonce)
	if err != nil {
		return nil, nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/timestamp-query")
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, nil, &temporary{err}
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, &temporary{err}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &temporary{fmt.Errorf("TSA answered HTTP %d", resp.StatusCode)}
	}
	ts, err := Verify(der, digest, c.roots)
	if err != nil {
		return nil, nil, err
	}
	if ts.Nonce == nil || ts.Nonce.Cmp(nonce) != 0 {
		return nil, nil, errors.New("tsa: response nonce does not match the request")
	}
	return der, ts, nil
}

type temporary struct{ error }

func (t *temporary) Temporary() bool { return true }
func (t *temporary) Unwrap() error   { return t.error }

// Verify checks a DER TimeStampResp: granted, message imprint equal to digest (SHA-256),
// one signature, valid (pec/smime), by a certificate that the ESS signingCertificate
// attribute names (RFC 3161 §2.4.1), that has the extended key usage timeStamping only and
// marked critical (RFC 3161 §2.3), and that chains to roots at the token's genTime.
func Verify(resp, digest []byte, roots *x509.CertPool) (*Token, error) {
	var r response
	if rest, err := asn1.Unmarshal(resp, &r); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("tsa: not a TimeStampResp: %v", err)
	}
	if s := r.Status.Status; s != statusGranted && s != statusGrantedWithMods {
		return nil, fmt.Errorf("tsa: the TSA refused the request (PKIStatus %d, failInfo %x)", s, r.Status.FailInfo.Bytes)
	}
	if len(r.TimeStampToken.FullBytes) == 0 {
		return nil, errors.New("tsa: granted without a token")
	}
	// Integrity first: the genTime to check the chain at is inside the signed content.
	v, err := smime.VerifyCMS(r.TimeStampToken.FullBytes, nil, smime.VerifyOptions{})
	if err != nil {
		return nil, fmt.Errorf("tsa: token signature: %w", err)
	}
	// RFC 3161 §2.4.2: the token holds a TSTInfo and no signature but the TSA's.
	if !v.ContentType.Equal(oidTSTInfo) || v.Signers != 1 {
		return nil, fmt.Errorf("tsa: the token holds %v with %d signatures, not a TSTInfo signed once", v.ContentType, v.Signers)
	}
	info, mi, err := parseTSTInfo(v.Entity)
	if err != nil {
		return nil, fmt.Errorf("tsa: %w", err)
	}
	h, err := mi.hash()
	if err != nil {
		return nil, fmt.Errorf("tsa: %w", err)
	}
	if h != crypto.SHA256 || !bytes.Equal(mi.HashedMessage, digest) {
		return nil, errors.New("tsa: the token's message imprint is not the SHA-256 of the sealed data")
	}
	if err := checkSigningCertificate(v.Attributes, v.Signer); err != nil {
		return nil, err
	}
	critical := false
	for _, e := range v.Signer.Extensions {
		critical = critical || e.Id.Equal(oidEKU) && e.Critical
	}
	if !critical || len(v.Signer.ExtKeyUsage) != 1 || v.Signer.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping {
		return nil, errors.New("tsa: signer certificate lacks the critical extKeyUsage timeStamping")
	}
	if err := v.VerifyChain(smime.VerifyOptions{Roots: roots, At: info.GenTime,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
		return nil, fmt.Errorf("tsa: token signature: %w", err)
	}
	return &Token{Time: info.GenTime, Accuracy: info.Accuracy.duration(), HashAlgorithm: h, HashedMessage: mi.HashedMessage,
		SerialNumber: info.SerialNumber, Nonce: info.Nonce, Policy: info.Policy, Signer: v.Signer}, nil
}

// checkSigningCertificate checks that the ESS signingCertificateV2 (RFC 5035, RFC 5816) or
// signingCertificate (RFC 2634) attribute, which RFC 3161 §2.4.1 requires, names cert by
// its hash: its first ESSCertID is the signer's (RFC 5035 §5.4). The issuerSerial is not
// compared; the hash already identifies the certificate.
func checkSigningCertificate(attrs []smime.Attribute, cert *x509.Certificate) error {
	for _, a := range attrs {
		if len(a.Values) != 1 {
			continue
		}
		var h crypto.Hash
		var sum []byte
		switch {
		case a.Type.Equal(oidSigningCertificateV2):
			var sc signingCertificateV2
			if _, err := asn1.Unmarshal(a.Values[0], &sc); err != nil || len(sc.Certs) == 0 {
				return fmt.Errorf("tsa: bad signingCertificateV2 attribute: %v", err)
			}
			h, sum = crypto.SHA256, sc.Certs[0].CertHash
			if len(sc.Certs[0].HashAlgorithm.Algorithm) != 0 {
				var ok bool
				if h, ok = hashOf(sc.Certs[0].HashAlgorithm); !ok {
					return fmt.Errorf("tsa: signingCertificateV2 with hash %v", sc.Certs[0].HashAlgorithm.Algorithm)
				}
			}
		case a.Type.Equal(oidSigningCertificate):
			var sc signingCertificate
			if _, err := asn1.Unmarshal(a.Values[0], &sc); err != nil || len(sc.Certs) == 0 {
				return fmt.Errorf("tsa: bad signingCertificate attribute: %v", err)
			}
			h, sum = crypto.SHA1, sc.Certs[0].CertHash
		default:
			continue
		}
		if !h.Available() {
			return fmt.Errorf("tsa: signingCertificate hash %v unavailable", h)
		}
		d := h.New()
		d.Write(cert.Raw)
		if !bytes.Equal(d.Sum(nil), sum) {
			return errors.New("tsa: the ESS signingCertificate attribute names another certificate than the signer's")
		}
		return nil
	}
	return errors.New("tsa: the token lacks the ESS signingCertificate attribute (RFC 3161 §2.4.1)")
}

// PEM encodes certificates as PEM.
func PEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) //nolint:errcheck
	}
	return b.Bytes()
}
