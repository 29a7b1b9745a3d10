package tsa

import "crypto/x509"

func (s *Server) poolForTest(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}
