package igpec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the index: section of the YAML configuration.
type Config struct {
	// Source is ldap://host:port/o=postacert, ldaps://... (server certificate checked against
	// the system roots), a path to an .ldif file, a path to a signed .ldif.p7m, or an https://
	// URL of either (RFC 6109 §4.5, §5.6: the central index's LDIFLocationURL, downloaded
	// with the provider's client certificate; a URL ending in .p7m is verified against
	// TrustAnchor like a signed file).
	Source string `yaml:"source"`
	// ServerCA is a PEM file of the CA certificates an https:// source's server certificate
	// must chain to; default the system roots.
	ServerCA string `yaml:"server_ca"`
	// ClientCert and ClientKey are PEM files of the certificate and key an https:// source
	// presents (the central index admits licensed providers by their certificate).
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	// BindDN and PasswordEnv authenticate to LDAP (simple bind); anonymous when BindDN is
	// empty. The password is read from the environment variable PasswordEnv names.
	BindDN      string `yaml:"bind_dn"`
	PasswordEnv string `yaml:"password_env"`
	// Refresh is the interval between refreshes; default 1h, at most MaxRefresh (24h): RFC
	// 6109 §4.5 requires at least a daily refresh of the local copy.
	Refresh time.Duration `yaml:"refresh"`
	// TrustAnchor is a PEM file of CA certificates a .ldif.p7m signer must chain to.
	TrustAnchor string `yaml:"trust_anchor"`
	// Timeout bounds one load from the source; default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// Cache, when set, is a file where every good snapshot is written (atomically), so that a
	// restart while the source is down starts from the last good copy. The programs (pec-milter,
	// pec-lmtpd, pecctl) set it by default (providers-index.ldif next to the SQLite database,
	// cmd/internal/config); "off" in the configuration file disables it.
	Cache string `yaml:"cache"`
	// MaxAge is the age beyond which the copy in use is reported stale (log warning and the
	// pec_index_snapshot_stale gauge); default 24h, the rule's daily refresh.
	MaxAge time.Duration `yaml:"max_age"`
}

// Defaults of Config.
const (
	DefaultRefresh = time.Hour
	DefaultTimeout = 30 * time.Second
	DefaultMaxAge  = 24 * time.Hour
)

// MaxRefresh is the longest index.refresh: RFC 6109 §4.5 requires the local copy of the
// providers index to be refreshed at least daily.
const MaxRefresh = 24 * time.Hour

// CheckDurations checks the durations of cfg as given (zero means the default): none
// negative, and refresh at most MaxRefresh. The error names the key.
func (cfg Config) CheckDurations() error {
	switch {
	case cfg.Refresh < 0:
		return fmt.Errorf("index.refresh: %v: must not be negative", cfg.Refresh)
	case cfg.Refresh > MaxRefresh:
		return fmt.Errorf("index.refresh: %v: at most 24h (RFC 6109 §4.5: the local copy of the providers index is refreshed at least daily)", cfg.Refresh)
	case cfg.Timeout < 0:
		return fmt.Errorf("index.timeout: %v: must not be negative", cfg.Timeout)
	case cfg.MaxAge < 0:
		return fmt.Errorf("index.max_age: %v: must not be negative", cfg.MaxAge)
	}
	return nil
}

// Deps are the injected dependencies of an Index. Every field is optional.
type Deps struct {
	Logger     *slog.Logger          // default: discard
	Registerer prometheus.Registerer // default: metrics are not registered anywhere
	Now        func() time.Time      // default time.Now
	Getenv     func(string) string   // default os.Getenv
	Source     Source                // overrides Config.Source (tests, tools)
}

// Index is the providers index in use: a snapshot behind an atomic pointer, replaced whole on
// each successful refresh. Lookups read the current snapshot and never block or do I/O.
type Index struct {
	cfg    Config
	src    Source
	log    *slog.Logger
	now    func() time.Time
	cur    atomic.Pointer[Snapshot]
	mu     sync.Mutex // serialises refreshes
	m      *metrics
	staleW atomic.Bool // a stale warning was logged for the current snapshot
}

