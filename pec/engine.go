package pec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/pec/inspect"
	"github.com/gestore-pec/gestore/pec/store"
)

// Index tells whether a domain is managed by a listed PEC provider (igpec.Index has this
// shape). Lookups use the local copy of the index and do no I/O.
type Index interface {
	Certified(domain string) bool
}

// Scanner is the antivirus (clamd.Client has this shape): virus is the signature name, or ""
// when the message is clean; an error means no verdict.
type Scanner interface {
	Scan(ctx context.Context, r io.Reader) (virus string, err error)
}

// Store is the durable state the engine writes: one atomic Commit per processing step, and
// the held steps released by Postfix's confirmation (store.Store has it all).
type Store interface {
	Commit(ctx context.Context, b *store.Batch) error
	LookupHeld(ctx context.Context, key string, since time.Time) (*store.Held, error)
	Confirm(ctx context.Context, token string, at time.Time) (*store.Held, error)
	ExpireHeld(ctx context.Context, now time.Time, limit int) (int, error)
	PurgeHeld(ctx context.Context, before time.Time) (int64, error)
	DueTracking(ctx context.Context, now time.Time, limit int) ([]store.Tracking, error)
	Tracking(ctx context.Context, identificativo string) ([]store.Tracking, error)
	store.Deliveries // the delivery point's records (delivery.go)
}

// Inspector is the content inspection of the access point (inspect.Inspector has it).
type Inspector interface {
	Inspect(msg []byte) inspect.Report
}

// Config is what the engine needs to know about the provider. New validates it once.
type Config struct {
	// Identities are the provider's identities, one per PEC domain it serves. The first is
	// the provider's main identity: it signs what concerns no single domain (the log seal,
	// the index record) and is used for a sender outside every identity. Required.
	Identities []Identity
	// Location is the legal time of texts and daticert; default Europe/Rome (RFC 6109 §4.2).
	Location *time.Location
	// Node names this node in the identificativi; default the short host name.
	Node string
	// Limits are the access point's limits (RFC 6109 §3.1.1).
	Limits Limits
	// Options tune the builders (CMS digest, HTML alternative). Options.MaxSize is the
	// largest busta Postfix will queue (message_size_limit minus a margin): above it the
	// submission gets an avviso di non accettazione instead of a busta cleanup would refuse.
	Options Options
	// ConfirmDomain is the domain of the confirmation recipients (confirm.go); default
	// DefaultConfirmDomain. Postfix's transport_maps must route it to the confirmation
	// listener.
	ConfirmDomain string
	// ConfirmExpiry is how long a held step waits for Postfix's confirmation before it
	// expires with a log event and nothing attested; default 1h.
	ConfirmExpiry time.Duration
	// RetryWindow is how long a client's retry of the same submission finds the first
	// outcome; default 24h. The reception point uses the same window for a sending MTA's
	// retries of a busta.
	RetryWindow time.Duration
	// Deadlines are the 12 h / 22 h / 24 h notice deadlines given to each tracked recipient
	// (pec-spec.md §6.3); zero is store.DefaultDeadlines. Shorter ones are for tests.
	Deadlines store.Deadlines
	// SignTimeout bounds one signature by the keys; default 10s. Keep it well below
	// milter.timeout.
	SignTimeout time.Duration
	// OrdinaryMail is what the reception point does with anything that is not a valid PEC
	// message: PolicyAnomaly (default) wraps it in a busta di anomalia, PolicyReject refuses it
	// (pec-spec.md §2.5).
	OrdinaryMail string
	// Delivery tunes the delivery point (delivery.go).
	Delivery DeliveryConfig
}

// Deps are the engine's collaborators.
type Deps struct {
	Keys    Signer // signing keys and chains per PEC domain (hsm.Keys)
	Store   Store
	Index   Index
	Scanner Scanner
	// Inspector applies the content policy (forbidden attachments, macros, files that cannot
	// be checked; issue 16). nil: no inspection.
	Inspector Inspector
	Clock     Clock     // default SystemClock
	Rand      io.Reader // identificativi; default crypto/rand
	// Trust is the reception point's check of incoming PEC messages (RFC 6109 §7); without it
	// Receive fails temporarily (an engine for the access point alone needs none).
	Trust *Trust
	// Mailboxes finds a message already in a mailbox, for the delivery point's crash
	// recovery (delivery.go); needed only by BeginDelivery.
	Mailboxes Mailboxes
}

// Engine is the PEC engine: every rule of the access, reception and delivery points and of
// the sender-side tracking, over the collaborators in Deps. The adapters (milter, lmtpd)
// turn protocol events into one engine call each and the result or error into their
// protocol's reply (Reply).
type Engine struct {
	cfg      Config
	deps     Deps
	byDomain map[string]Identity

	mu     sync.Mutex
	issued map[string]time.Time // confirmation tokens handed to Postfix by this process, not yet confirmed here
	// delivering are the delivery records this process holds while it delivers (delivery.go).
	delivering map[store.DeliveryKey]bool
}

