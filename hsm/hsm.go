package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/internal/environ"
)

// Deps are the keyring's collaborators and the provider facts its certificates must match.
type Deps struct {
	Provider   Provider
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	Now        func() time.Time      // default time.Now; for validity checks
}

// Keys is the provider's keyring: a crypto.Signer and certificate chain per PEC domain.
type Keys struct {
	digest   crypto.Hash
	byDomain map[string]entry
	fallback *entry // the default key when the provider lists no domains
	tokens   []*token
	modules  []*module
	log      *slog.Logger
	warn     time.Duration // Config.ExpiryWarning
	pinEnvs  []string      // environment variables a PIN was read from
}

type entry struct {
	signer crypto.Signer
	chain  []*x509.Certificate
}

var _ Keyring = (*Keys)(nil)

// Report is what the start-up checks found about one configured key.
type Report struct {
	Key         string   // "signer" or "signer.keys[i]"
	Domains     []string // domains it signs for
	Chain       []*x509.Certificate
	Problems    []Problem // profile, validity and chain findings
	Err         error     // the key or certificate could not be loaded or does not match
	Certificate string    // path
}

// OK reports whether the key can be used: loaded, matching, no problem other than warnings.
func (r Report) OK() bool {
	if r.Err != nil {
		return false
	}
	for _, p := range r.Problems {
		if !p.Warning {
			return false
		}
	}
	return true
}

func (r Report) where() string {
	if len(r.Domains) == 0 {
		return r.Key
	}
	return fmt.Sprintf("domain %s (%s)", strings.Join(r.Domains, ", "), r.Key)
}

// New loads every key of cfg, checks each against its certificate (a probe signature verified
// with the certificate's public key), checks the certificates' RFC 6109 profile and validity,
// and warns about certificates expiring within cfg.ExpiryWarning. The error names the domain
// and the problem.
func New(cfg Config, deps Deps) (*Keys, error) {
	k, reports, err := load(cfg, deps, false)
	if err != nil {
		return nil, err
	}
	for _, r := range reports {
		if !r.OK() {
			k.Close()
			return nil, reportError(r)
		}
	}
	return k, nil
}

// Check runs the start-up checks of New on every key and reports them all instead of stopping
// at the first problem; pecctl keys check prints it. The error is a configuration error that
// prevents checking at all.
func Check(cfg Config, deps Deps) ([]Report, error) {
	k, reports, err := load(cfg, deps, true)
	if k != nil {
		k.Close()
	}
	return reports, err
}

func reportError(r Report) error {
	if r.Err != nil {
		return fmt.Errorf("hsm: %s: %w", r.where(), r.Err)
	}
	var msgs []string
	for _, p := range r.Problems {
		if !p.Warning {
			msgs = append(msgs, p.String())
		}
	}
	return fmt.Errorf("hsm: %s: certificate %s: %s", r.where(), r.Certificate, strings.Join(msgs, "; "))
}

func load(cfg Config, deps Deps, all bool) (*Keys, []Report, error) {
	if err := cfg.CheckTuning(); err != nil {
		return nil, nil, fmt.Errorf("hsm: %w", err)
	}
	cfg.applyDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	digest, err := digestHash(cfg.Digest)
	if err != nil {
		return nil, nil, fmt.Errorf("hsm: signer.%v", err)
	}
	specs, err := cfg.specs(deps.Provider)
	if err != nil {
		return nil, nil, err
	}
	met := newMetrics(deps.Registerer)
	k := &Keys{digest: digest, byDomain: map[string]entry{}, log: deps.Logger, warn: cfg.ExpiryWarning}
	l := &loader{cfg: &cfg, deps: deps, met: met, keys: k, mods: map[string]*module{}, toks: map[string]*token{}}
	var reports []Report
	for _, s := range specs {
		r := l.loadSpec(s)
		reports = append(reports, r)
		if !r.OK() && !all {
			return k, reports, nil
		}
		if r.OK() {
			c := r.Chain[0]
			deps.Logger.Info("hsm: key ready", slog.String("key", s.name), slog.Any("domains", s.domains),
				slog.String("subject", c.Subject.String()), slog.String("sha1", Fingerprint(c)),
				slog.Time("not_after", c.NotAfter))
		}
		for _, p := range r.Problems {
			if p.Warning {
				deps.Logger.Warn("hsm: certificate", slog.String("key", s.name), slog.Any("domains", s.domains),
					slog.String("check", p.Check), slog.String("detail", p.Detail))
			}
		}
	}
	return k, reports, nil
}

