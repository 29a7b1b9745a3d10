package hsm

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Config is the signer: section of the YAML configuration.
//
// One default key (pkcs11 or pem_key, with certificate) signs for every domain of the
// provider. Keys lists per-domain keys, for providers with a certificate per PEC domain; a
// domain listed there uses its own key and certificate instead of the default. Entries
// inherit module, token, pin_env and pin_file from the default pkcs11 section when they leave
// them empty (a uri's token, module-path and pin-source take precedence):
//
//	signer:
//	  pkcs11: {module: /usr/lib/softhsm/libsofthsm2.so, token: provider-a, key: provider-a, pin_env: PEC_PIN_A}
//	  certificate: /etc/gestore/a-chain.pem
//	  digest: sha256
//	  keys:
//	    - domain: pec2-a.test
//	      service_address: posta-certificata@pec2-a.test
//	      pkcs11: {key: provider-a-2}
//	      certificate: /etc/gestore/a2-chain.pem
//
// When provider.domains is empty the default key signs for any domain.
//
// The PIN never comes from this file: pin_env names an environment variable, pin_file a file
// (or pin-source=file:... in the URI). pec-milter removes pin_env variables from its
// environment once the keys are open (Keys.ForgetPINEnv). A token that refuses the PIN after
// start-up is not logged in to again (every failed login counts towards locking it).
type Config struct {
	PKCS11      PKCS11Config `yaml:"pkcs11"`
	Certificate string       `yaml:"certificate"` // PEM: signer certificate, then intermediates
	// PEMKey is a private key file for development; refused when the provider is in production.
	PEMKey string `yaml:"pem_key"`
	// Digest is the hash the message signer should use: sha1 or sha256 (default), sha384,
	// sha512. The keys sign any digest they are given.
	Digest string      `yaml:"digest"`
	Keys   []KeyConfig `yaml:"keys"`

	// PoolSize is the number of PKCS#11 sessions per token; default 2×GOMAXPROCS.
	PoolSize int `yaml:"pool_size"`
	// SessionWait bounds the wait for a free session; default 3s.
	SessionWait time.Duration `yaml:"session_wait"`
	// RetryMin and RetryMax bound the backoff between reopen attempts of a token that went
	// away; defaults 200ms and 10s.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// ExpiryWarning: warn this long before a certificate expires; default 720h (30 days).
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
}

// KeyConfig is one per-domain key in Config.Keys.
type KeyConfig struct {
	Domain string `yaml:"domain"`
	// ServiceAddress is the rfc822 subjectAltName the certificate must carry; default the
	// provider's service_address.
	ServiceAddress string       `yaml:"service_address"`
	PKCS11         PKCS11Config `yaml:"pkcs11"`
	Certificate    string       `yaml:"certificate"`
	PEMKey         string       `yaml:"pem_key"`
}

// PKCS11Config locates a private key on a token. The token is found by label, never by slot
// number (slot numbers change, e.g. after softhsm2-util --init-token).
type PKCS11Config struct {
	Module  string `yaml:"module"`
	Token   string `yaml:"token"`
	Key     string `yaml:"key"`    // CKA_LABEL of the private key
	KeyID   string `yaml:"key_id"` // CKA_ID in hex
	URI     string `yaml:"uri"`    // RFC 7512 pkcs11: URI; the other fields are then ignored
	PINEnv  string `yaml:"pin_env"`
	PINFile string `yaml:"pin_file"`
}

// Provider is what the keyring needs from the provider: section.
type Provider struct {
	Name           string   // must be in the certificate subject (RFC 6109 §5.5)
	ServiceAddress string   // must be the certificate's rfc822 subjectAltName
	Domains        []string // served by the default key
	Production     bool     // refuses pem_key
}

func (c PKCS11Config) empty() bool { return c == PKCS11Config{} }

// resolved is a PKCS11Config after URI parsing, ready to use.
type resolved struct {
	module, token, label string
	id                   []byte
	pinEnv, pinFile      string
}

func (c PKCS11Config) resolve() (resolved, error) {
	var r resolved
	if c.URI != "" {
		u, err := ParseURI(c.URI)
		if err != nil {
			return r, err
		}
		r = resolved{module: u.ModulePath, token: u.Token, label: u.Object, id: u.ID, pinFile: u.PINSource}
		if r.module == "" {
			r.module = c.Module
		}
		if r.pinFile == "" {
			r.pinEnv, r.pinFile = c.PINEnv, c.PINFile
		}
	} else {
		r = resolved{module: c.Module, token: c.Token, label: c.Key, pinEnv: c.PINEnv, pinFile: c.PINFile}
		if c.KeyID != "" {
			id, err := decodeHexID(c.KeyID)
			if err != nil {
				return r, fmt.Errorf("key_id: %v", err)
			}
			r.id = id
		}
	}
	switch {
	case r.module == "":
		return r, errors.New("module: missing")
	case r.token == "":
		return r, errors.New("token: missing (the token is found by label)")
	case r.label == "" && r.id == nil:
		return r, errors.New("key or key_id: missing")
	case r.pinEnv == "" && r.pinFile == "":
		return r, errors.New("pin_env or pin_file: missing")
	case r.pinEnv != "" && r.pinFile != "":
		return r, errors.New("pin_env and pin_file: give only one")
	}
	return r, nil
}

func decodeHexID(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.ReplaceAll(strings.ToLower(s), ":", ""), "0x")
	if s == "" || len(s)%2 != 0 {
		return nil, fmt.Errorf("%q is not hex", s)
	}
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, ch := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case ch >= '0' && ch <= '9':
				v |= byte(ch - '0')
			case ch >= 'a' && ch <= 'f':
				v |= byte(ch-'a') + 10
			default:
				return nil, fmt.Errorf("%q is not hex", s)
			}
		}
		b[i] = v
	}
	return b, nil
}

