package igpec

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tlsCA is a throw-away CA issuing TLS server and client certificates.
type tlsCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // PEM file of cert
}

func newTLSCA(t *testing.T, name string) *tlsCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	ca := &tlsCA{cert: c, key: key, pem: filepath.Join(t.TempDir(), name+".pem")}
	writePEM(t, ca.pem, "CERTIFICATE", der)
	return ca
}

// issue makes a leaf certificate for cn: a server one for 127.0.0.1, or a client one.
func (ca *tlsCA) issue(t *testing.T, cn string, server bool) (tls.Certificate, string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// indexServer is the central index's HTTPS server: client certificates from clientCA
// required, files by path, and the client names it saw.
type indexServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	seen  []string
}

func newIndexServer(t *testing.T, serverCA, clientCA *tlsCA) *indexServer {
	t.Helper()
	s := &indexServer{files: map[string][]byte{}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(r.TLS.PeerCertificates) > 0 {
			s.seen = append(s.seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		if r.URL.Path == "/moved.ldif" {
			http.Redirect(w, r, "http://127.0.0.1:1/igpec.ldif", http.StatusFound)
			return
		}
		b, ok := s.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	pair, _, _ := serverCA.issue(t, "igpec-server", true)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *indexServer) put(path string, b []byte) {
	s.mu.Lock()
	s.files[path] = b
	s.mu.Unlock()
}

// The index downloaded over HTTPS with the provider's client certificate, the server checked
// against index.server_ca: a plain LDIF and a signed .p7m load; a tampered .p7m, a missing
// client certificate, a server the CA did not issue, a 404, a redirect to http:// and an
// http:// source are all refused.
func TestHTTPSSource(t *testing.T) {
	f := newFixture(t)
	sf := newSignedFixture(t)
	ldif := ldifOf(t, f.record(t, "Provider A S.p.A.", "pec-a.test"), f.record(t, "Provider B S.p.A.", "pec-b.test"))
	serverCA, clientCA := newTLSCA(t, "server-ca"), newTLSCA(t, "client-ca")
	_, clientCert, clientKey := clientCA.issue(t, "gestore-a", false)
	srv := newIndexServer(t, serverCA, clientCA)
	srv.put("/igpec.ldif", ldif)
	p7m := sf.sign(t, ldif)
	srv.put("/igpec.ldif.p7m", p7m)
	bad := append([]byte(nil), p7m...)
	bad[len(bad)/2] ^= 0x01
	srv.put("/bad.ldif.p7m", bad)

	cfg := func(path string) Config {
		return Config{Source: srv.URL + path, ServerCA: serverCA.pem, ClientCert: clientCert, ClientKey: clientKey, TrustAnchor: sf.anchor}
	}
	load := func(c Config) ([]Entry, error) {
		src, err := NewSource(c, os.Getenv)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return src.Load(ctx)
	}
	for _, path := range []string{"/igpec.ldif", "/igpec.ldif.p7m"} {
		entries, err := load(cfg(path))
		if err != nil || len(entries) != 2 {
			t.Fatalf("%s: %d entries, %v", path, len(entries), err)
		}
	}
	srv.mu.Lock()
	seen := strings.Join(srv.seen, ",")
	srv.mu.Unlock()
	if seen != "gestore-a,gestore-a" {
		t.Errorf("the server saw clients %q, want the provider's certificate twice", seen)
	}

	noClient := cfg("/igpec.ldif")
	noClient.ClientCert, noClient.ClientKey = "", ""
	otherCA := cfg("/igpec.ldif")
	otherCA.ServerCA = clientCA.pem
	for name, tc := range map[string]struct {
		c    Config
		want string
	}{
		"tampered signature":    {cfg("/bad.ldif.p7m"), "does not verify"},
		"no client certificate": {noClient, "certificate"},
		"unknown server":        {otherCA, "certificate"},
		"not found":             {cfg("/none.ldif"), "HTTP 404"},
		"redirect to http":      {cfg("/moved.ldif"), "HTTPS only"},
		"http source":           {Config{Source: "http://127.0.0.1/igpec.ldif"}, "unsupported scheme"},
		"credentials in URL":    {Config{Source: "https://u:secret@127.0.0.1/igpec.ldif"}, "no credentials"},
		"half a client pair":    {Config{Source: srv.URL + "/igpec.ldif", ClientCert: clientCert}, "both or neither"},
		"p7m without anchor":    {Config{Source: srv.URL + "/igpec.ldif.p7m"}, "index.trust_anchor"},
	} {
		entries, err := load(tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %d entries, err %v; want an error with %q", name, len(entries), err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
}
