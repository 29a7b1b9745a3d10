package smime_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// Example shows the caller's side: sign the inner entity, write the RFC 5322 header fields,
// then Content-Type and the body verbatim; the receiver verifies the whole message.
func Example() {
	// A self-signed certificate stands in for the provider's HSM key and AgID chain.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(1),
		Subject:        pkix.Name{Organization: []string{"Provider A S.p.A."}, CommonName: "Posta Certificata Provider A"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		EmailAddresses: []string{"posta-certificata@pec-a.test"},
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)

	entity := []byte("Content-Type: text/plain; charset=\"iso-8859-1\"\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\nRicevuta di accettazione\r\n")
	ct, body, err := smime.Sign(entity, key, []*x509.Certificate{cert}, smime.SignOptions{SigningTime: time.Now()})
	if err != nil {
		panic(err)
	}
	var msg bytes.Buffer
	msg.WriteString("From: posta-certificata@pec-a.test\r\nX-Ricevuta: accettazione\r\nMIME-Version: 1.0\r\n")
	msg.WriteString("Content-Type: " + ct + "\r\n\r\n")
	msg.Write(body)

	roots := x509.NewCertPool()
	roots.AddCert(cert)
	v, err := smime.Verify(msg.Bytes(), smime.VerifyOptions{Roots: roots})
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Signer.Subject.CommonName, v.Hash, bytes.Equal(v.Entity, entity))
	// Output: Posta Certificata Provider A SHA-256 true
}