type loader struct {
	cfg  *Config
	deps Deps
	met  *metrics
	keys *Keys
	mods map[string]*module
	toks map[string]*token
}

func (l *loader) loadSpec(s keySpec) Report {
	r := Report{Key: s.name, Domains: s.domains, Certificate: s.certificate}
	chain, err := ReadChain(s.certificate)
	if err != nil {
		r.Err = err
		return r
	}
	r.Chain = chain
	r.Problems = append(r.Problems, CheckProfile(chain[0], l.deps.Provider.Name, s.serviceAddress)...)
	r.Problems = append(r.Problems, CheckValidity(chain[0], l.deps.Now(), l.cfg.ExpiryWarning)...)
	for i := 1; i < len(chain); i++ {
		if err := chain[i-1].CheckSignatureFrom(chain[i]); err != nil {
			r.Problems = append(r.Problems, Problem{Check: "chain", Detail: fmt.Sprintf("certificate %d is not signed by certificate %d of the file: %v", i-1, i, err)})
		}
	}
	var signer crypto.Signer
	if s.pemKey != "" {
		signer, err = loadPEMKey(s.pemKey, l.met)
		if err != nil {
			r.Err = fmt.Errorf("pem_key: %w", err)
			return r
		}
	} else {
		signer, err = l.pkcs11Signer(s.pkcs11, chain[0].PublicKey)
		if err != nil {
			r.Err = err
			return r
		}
	}
	if err := MatchProbe(signer, chain[0]); err != nil {
		r.Err = err
		return r
	}
	e := entry{signer: &validSigner{Signer: signer, cert: chain[0], now: l.deps.Now, met: l.met, log: l.deps.Logger, key: s.name}, chain: chain}
	if len(l.deps.Provider.Domains) == 0 && s.name == "signer" {
		l.keys.fallback = &e
	}
	for _, d := range s.domains {
		l.keys.byDomain[d] = e
	}
	return r
}

// pkcs11Signer opens (or shares) the module and token of c and finds the key.
func (l *loader) pkcs11Signer(c PKCS11Config, pub crypto.PublicKey) (*p11Signer, error) {
	rc, err := c.resolve()
	if err != nil {
		return nil, fmt.Errorf("pkcs11.%v", err)
	}
	pin, err := rc.pin()
	if err != nil {
		return nil, fmt.Errorf("pkcs11.%v", err)
	}
	if rc.pinEnv != "" && !slices.Contains(l.keys.pinEnvs, rc.pinEnv) {
		l.keys.pinEnvs = append(l.keys.pinEnvs, rc.pinEnv)
	}
	m, ok := l.mods[rc.module]
	if !ok {
		m, err = openModule(rc.module)
		if err != nil {
			return nil, err
		}
		l.mods[rc.module] = m
		l.keys.modules = append(l.keys.modules, m)
	}
	tk := rc.module + "\x00" + rc.token
	t, ok := l.toks[tk]
	if !ok {
		t = newToken(m, rc.token, pin, l.cfg, l.deps.Logger, l.met)
		if err := t.open(); err != nil {
			return nil, err
		}
		l.toks[tk] = t
		l.keys.tokens = append(l.keys.tokens, t)
	}
	key := &p11Key{label: rc.label, id: rc.id}
	if err := t.addKey(key); err != nil {
		return nil, err
	}
	_, certRSA := pub.(*rsa.PublicKey)
	if isRSAKey(key.keyType) != certRSA {
		return nil, fmt.Errorf("token %q: %v: the private key does not match the certificate (key type %#x, certificate key %T)", rc.token, key, key.keyType, pub)
	}
	return &p11Signer{tok: t, key: key, pub: pub, met: l.met}, nil
}

