package igpec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DefaultBaseDN is the root of the index (RFC 6109 §4.5).
const DefaultBaseDN = "o=postacert"

// ldapAttrs are the attributes fetched for each provider entry. The certificate is asked
// for with ;binary: slapd refuses to transfer the Certificate syntax otherwise, and answers
// with the attribute named "providerCertificate;binary" (lab-recipe.md §6).
var ldapAttrs = []string{
	"objectClass", "providerName", "providerUnit", "providerCertificate;binary",
	"providerCertificateHash", "mailReceipt", "managedDomains", "LDIFLocationURL", "description",
}

// ldapSource reads the o=postacert subtree of an LDAP server.
type ldapSource struct {
	addr     string // scheme://host:port, no path, no user information
	baseDN   string
	bindDN   string
	password string
	timeout  time.Duration
}

func newLDAPSource(cfg Config, getenv func(string) string) (*ldapSource, error) {
	u, err := url.Parse(cfg.Source)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("index.source: bad LDAP URL %s", redactURL(cfg.Source))
	}
	if u.User != nil {
		return nil, fmt.Errorf("index.source: no credentials in the URL; use index.bind_dn and index.password_env")
	}
	s := &ldapSource{
		addr:    strings.ToLower(u.Scheme) + "://" + u.Host,
		baseDN:  strings.TrimPrefix(u.Path, "/"),
		bindDN:  cfg.BindDN,
		timeout: cfg.Timeout,
	}
	if s.baseDN == "" {
		s.baseDN = DefaultBaseDN
	}
	if _, err := ldap.ParseDN(s.baseDN); err != nil {
		return nil, fmt.Errorf("index.source: bad base DN %q: %v", s.baseDN, err)
	}
	if cfg.BindDN != "" {
		if cfg.PasswordEnv == "" {
			return nil, fmt.Errorf("index.password_env: required with index.bind_dn")
		}
		s.password = getenv(cfg.PasswordEnv)
		if s.password == "" {
			// An LDAP simple bind with a DN and no password is an unauthenticated bind
			// (RFC 4513 §5.1.2) that some servers accept silently: refuse it.
			return nil, fmt.Errorf("index.password_env: environment variable %s is empty", cfg.PasswordEnv)
		}
	}
	return s, nil
}

func (s *ldapSource) String() string { return s.addr + "/" + s.baseDN }

// Load searches the whole subtree for provider entries. The connection is closed when ctx
// ends, which aborts a search in progress; every network step is also bounded by timeout.
func (s *ldapSource) Load(ctx context.Context) ([]Entry, error) {
	conn, err := ldap.DialURL(s.addr, ldap.DialWithDialer(&net.Dialer{Timeout: s.timeout}))
	if err != nil {
		return nil, &temporaryError{fmt.Errorf("%s: connect: %w", s, err)}
	}
	defer conn.Close()
	conn.SetTimeout(s.timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if s.bindDN != "" {
		if err := conn.Bind(s.bindDN, s.password); err != nil {
			return nil, s.wrap(ctx, "bind as "+s.bindDN, err)
		}
	}
	req := ldap.NewSearchRequest(s.baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, int(s.timeout/time.Second), false, "(objectClass=provider)", ldapAttrs, nil)
	// Paged results (RFC 2696): slapd's default size limit is 500 entries.
	res, err := conn.SearchWithPaging(req, 500)
	if err != nil {
		return nil, s.wrap(ctx, "search", err)
	}
	entries := make([]Entry, 0, len(res.Entries))
	for _, le := range res.Entries {
		e := Entry{DN: le.DN}
		for _, a := range le.Attributes {
			parts := strings.Split(strings.ToLower(a.Name), ";")
			var opts []string
			if len(parts) > 1 {
				opts = parts[1:]
			}
			for _, v := range a.ByteValues {
				e.Attrs = append(e.Attrs, Attr{Name: parts[0], Options: opts, Value: v})
			}
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func (s *ldapSource) wrap(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	e := fmt.Errorf("%s: %s: %w", s, step, err)
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode == ldap.LDAPResultInvalidCredentials {
		return e
	}
	return &temporaryError{e}
}

// temporaryError marks a failure that a later refresh may not see (server down, timeout).
type temporaryError struct{ err error }

func (e *temporaryError) Error() string   { return e.err.Error() }
func (e *temporaryError) Unwrap() error   { return e.err }
func (e *temporaryError) Temporary() bool { return true }
