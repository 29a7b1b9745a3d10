package igpec

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Source loads the entries of the index from one place. Sources are only used by refreshes,
// never by lookups.
type Source interface {
	Load(ctx context.Context) ([]Entry, error)
	// String names the source in logs and errors. It never contains a password.
	String() string
}

// ErrRollback is wrapped when a signed LDIF is older than the one already loaded.
var ErrRollback = errors.New("igpec: signed index older than the one in use")

// maxSourceSize bounds an LDIF or .p7m file read from disk. The whole Italian index is a few
// hundred kilobytes.
const maxSourceSize = 64 << 20

// NewSource builds the source cfg.Source names: ldap:// or ldaps:// URL (base DN in the path,
// default o=postacert), a path ending in .ldif.p7m or .p7m (signed LDIF, verified against
// cfg.TrustAnchor), or any other path (plain LDIF). getenv reads cfg.PasswordEnv.
func NewSource(cfg Config, getenv func(string) string) (Source, error) {
	if cfg.Source == "" {
		return nil, fmt.Errorf("index.source: empty")
	}
	lower := strings.ToLower(cfg.Source)
	switch {
	case strings.HasPrefix(lower, "ldap://") || strings.HasPrefix(lower, "ldaps://"):
		return newLDAPSource(cfg, getenv)
	case strings.HasPrefix(lower, "https://"):
		return newHTTPSSource(cfg)
	case strings.Contains(lower, "://"):
		return nil, fmt.Errorf("index.source: unsupported scheme in %s (want ldap://, ldaps://, https:// or a file path)", redactURL(cfg.Source))
	case strings.HasSuffix(lower, ".p7m"):
		roots, err := trustAnchor(cfg)
		if err != nil {
			return nil, err
		}
		return &signedSource{name: cfg.Source, fetch: func(context.Context) ([]byte, error) { return readLimited(cfg.Source) }, roots: roots}, nil
	default:
		return &fileSource{path: cfg.Source}, nil
	}
}

// trustAnchor loads the roots a signed source is verified against.
func trustAnchor(cfg Config) (*x509.CertPool, error) {
	if cfg.TrustAnchor == "" {
		return nil, fmt.Errorf("index.trust_anchor: required for the signed source %s", redactURL(cfg.Source))
	}
	roots, err := LoadTrustAnchor(cfg.TrustAnchor)
	if err != nil {
		return nil, fmt.Errorf("index.trust_anchor: %w", err)
	}
	return roots, nil
}

// fileSource is a plain LDIF file on disk. Its file:// URL values may refer to files in the
// LDIF's own directory (LDIFOptions.FileDir).
type fileSource struct{ path string }

func (s *fileSource) String() string { return s.path }

func (s *fileSource) Load(ctx context.Context) ([]Entry, error) {
	b, err := readLimited(s.path)
	if err != nil {
		return nil, err
	}
	entries, err := ParseLDIF(bytes.NewReader(b), LDIFOptions{FileDir: filepath.Dir(s.path)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return entries, nil
}

// signedSource is a .ldif.p7m: verified against the trust anchor before a byte of it is
// parsed. URL values are refused in it.
//
// Rollback: a file whose signingTime is older than the last one this source accepted is
// refused, so whoever can replace the file cannot bring back an older, validly signed index
// (RFC 6109 §7: the directory is the critical point). The memory of the last signing time
// lasts for the life of the process.
type signedSource struct {
	name  string                                    // the path or URL, for logs
	fetch func(ctx context.Context) ([]byte, error) // reads the .p7m
	roots *x509.CertPool

	mu         sync.Mutex
	lastSigned time.Time
}

func (s *signedSource) String() string { return s.name }

func (s *signedSource) Load(ctx context.Context) ([]Entry, error) {
	b, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	v, err := verifySigned(b, s.roots)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	entries, err := ParseLDIF(bytes.NewReader(v.content), LDIFOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: signed content: %w", s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.signingTime.Before(s.lastSigned) {
		return nil, fmt.Errorf("%s: %w: signed at %s, before the copy already loaded (%s)", s.name, ErrRollback,
			v.signingTime.UTC().Format(time.RFC3339), s.lastSigned.UTC().Format(time.RFC3339))
	}
	s.lastSigned = v.signingTime
	return entries, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAtMost(f, path)
}

// readAtMost reads r whole, refusing more than maxSourceSize bytes; its errors begin with
// name.
func readAtMost(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSourceSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	case len(b) > maxSourceSize:
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSourceSize)
	}
	return b, nil
}

// redactURL drops any user information from a URL before it is logged.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}
