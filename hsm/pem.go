package hsm

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
)

// pemSigner is a private key read from a file, for development and tests. New refuses it when
// the provider is in production (Provider.Production).
type pemSigner struct {
	key crypto.Signer
	met *metrics
}

func (s *pemSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *pemSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.key.Sign(rand, digest, opts)
	if err != nil {
		err = fmt.Errorf("hsm: sign: %w", err)
	}
	s.met.done(err)
	return sig, err
}

// loadPEMKey reads the development signer's key (signer.pem_key).
func loadPEMKey(path string, met *metrics) (*pemSigner, error) {
	key, err := ReadPEMKey(path)
	if err != nil {
		return nil, err
	}
	return &pemSigner{key: key, met: met}, nil
}

// ReadPEMKey reads the first PKCS#8, PKCS#1 or SEC 1 private key of a PEM file (other blocks,
// such as certificates, are passed over). It is for development keys, lab CAs and tools;
// production keys stay on the HSM.
func ReadPEMKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no private key block", path)
		}
		var key any
		switch blk.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, blk.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: key type %T cannot sign", path, key)
		}
		return s, nil
	}
}
