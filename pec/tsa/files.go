package tsa

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Save writes the authority to dir as tsa-ca.pem (the trust anchor to give clients as
// seal.tsa_ca), tsa-cert.pem and tsa-key.pem (PKCS#8, mode 0600), so that a lab TSA keeps
// its identity across restarts.
func (a *Authority) Save(dir string) error {
	key, err := x509.MarshalPKCS8PrivateKey(a.Server.Signer)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "tsa-ca.pem"), PEM(a.CA), 0o644),
		os.WriteFile(filepath.Join(dir, "tsa-cert.pem"), PEM(a.Server.Cert), 0o644),
		os.WriteFile(filepath.Join(dir, "tsa-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600),
	)
}

// LoadAuthority reads what Save wrote.
func LoadAuthority(dir string) (*Authority, error) {
	read := func(name, typ string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != typ {
			return nil, fmt.Errorf("%s: no %s PEM block", name, typ)
		}
		return blk.Bytes, nil
	}
	caDER, err := read("tsa-ca.pem", "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	certDER, err := read("tsa-cert.pem", "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := read("tsa-key.pem", "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("tsa-key.pem: not a signing key")
	}
	return &Authority{CA: ca, Server: &Server{Signer: signer, Cert: cert}}, nil
}