// New validates cfg and deps and applies the defaults.
func New(cfg Config, deps Deps) (*Engine, error) {
	byDomain, err := identities(cfg.Identities)
	if err != nil {
		return nil, err
	}
	switch {
	case deps.Keys == nil || deps.Index == nil || deps.Scanner == nil || deps.Store == nil:
		return nil, errors.New("pec: the engine needs keys, an index, a scanner and a store")
	case cfg.Limits.MaxRecipients < 0 || cfg.Limits.MaxSizeTimesRecipients < 0:
		return nil, errors.New("limits: must not be negative")
	}
	if err := cfg.defaults(byDomain); err != nil {
		return nil, err
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock
	}
	deps.Keys = boundedKeys{deps.Keys, cfg.SignTimeout}
	return &Engine{cfg: cfg, deps: deps, byDomain: byDomain, issued: map[string]time.Time{}, delivering: map[store.DeliveryKey]bool{}}, nil
}

// identities checks the identities and indexes them by their (lower-case) domain.
func identities(ids []Identity) (map[string]Identity, error) {
	if len(ids) == 0 {
		return nil, errors.New("provider: at least one identity (PEC domain) is required")
	}
	byDomain := map[string]Identity{}
	for i, id := range ids {
		switch {
		case id.Name == "":
			return nil, errors.New("provider.name: required")
		case id.Domain == "":
			return nil, errors.New("provider.domains: required")
		case id.ServiceAddress == "" || !strings.Contains(id.ServiceAddress, "@"):
			return nil, fmt.Errorf("provider.service_address: required for %s", id.Domain)
		}
		d := strings.ToLower(id.Domain)
		if _, dup := byDomain[d]; dup {
			return nil, fmt.Errorf("provider.domains: %s listed twice", d)
		}
		ids[i].Domain = d
		byDomain[d] = ids[i]
	}
	return byDomain, nil
}

// defaults applies the documented defaults and checks the rest of the configuration.
func (cfg *Config) defaults(byDomain map[string]Identity) error {
	if cfg.Location == nil {
		cfg.Location = Rome()
	}
	if cfg.Node == "" {
		h, _ := os.Hostname()
		cfg.Node, _, _ = strings.Cut(h, ".")
	}
	if cfg.ConfirmDomain == "" {
		cfg.ConfirmDomain = DefaultConfirmDomain
	}
	cfg.ConfirmDomain = strings.ToLower(cfg.ConfirmDomain)
	if _, own := byDomain[cfg.ConfirmDomain]; own || !strings.Contains(cfg.ConfirmDomain, ".") {
		return fmt.Errorf("confirm.domain: %q must be a domain of its own, not a PEC domain", cfg.ConfirmDomain)
	}
	if cfg.ConfirmExpiry == 0 {
		cfg.ConfirmExpiry = time.Hour
	}
	if cfg.RetryWindow == 0 {
		cfg.RetryWindow = 24 * time.Hour
	}
	cfg.Deadlines = cfg.Deadlines.OrDefault()
	if err := cfg.Deadlines.Validate(); err != nil {
		return fmt.Errorf("tracking: %w", err)
	}
	if cfg.SignTimeout == 0 {
		cfg.SignTimeout = 10 * time.Second
	}
	if cfg.ConfirmExpiry < 0 || cfg.RetryWindow < 0 || cfg.SignTimeout < 0 {
		return errors.New("confirm: durations must be positive")
	}
	switch cfg.OrdinaryMail {
	case "":
		cfg.OrdinaryMail = PolicyAnomaly
	case PolicyAnomaly, PolicyReject:
	default:
		return fmt.Errorf("policy.ordinary_mail: %q: want %s or %s", cfg.OrdinaryMail, PolicyAnomaly, PolicyReject)
	}
	if err := cfg.Delivery.defaults(cfg.Node); err != nil {
		return err
	}
	return nil
}

// Main is the provider's main identity (the first configured).
func (e *Engine) Main() Identity { return e.cfg.Identities[0] }

// IdentityFor returns the identity of the PEC domain of addr (an address or a bare domain),
// and whether addr is in one of the provider's PEC domains. Outside them it returns the main
// identity and false.
func (e *Engine) IdentityFor(addr string) (Identity, bool) {
	d := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		d = addr[i+1:]
	}
	if id, ok := e.byDomain[CanonDomain(d)]; ok {
		return id, true
	}
	return e.Main(), false
}

// builder returns the message builder of an identity.
func (e *Engine) builder(id Identity) *Builder {
	return &Builder{ID: id, Keys: e.deps.Keys, Opt: e.cfg.Options}
}

// now is the time reference of a processing step (DM art. 9, pec-spec.md §6.2).
func (e *Engine) now() TimeRef { return NewTimeRef(e.deps.Clock.Now(), e.cfg.Location) }
