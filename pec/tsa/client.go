// Package tsa is an RFC 3161 time-stamping client, used to put the daily qualified timestamp
// on the legal log (DPR 68/2005 art. 10; pec-spec §6.4), and a small time-stamping server
// for tests and the lab. Both are the project's own code on top of
// github.com/digitorus/timestamp (ASN.1 of requests, responses and TSTInfo).
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

	"github.com/digitorus/pkcs7"
	"github.com/digitorus/timestamp"
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

// Timestamp asks for a token over a SHA-256 digest and returns the whole DER
// TimeStampResp (what `openssl ts -verify -in` reads) after verifying it.
func (c *Client) Timestamp(ctx context.Context, digest []byte) ([]byte, *timestamp.Timestamp, error) {
	nonce, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, nil, err
	}
	req := timestamp.Request{HashAlgorithm: crypto.SHA256, HashedMessage: digest, Certificates: true, Nonce: nonce}
	body, err := req.Marshal()
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

var oidEKU = asn1.ObjectIdentifier{2, 5, 29, 37}

// Verify checks a DER TimeStampResp: granted, message imprint equal to digest (SHA-256),
// signature valid, signer certificate chaining to roots at the token's time with the
// extended key usage timeStamping marked critical (RFC 3161 §2.3).
func Verify(resp, digest []byte, roots *x509.CertPool) (*timestamp.Timestamp, error) {
	ts, err := timestamp.ParseResponse(resp)
	if err != nil {
		return nil, fmt.Errorf("tsa: %w", err)
	}
	if ts.HashAlgorithm != crypto.SHA256 || !bytes.Equal(ts.HashedMessage, digest) {
		return nil, errors.New("tsa: the token's message imprint is not the SHA-256 of the sealed data")
	}
	p7, err := pkcs7.Parse(ts.RawToken)
	if err != nil {
		return nil, fmt.Errorf("tsa: %w", err)
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, errors.New("tsa: the token does not carry exactly one signer certificate")
	}
	critical := false
	for _, e := range signer.Extensions {
		critical = critical || e.Id.Equal(oidEKU) && e.Critical
	}
	if !critical || len(signer.ExtKeyUsage) != 1 || signer.ExtKeyUsage[0] != x509.ExtKeyUsageTimeStamping {
		return nil, errors.New("tsa: signer certificate lacks the critical extKeyUsage timeStamping")
	}
	inter := x509.NewCertPool()
	for _, c := range p7.Certificates {
		inter.AddCert(c)
	}
	if err := p7.VerifyWithOpts(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ts.Time,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
		return nil, fmt.Errorf("tsa: token signature: %w", err)
	}
	return ts, nil
}

// PEM encodes certificates as PEM.
func PEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) //nolint:errcheck
	}
	return b.Bytes()
}