// New validates cfg, loads the first snapshot and returns the Index. When the source cannot
// be loaded, the cache (if configured and readable) is used instead, with a warning; when
// neither works New fails, naming the source. Call Run to refresh on schedule.
// (Long on purpose: every option of the index validated with its default at start-up.)
func New(cfg Config, deps Deps) (*Index, error) {
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if err := cfg.CheckDurations(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	src := deps.Source
	if src == nil {
		var err error
		if src, err = NewSource(cfg, deps.Getenv); err != nil {
			return nil, err
		}
	}
	x := &Index{cfg: cfg, src: src, log: deps.Logger.With("component", "igpec", "source", src.String()), now: deps.Now}
	x.m = newMetrics(x)
	// Metrics are registered only once a snapshot is in use, so that a failed New leaves
	// nothing behind in the registry and can be retried.
	register := func() (*Index, error) {
		if deps.Registerer != nil {
			if err := x.m.register(deps.Registerer); err != nil {
				return nil, fmt.Errorf("igpec: metrics: %w", err)
			}
		}
		return x, nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	snap, err := x.load(ctx)
	if err == nil {
		x.install(snap, true)
		return register()
	}
	x.m.failed()
	if cfg.Cache == "" {
		return nil, fmt.Errorf("igpec: cannot load the providers index from %s: %w", src, err)
	}
	cached, cerr := ReadCache(cfg.Cache)
	if cerr != nil {
		return nil, fmt.Errorf("igpec: cannot load the providers index from %s (%v) nor from the cache: %w", src, err, cerr)
	}
	x.log.Warn("providers index source unavailable at start; using the cached copy",
		"error", err, "cache", cfg.Cache, "cache_loaded", cached.Loaded)
	x.install(cached, false)
	return register()
}

// Snapshot returns the snapshot in use.
func (x *Index) Snapshot() *Snapshot { return x.cur.Load() }

// Certified reports whether domain is managed by a listed provider (see Snapshot.Certified).
func (x *Index) Certified(domain string) bool { return x.cur.Load().Certified(domain) }

// DomainRecord returns the record managing domain (see Snapshot.DomainRecord).
func (x *Index) DomainRecord(domain string) (*Record, bool) { return x.cur.Load().DomainRecord(domain) }

// Signer returns the record owning the signer certificate der (see Snapshot.Signer).
func (x *Index) Signer(der []byte, fromDomain string) (*Record, bool) {
	return x.cur.Load().Signer(der, fromDomain)
}

// ByHash returns the records listing a providerCertificateHash (see Snapshot.ByHash).
func (x *Index) ByHash(h string) []*Record { return x.cur.Load().ByHash(h) }

// Report is the outcome of a load or refresh.
type Report struct {
	Source   string
	Loaded   time.Time
	Records  int
	Domains  int
	Rejected []Rejected
	Warnings []string
	Changes  Changes // against the snapshot that was in use before
}

func reportOf(s *Snapshot, prev *Snapshot) Report {
	return Report{
		Source: s.Source, Loaded: s.Loaded, Records: len(s.Records), Domains: s.Domains(),
		Rejected: s.Rejected, Warnings: s.Warnings, Changes: Compare(prev, s),
	}
}

// Refresh loads the source once and, on success, swaps the new snapshot in and rewrites the
// cache. On failure the snapshot in use stays, the failure is logged and counted
// (pec_index_refresh_failures_total), and the error is returned.
func (x *Index) Refresh(ctx context.Context) (Report, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
	defer cancel()
	prev := x.cur.Load()
	snap, err := x.load(ctx)
	if err != nil {
		x.m.failed()
		x.log.Error("providers index refresh failed; keeping the last good copy",
			"error", err, "snapshot_age", x.now().Sub(prev.Loaded).Round(time.Second))
		x.checkAge()
		return Report{}, err
	}
	rep := reportOf(snap, prev)
	x.install(snap, true)
	if !rep.Changes.Empty() {
		x.log.Info("providers index changed", "added", len(rep.Changes.Added), "removed", len(rep.Changes.Removed),
			"changed", len(rep.Changes.Changed), "domains_added", len(rep.Changes.DomainsAdded),
			"domains_removed", len(rep.Changes.DomainsRemoved))
	}
	return rep, nil
}

// Run refreshes every Config.Refresh until ctx ends, and checks the age of the copy in use
// every minute. It returns ctx.Err().
func (x *Index) Run(ctx context.Context) error {
	refresh := time.NewTicker(x.cfg.Refresh)
	defer refresh.Stop()
	age := time.NewTicker(time.Minute)
	defer age.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-refresh.C:
			x.Refresh(ctx) // failures are logged and counted by Refresh
		case <-age.C:
			x.checkAge()
		}
	}
}