// pin reads the PIN. The PIN is never logged nor put in an error.
func (r resolved) pin() (string, error) {
	if r.pinEnv != "" {
		p := os.Getenv(r.pinEnv)
		if p == "" {
			return "", fmt.Errorf("pin_env: environment variable %s is empty or unset", r.pinEnv)
		}
		return p, nil
	}
	b, err := os.ReadFile(r.pinFile)
	if err != nil {
		return "", fmt.Errorf("pin_file: %v", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("pin_file %s: empty", r.pinFile)
	}
	return p, nil
}

// digestHash maps the digest: setting to a crypto.Hash.
func digestHash(s string) (crypto.Hash, error) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "")) {
	case "", "sha256":
		return crypto.SHA256, nil
	case "sha1":
		return crypto.SHA1, nil
	case "sha384":
		return crypto.SHA384, nil
	case "sha512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("digest: %q is not one of sha1, sha256, sha384, sha512", s)
}

// CheckTuning rejects negative tuning values, which applyDefaults would otherwise silently
// replace by their defaults: a typo (-3s for 3s) must not go unnoticed. The error names the
// key ("signer.pool_size: -1: must not be negative"). Zero means the default.
func (c *Config) CheckTuning() error {
	if c.PoolSize < 0 {
		return fmt.Errorf("signer.pool_size: %d: must not be negative (0 means 2 × GOMAXPROCS)", c.PoolSize)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"session_wait", c.SessionWait}, {"retry_min", c.RetryMin}, {"retry_max", c.RetryMax}, {"expiry_warning", c.ExpiryWarning}} {
		if d.v < 0 {
			return fmt.Errorf("signer.%s: %v: must not be negative (0 means the default)", d.key, d.v)
		}
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.PoolSize <= 0 {
		c.PoolSize = 2 * runtime.GOMAXPROCS(0)
	}
	if c.SessionWait <= 0 {
		c.SessionWait = 3 * time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.ExpiryWarning <= 0 {
		c.ExpiryWarning = 30 * 24 * time.Hour
	}
}

// keySpec is one key to load: the default one or an entry of Keys, with inheritance applied.
type keySpec struct {
	name           string   // "signer" or "signer.keys[i]", for error messages
	domains        []string // lower case
	serviceAddress string
	pkcs11         PKCS11Config
	certificate    string
	pemKey         string
}

// specs expands the configuration into the keys to load, checking the combination.
// (Long on purpose: the default key and every per-domain key resolved with their inheritance rules side by side.)
func (c *Config) specs(p Provider) ([]keySpec, error) {
	listed := map[string]bool{}
	var out []keySpec
	for i, k := range c.Keys {
		name := fmt.Sprintf("signer.keys[%d]", i)
		d := strings.ToLower(strings.TrimSpace(k.Domain))
		if d == "" {
			return nil, fmt.Errorf("hsm: %s.domain: missing", name)
		}
		if listed[d] {
			return nil, fmt.Errorf("hsm: %s.domain: %s listed twice", name, d)
		}
		listed[d] = true
		pk := k.PKCS11
		if !pk.empty() { // a URI's own module-path and pin-source still win (resolve)
			if pk.Module == "" {
				pk.Module = c.PKCS11.Module
			}
			if pk.Token == "" {
				pk.Token = c.PKCS11.Token
			}
			if pk.PINEnv == "" && pk.PINFile == "" {
				pk.PINEnv, pk.PINFile = c.PKCS11.PINEnv, c.PKCS11.PINFile
			}
		}
		sa := k.ServiceAddress
		if sa == "" {
			sa = p.ServiceAddress
		}
		out = append(out, keySpec{name: name, domains: []string{d}, serviceAddress: sa, pkcs11: pk, certificate: k.Certificate, pemKey: k.PEMKey})
	}
	var rest []string
	for _, d := range p.Domains {
		d = strings.ToLower(strings.TrimSpace(d))
		if !listed[d] {
			rest = append(rest, d)
		}
	}
	if !c.PKCS11.empty() || c.PEMKey != "" || c.Certificate != "" {
		if len(rest) == 0 && len(p.Domains) > 0 {
			return nil, errors.New("hsm: signer: a default key is configured but every domain has its own key in signer.keys")
		}
		out = append([]keySpec{{name: "signer", domains: rest, serviceAddress: p.ServiceAddress, pkcs11: c.PKCS11, certificate: c.Certificate, pemKey: c.PEMKey}}, out...)
	} else if len(rest) > 0 {
		return nil, fmt.Errorf("hsm: signer: no key for domain %s (configure signer.pkcs11 or signer.keys)", strings.Join(rest, ", "))
	}
	if len(out) == 0 {
		return nil, errors.New("hsm: signer: no key configured")
	}
	for _, s := range out {
		switch {
		case s.pkcs11.empty() && s.pemKey == "":
			return nil, fmt.Errorf("hsm: %s: give pkcs11 or pem_key", s.name)
		case !s.pkcs11.empty() && s.pemKey != "":
			return nil, fmt.Errorf("hsm: %s: give pkcs11 or pem_key, not both", s.name)
		case s.pemKey != "" && p.Production:
			return nil, fmt.Errorf("hsm: %s.pem_key: a private key in a file is refused in production (provider.production is true); use pkcs11", s.name)
		case s.certificate == "":
			return nil, fmt.Errorf("hsm: %s.certificate: missing", s.name)
		}
		if !s.pkcs11.empty() {
			if _, err := s.pkcs11.resolve(); err != nil {
				return nil, fmt.Errorf("hsm: %s.pkcs11.%v", s.name, err)
			}
		}
	}
	return out, nil
}
