package tsa

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
)

// Server is an RFC 3161 time-stamping authority over HTTP, for tests and the lab (it is not
// a qualified TSA). It signs with Signer under Cert, which must carry the critical
// extKeyUsage timeStamping; Chain holds the intermediates to include.
type Server struct {
	Signer crypto.Signer
	Cert   *x509.Certificate
	Chain  []*x509.Certificate
	Policy asn1.ObjectIdentifier // default 1.3.6.1.4.1.99999.1 (a test policy)
	Now    func() time.Time      // default time.Now
	Logger *slog.Logger
}

// ServeHTTP answers one application/timestamp-query POST.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an application/timestamp-query", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	resp, err := s.respond(body)
	if err != nil {
		if s.Logger != nil {
			s.Logger.Warn("tsa request refused", slog.Any("err", err))
		}
		var rej *rejection
		if !errors.As(err, &rej) {
			rej = &rejection{failBadRequest, err}
		}
		resp = errorResponse(rej.bit)
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	w.Write(resp) //nolint:errcheck
}

// rejection is a refused request and the PKIFailureInfo bit that says why.
type rejection struct {
	bit int
	err error
}

func (r *rejection) Error() string { return r.err.Error() }

func reject(bit int, format string, a ...any) error {
	return &rejection{bit, fmt.Errorf(format, a...)}
}

var defaultPolicy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1} // a test policy

// respond returns the DER TimeStampResp granting a token for a DER TimeStampReq.
func (s *Server) respond(body []byte) ([]byte, error) {
	req, mi, err := parseRequest(body)
	if err != nil {
		return nil, reject(failBadDataFormat, "%v", err)
	}
	h, err := mi.hash()
	if err != nil || (h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512) {
		return nil, reject(failBadAlg, "imprint: %v %v", h, err)
	}
	policy := s.Policy
	if policy == nil {
		policy = defaultPolicy
	}
	if req.ReqPolicy != nil && !req.ReqPolicy.Equal(policy) {
		return nil, reject(failUnacceptedPolicy, "policy %v not offered", req.ReqPolicy)
	}
	if len(req.Extensions) > 0 {
		return nil, reject(failUnacceptedExtension, "request extensions are not supported")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	genTime := now().UTC().Truncate(time.Second)
	info, err := asn1.Marshal(tstInfo{
		Version:        1,
		Policy:         policy,
		MessageImprint: req.MessageImprint, // RFC 3161 §2.4.2: the same value as in the request
		SerialNumber:   serial.Add(serial, big.NewInt(1)),
		GenTime:        genTime,
		Accuracy:       accuracy{Seconds: 1},
		Nonce:          req.Nonce,
		// [0] GeneralName directoryName [4]: both EXPLICIT, Name being a CHOICE.
		TSA: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
			Bytes: mustMarshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: s.Cert.RawSubject})},
	})
	if err != nil {
		return nil, err
	}
	// RFC 3161 §2.4.1: the certificates only when asked; ESS signingCertificateV2 always.
	token, err := smime.SignCMS(info, s.Signer, append([]*x509.Certificate{s.Cert}, s.Chain...), smime.CMSOptions{
		ContentType:    oidTSTInfo,
		SigningTime:    genTime,
		Attributes:     []smime.Attribute{signingCertificateV2Attr(s.Cert)},
		NoCertificates: !req.CertReq,
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(response{Status: pkiStatusInfo{Status: statusGranted}, TimeStampToken: asn1.RawValue{FullBytes: token}})
}

// signingCertificateV2Attr names cert by its SHA-256 and issuer and serial (RFC 5035 §3,
// RFC 5816 §2.2.1).
func signingCertificateV2Attr(cert *x509.Certificate) smime.Attribute {
	sum := sha256.Sum256(cert.Raw)
	issuer := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: cert.RawIssuer}
	type issuerSerial struct {
		Issuer []asn1.RawValue // GeneralNames
		Serial *big.Int
	}
	type certID struct {
		CertHash     []byte
		IssuerSerial issuerSerial
	}
	v := mustMarshal(struct{ Certs []certID }{[]certID{{sum[:], issuerSerial{[]asn1.RawValue{issuer}, cert.SerialNumber}}}})
	return smime.Attribute{Type: oidSigningCertificateV2, Values: [][]byte{v}}
}

func mustMarshal(v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic("tsa: asn1.Marshal: " + err.Error())
	}
	return b
}

// Authority is a throw-away CA and TSA certificate, for tests and the lab.
type Authority struct {
	CA     *x509.Certificate
	Server *Server
}

// NewAuthority makes a self-signed CA and a TSA certificate under it (ECDSA P-256, critical
// extKeyUsage timeStamping), valid from a year ago for ten years.
func NewAuthority(name string) (*Authority, error) { return newAuthority(name, true) }

func newAuthority(name string, criticalEKU bool) (*Authority, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: name + " TSA CA"},
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: ski(&caKey.PublicKey),
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// RFC 3161 §2.3: the TSA certificate has exactly one extKeyUsage, timeStamping,
	// and the extension is critical. Go writes it non-critical, so add it by hand.
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: name + " TSA"},
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(10, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: oidEKU, Critical: criticalEKU, Value: eku}},
		SubjectKeyId:    ski(&key.PublicKey), AuthorityKeyId: ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{CA: ca, Server: &Server{Signer: key, Cert: cert}}, nil
}

func ski(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha1.Sum(der)
	return h[:]
}

// Listen serves the authority on addr (use a loopback address such as "127.0.0.1:0") and
// returns the URL to give clients and a function that stops the server.
func (a *Authority) Listen(addr string) (url string, stop func() error, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: a.Server, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l) //nolint:errcheck
	return "http://" + l.Addr().String() + "/", srv.Close, nil
}