func (x *Index) load(ctx context.Context) (*Snapshot, error) {
	start := x.now()
	snap, err := LoadSnapshot(ctx, x.src, start)
	if err != nil {
		return nil, err
	}
	x.m.duration.Observe(x.now().Sub(start).Seconds())
	return snap, nil
}

// LoadSnapshot loads src once and builds a snapshot stamped loaded. A source that answers
// with no valid provider record is a failure: an empty index would make every recipient
// "esterno" and every busta an anomaly, so the caller keeps its last good copy instead.
func LoadSnapshot(ctx context.Context, src Source, loaded time.Time) (*Snapshot, error) {
	entries, err := src.Load(ctx)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	snap := Build(entries, src.String(), loaded)
	if len(snap.Records) == 0 {
		if len(snap.Rejected) > 0 {
			return nil, fmt.Errorf("%s: no valid provider record (%d rejected; first: %s)", src, len(snap.Rejected), snap.Rejected[0])
		}
		return nil, fmt.Errorf("%s: no provider record", src)
	}
	return snap, nil
}

// install makes snap the snapshot in use; fresh is false for a copy read from the cache.
func (x *Index) install(snap *Snapshot, fresh bool) {
	x.cur.Store(snap)
	x.staleW.Store(false)
	x.m.rejected.Set(float64(len(snap.Rejected)))
	for _, r := range snap.Rejected {
		x.log.Warn("providers index record rejected", "dn", r.DN, "line", r.Line, "reason", r.Reason)
	}
	for _, w := range snap.Warnings {
		x.log.Warn("providers index warning", "warning", w)
	}
	x.log.Info("providers index loaded", "records", len(snap.Records), "domains", snap.Domains(),
		"rejected", len(snap.Rejected), "from_cache", !fresh)
	if fresh {
		x.m.success.SetToCurrentTime()
		if x.cfg.Cache != "" {
			if err := WriteCache(x.cfg.Cache, snap); err != nil {
				x.log.Error("cannot write the providers index cache", "cache", x.cfg.Cache, "error", err)
			}
		}
	}
	x.checkAge()
}

// checkAge logs a warning, once per snapshot, when the copy in use is older than MaxAge.
func (x *Index) checkAge() {
	snap := x.cur.Load()
	if snap == nil {
		return
	}
	age := x.now().Sub(snap.Loaded)
	if age > x.cfg.MaxAge && x.staleW.CompareAndSwap(false, true) {
		x.log.Warn("providers index copy is stale: the rules require a daily refresh",
			"age", age.Round(time.Second), "max_age", x.cfg.MaxAge, "loaded", snap.Loaded)
	}
}

// Stale reports whether the copy in use is older than Config.MaxAge.
func (x *Index) Stale() bool { return x.now().Sub(x.cur.Load().Loaded) > x.cfg.MaxAge }

// ErrNoCache is returned by ReadCache when the cache file does not exist.
var ErrNoCache = errors.New("igpec: no cached index")