// addKey finds k on the open token and adds it to the keys reopen looks for.
func (t *token) addKey(k *p11Key) error {
	l, err := t.acquire(k)
	if err != nil {
		return fmt.Errorf("token %q: %w", t.label, err)
	}
	defer t.release(l, false)
	t.mod.mu.RLock()
	h, kt, err := findPrivateKey(t.mod.ctx, l.h, k.label, k.id)
	t.mod.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("token %q: %v: %w", t.label, k, err)
	}
	t.mu.Lock()
	k.handle, k.keyType = h, kt
	t.keys = append(t.keys, k)
	t.mu.Unlock()
	return nil
}

// MatchProbe signs a probe digest with signer and verifies it with the certificate's public
// key: it proves the key on the token is the certificate's, whatever the token lets us read.
func MatchProbe(signer crypto.Signer, cert *x509.Certificate) error {
	probe := make([]byte, 32)
	if _, err := rand.Read(probe); err != nil {
		return err
	}
	d := sha256.Sum256(probe)
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("probe signature: %w", err)
	}
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, d[:], sig) {
			err = errors.New("verification failed")
		}
	default:
		err = fmt.Errorf("public key type %T not supported", pub)
	}
	if err != nil {
		return fmt.Errorf("the private key does not match the certificate (probe signature: %v)", err)
	}
	return nil
}

// ReadChain reads a PEM file: the signer certificate, then intermediates.
func ReadChain(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	var chain []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", path, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("certificate %s: no CERTIFICATE block", path)
	}
	return chain, nil
}

// SignerFor implements Keyring.
func (k *Keys) SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error) {
	e, ok := k.byDomain[strings.ToLower(domain)]
	if !ok {
		if k.fallback == nil {
			return nil, nil, fmt.Errorf("%w: %s", ErrUnknownDomain, domain)
		}
		e = *k.fallback
	}
	return e.signer, e.chain, nil
}

// WarnExpiring logs a warning for every signer certificate that expires within
// Config.ExpiryWarning of now (or has expired), and returns how many did. New checks once at
// start-up; a long-running daemon calls this daily.
func (k *Keys) WarnExpiring(now time.Time) int {
	seen := map[*x509.Certificate]bool{}
	var all []entry
	for _, e := range k.byDomain {
		all = append(all, e)
	}
	if k.fallback != nil {
		all = append(all, *k.fallback)
	}
	n := 0
	for _, e := range all {
		c := e.chain[0]
		if seen[c] {
			continue
		}
		seen[c] = true
		for _, p := range CheckValidity(c, now, k.warn) {
			k.log.Warn("hsm: certificate", slog.String("subject", c.Subject.String()), slog.String("sha1", Fingerprint(c)),
				slog.String("check", p.Check), slog.String("detail", p.Detail))
			n++
		}
	}
	return n
}

// ForgetPINEnv removes from the process environment every variable a PIN was read from
// (signer.pkcs11.pin_env), and returns their names (issue 12 item 10). The keyring keeps the
// PINs it needs to log in again after a token comes back; nothing else in the process, no
// child process, and (on Linux) neither /proc/PID/environ nor `ps e` shows them afterwards
// (internal/environ). The error says the kernel's copy could not be blanked; the variables
// are unset anyway.
func (k *Keys) ForgetPINEnv() ([]string, error) {
	return k.pinEnvs, environ.Forget(k.pinEnvs...)
}

// Digest is the hash configured for message signatures (signer.digest).
func (k *Keys) Digest() crypto.Hash { return k.digest }

// Close closes the sessions and releases the PKCS#11 modules. Signers must not be used after.
func (k *Keys) Close() error {
	for _, t := range k.tokens {
		t.close()
	}
	for _, m := range k.modules {
		m.close()
	}
	k.tokens, k.modules = nil, nil
	return nil
}

// isRSAKey reports whether a token key type is RSA (CKK_RSA), for callers checking types.
func isRSAKey(kt uint) bool { return kt == pkcs11.CKK_RSA }
