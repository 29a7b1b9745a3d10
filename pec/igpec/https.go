package igpec

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// The index over HTTPS (RFC 6109 §4.5, §5.6; pec-spec.md §9.2): the central system publishes
// the whole directory as one LDIF at the LDIFLocationURL of o=postacert, over HTTPS, to
// licensed providers only, who authenticate with their certificate; the server is
// authenticated by its own. A URL ending in .p7m is a signed LDIF, verified against
// index.trust_anchor before a byte of it is parsed, and refused when signed before the copy
// already loaded (signedSource); any other URL is a plain LDIF, trusted on the TLS server's
// certificate alone. Plain http:// is refused: the directory is the critical point of the
// system (RFC 6109 §7).
//
// UNVERIFIED (pec-spec.md §9.2): the real URL and the client-certificate procedure come from
// AgID at accreditation. What is built here is the interoperable reading: a GET of the URL
// with the provider's client certificate, 200 and the file in the body.

// newHTTPSSource builds the source of an https:// index.source.
func newHTTPSSource(cfg Config) (Source, error) {
	u, err := url.Parse(cfg.Source)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("index.source: bad HTTPS URL %s", redactURL(cfg.Source))
	}
	if u.User != nil {
		return nil, fmt.Errorf("index.source: %s: no credentials in the URL (the index admits providers by their client certificate: index.client_cert)", redactURL(cfg.Source))
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.ServerCA != "" {
		pem, err := os.ReadFile(cfg.ServerCA)
		if err != nil {
			return nil, fmt.Errorf("index.server_ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("index.server_ca: %s: no PEM certificate", cfg.ServerCA)
		}
	}
	switch {
	case cfg.ClientCert != "" && cfg.ClientKey != "":
		pair, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("index.client_cert, index.client_key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case cfg.ClientCert != "" || cfg.ClientKey != "":
		return nil, errors.New("index.client_cert and index.client_key: both or neither")
	}
	h := &httpsFetch{url: u.String(), client: &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s refused: the index is read over HTTPS only", redactURL(req.URL.String()))
			}
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}}
	if strings.HasSuffix(strings.ToLower(u.Path), ".p7m") {
		roots, err := trustAnchor(cfg)
		if err != nil {
			return nil, err
		}
		return &signedSource{name: redactURL(cfg.Source), fetch: h.get, roots: roots}, nil
	}
	return &plainHTTPSSource{h: h}, nil
}

// httpsFetch downloads the file of an https:// source.
type httpsFetch struct {
	url    string
	client *http.Client
}

// get reads the file: 200 and at most maxSourceSize bytes. The caller's context bounds it
// (index.timeout).
func (h *httpsFetch) get(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(h.url), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %s", redactURL(h.url), resp.Status)
	}
	return readAtMost(resp.Body, redactURL(h.url))
}

// plainHTTPSSource is an unsigned LDIF over HTTPS. URL values (attr:< file://...) are refused
// in it, as in a signed one: they would read this machine's files.
type plainHTTPSSource struct{ h *httpsFetch }

func (s *plainHTTPSSource) String() string { return redactURL(s.h.url) }

func (s *plainHTTPSSource) Load(ctx context.Context) ([]Entry, error) {
	b, err := s.h.get(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := ParseLDIF(bytes.NewReader(b), LDIFOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(s.h.url), err)
	}
	return entries, nil
}
