package tsa

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/digitorus/timestamp"
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
		resp, _ = timestamp.CreateErrorResponse(timestamp.Rejection, timestamp.BadRequest)
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	w.Write(resp) //nolint:errcheck
}

func (s *Server) respond(body []byte) ([]byte, error) {
	req, err := timestamp.ParseRequest(body)
	if err != nil {
		return nil, err
	}
	if req.HashAlgorithm != crypto.SHA256 && req.HashAlgorithm != crypto.SHA384 && req.HashAlgorithm != crypto.SHA512 {
		return nil, errors.New("unsupported hash")
	}
	if len(req.HashedMessage) != req.HashAlgorithm.Size() {
		return nil, errors.New("imprint length does not match its hash")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	policy := s.Policy
	if policy == nil {
		policy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	}
	ts := timestamp.Timestamp{
		HashAlgorithm:     req.HashAlgorithm,
		HashedMessage:     req.HashedMessage,
		Time:              now().UTC().Truncate(time.Second),
		Accuracy:          time.Second,
		Policy:            policy,
		Nonce:             req.Nonce,
		AddTSACertificate: req.Certificates,
		Certificates:      s.Chain,
	}
	return ts.CreateResponseWithOpts(s.Cert, s.Signer, crypto.SHA256)
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
