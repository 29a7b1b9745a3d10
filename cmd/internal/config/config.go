// Package config is the one typed configuration of pec-milter, pec-lmtpd and pecctl: the YAML
// file described in DESIGN.md, decoded into one struct made of each package's own Config for
// its section, and validated once at start with errors that name the key
// ("config: limits.max_size_times_recipients: must be positive").
//
// Sections owned by an engine package (store, clamd, ...) are that package's Config type and
// are validated again by its constructor; this package checks what no constructor sees
// (provider identity, limits, the listeners) and the combinations between sections.
//
// The file is decoded with gopkg.in/yaml.v3 in strict mode, so that every section's `yaml`
// tags and UnmarshalYAML methods apply exactly as their packages declare them and a
// misspelt key is an error, not a silently ignored setting.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/reinject"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
)

// Config is the whole file.
type Config struct {
	// Node names this process in identificativi, logs and store leases; default the short
	// host name. Every running process sharing one store needs its own (two pec-milter
	// processes on one machine: node: mx1a, node: mx1b); a restarted process keeps its name and
	// so takes back its own leases at once.
	Node     string          `yaml:"node"`
	Provider Provider        `yaml:"provider"`
	Signer   hsm.Config      `yaml:"signer"`
	Index    igpec.Config    `yaml:"index"`
	Trust    Trust           `yaml:"trust"` // the reception point's trust check (trust.go)
	Store    store.Config    `yaml:"store"`
	Milter   Milter          `yaml:"milter"`
	Confirm  Confirm         `yaml:"confirm"`
	Tracking Tracking        `yaml:"tracking"`
	Content  Content         `yaml:"content"`
	LMTP     LMTP            `yaml:"lmtp"`
	Reinject reinject.Config `yaml:"reinject"`
	Clamd    clamd.Config    `yaml:"clamd"`
	Limits   Limits          `yaml:"limits"`
	Policy   Policy          `yaml:"policy"`
	Log      Log             `yaml:"log"`
	Metrics  Metrics         `yaml:"metrics"`
	// Seal is the daily seal of the legal log (DPR 68/2005 art. 10: a daily timestamp).
	// Optional so that a test setup runs without a TSA; nil means the log is not sealed and
	// pec-milter warns at start.
	Seal *seal.Config `yaml:"seal"`
}

// Provider is the identity of the gestore.
type Provider struct {
	Name           string   `yaml:"name"`            // gestore-emittente; matches the certificate and the index
	Domains        []string `yaml:"domains"`         // PEC domains served
	ServiceAddress string   `yaml:"service_address"` // posta-certificata@<domain>: From of system messages
	ReceiptAddress string   `yaml:"receipt_address"` // mailReceipt in the index
	Timezone       string   `yaml:"timezone"`        // legal time of texts and daticert; default Europe/Rome
	Production     bool     `yaml:"production"`

	// Location is Timezone loaded by Validate.
	Location *time.Location `yaml:"-"`
}

// Milter is the pec-milter listener.
type Milter struct {
	// Listen is "unix:/path/to/socket" (recommended: only allow_users may connect) or
	// "inet:host:port" (only with allow_inet_peers).
	Listen string `yaml:"listen"`
	// SocketMode is the octal mode of a unix socket; default "0660".
	SocketMode string `yaml:"socket_mode"`
	// SocketGroup is the group given to a unix socket so Postfix's smtpd can connect;
	// default "postfix". "-" leaves the process's group.
	SocketGroup string `yaml:"socket_group"`
	// Peers: who may connect (allow_users, default [postfix]; allow_inet_peers for inet:).
	Peers `yaml:",inline"`
	// Timeout bounds the work of one end-of-message (scan, sign, commit); past it the
	// message is temp-failed. Keep it below Postfix's milter_content_timeout. Default 120s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBuffered bounds the message bytes all transactions hold in memory together; past
	// it a transaction is temp-failed. Default the larger of 4 × limits.hard_max_size and
	// 256MiB.
	MaxBuffered Size `yaml:"max_buffered"`
	// StreamScanFrom is the message size from which the antivirus scan of a submission runs
	// while Postfix sends the message to the milter, instead of after it. Default 256KiB; a
	// value above limits.hard_max_size turns it off.
	StreamScanFrom Size `yaml:"stream_scan_from"`
	// ShutdownGrace is how long SIGTERM waits for SMTP sessions to end before refusing new
	// transactions and closing; transactions already at end-of-message always finish.
	// Default 30s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// Confirm is the confirmation listener of pec-milter (pec/confirm.go): Postfix delivers to it,
// over LMTP, the confirmation recipient the milter adds to every busta it hands back, which
// proves the busta is in Postfix's queue; only then is the accettazione (or the presa in
// carico) released.
type Confirm struct {
	// Listen is "unix:/path" (recommended; Postfix's transport_maps sends the confirmation
	// domain there) or "inet:127.0.0.1:port" (only with allow_inet_peers). Required for
	// pec-milter.
	Listen string `yaml:"listen"`
	// SocketMode and SocketGroup as for milter: default "0660" and "postfix".
	SocketMode  string `yaml:"socket_mode"`
	SocketGroup string `yaml:"socket_group"`
	// Peers as for milter: only Postfix's lmtp client (user postfix by default) may deliver
	// confirmations, which release accettazioni.
	Peers `yaml:",inline"`
	// Domain is the domain of the confirmation recipients; default confirm.pec.invalid.
	Domain string `yaml:"domain"`
	// Expiry: a held step not confirmed within it expires with a log event and nothing
	// attested. Default 1h.
	Expiry time.Duration `yaml:"expiry"`
	// RetryWindow: a client's retry of the same submission within it gets the first outcome.
	// Default 24h.
	RetryWindow time.Duration `yaml:"retry_window"`
}

// Tracking is the sender-side tracking of certified recipients (pec-spec.md §6.3): the
// deadlines of the 12 h and 24 h notices and how often the sweeper looks for due ones. The
// defaults follow the rules; shorter deadlines are for tests.
type Tracking struct {
	First      time.Duration `yaml:"first"`       // the preavviso: default 12h
	FinalFrom  time.Duration `yaml:"final_from"`  // the final notice not before: default 22h
	Final      time.Duration `yaml:"final"`       // the final notice by: default 24h
	SweepEvery time.Duration `yaml:"sweep_every"` // default 1m
}

// Content is the content policy of the access point (pec/inspect): attachment types that are
// refused, and whether macros and files that cannot be inspected are only flagged (default)
// or refused. Every key is optional; the defaults are those Aruba and Poste publish.
type Content struct {
	// ForbiddenExtensions replaces the default list of refused file extensions
	// (inspect.DefaultForbiddenExtensions) when set.
	ForbiddenExtensions []string `yaml:"forbidden_extensions"`
	// AllowExtensions are removed from the forbidden list (e.g. [iso] for a provider whose
	// users send disk images).
	AllowExtensions []string `yaml:"allow_extensions"`
	// ForbiddenTypes replaces the default list of refused content types
	// (inspect.DefaultForbiddenTypes: pe, elf, macho, script, msi, lnk, iso, ...) when set.
	ForbiddenTypes []string `yaml:"forbidden_types"`
	// RefuseMacros refuses messages with macros or PDF active content instead of flagging.
	RefuseMacros bool `yaml:"refuse_macros"`
	// RefuseUnchecked refuses messages with files that cannot be inspected (encrypted,
	// password-protected archives, unsupported or damaged formats) instead of flagging.
	RefuseUnchecked bool `yaml:"refuse_unchecked"`
	// Limits of the inspection; above them the message is refused ("archive bomb").
	MaxDepth    int  `yaml:"max_depth"`    // default 32
	MaxParts    int  `yaml:"max_parts"`    // default 10000
	MaxExpanded Size `yaml:"max_expanded"` // default 256MiB
}

// Limits are the access point's size and recipient limits (pec-spec §7.1 point 6).
type Limits struct {
	// MaxRecipients caps RCPTs per message (a provider's own cap; default 500).
	MaxRecipients int `yaml:"max_recipients"`
	// MaxSizeTimesRecipients: message size × recipients above it gives an avviso di non
	// accettazione (RFC 6109 §3.1.1: 30 MB). Default 30MB.
	MaxSizeTimesRecipients Size `yaml:"max_size_times_recipients"`
	// HardMaxSize: a message above it is refused with 552 and no avviso (RFC 6109 §3.1.2).
	// Default 100MB. Keep Postfix's message_size_limit at least this large, or Postfix
	// answers first.
	HardMaxSize Size `yaml:"hard_max_size"`
	// QueueMaxSize is Postfix's message_size_limit: the largest message cleanup queues. A
	// busta (larger than its original: header recipients are repeated in daticert and text)
	// that would pass it, less a margin, gets an avviso di non accettazione instead of being
	// refused by cleanup after the fact. Default 104857600 (postfix-conf/main.cf.pec).
	QueueMaxSize Size `yaml:"queue_max_size"`
}

// BustaMaxSize is the largest busta the access point builds: QueueMaxSize less a margin of 1%
// and at least 64 KiB for what Postfix adds on the way (trace fields, envelope records).
func (l Limits) BustaMaxSize() int64 {
	q := int64(l.QueueMaxSize)
	return q - max(q/100, 64<<10)
}

// Policy holds provider choices the rules leave open.
type Policy struct {
	OrdinaryMail string `yaml:"ordinary_mail"` // "anomaly" (default) or "reject" (pec-spec §2.5)
}

// Log configures the process log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // host:port; empty disables the endpoint
	// Pprof serves Go's profiler (/debug/pprof/) on the same listener and samples blocking
	// and lock contention, for profiling under load (issue 19). Off by default: the profiles
	// expose the process's internals and the sampling costs a little on every lock.
	Pprof bool `yaml:"pprof"`
}

// DefaultPath is where pec-milter and pec-lmtpd look for the file without -config, and where
// the systemd units of postfix-conf and postfix-conf/pec.yaml.sample put it.
const DefaultPath = "/etc/gestore/pec.yaml"

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// Parse decodes and validates a YAML document.
func Parse(b []byte) (*Config, error) {
	c, err := decode(b)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Decode reads and strictly decodes the file at path without requiring the sections only the
// daemons need. It is for pecctl, whose subcommands each use a few sections (keys: provider
// and signer; index: provider, signer, index; log: provider, signer, store, seal) and leave the
// checks of those sections to the packages' constructors. Unknown or misspelt keys are still
// errors, so a file pecctl accepts is one pec-milter reads the same way. Provider.Location is
// set (default Europe/Rome), and index.cache is defaulted exactly as for the daemons (the
// local copy next to the SQLite store, or none for "off").
func Decode(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	tz := c.Provider.Timezone
	if tz == "" {
		tz = "Europe/Rome"
	}
	if c.Provider.Location, err = time.LoadLocation(tz); err != nil {
		return nil, fmt.Errorf("%w (in %s)", bad("provider.timezone", "%q: %v", tz, err), path)
	}
	return c, nil
}

func decode(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: empty file")
		}
		return nil, decodeError(b, err)
	}
	// Here, once, for the daemons (Parse) and for pecctl (Decode) alike: both see the same
	// index.cache for the same file ("off" turned off, unset defaulted).
	c.defaultIndexCache()
	return &c, nil
}

// HSM is the provider identity the signing keys are checked against (hsm.Deps.Provider).
func (p Provider) HSM() hsm.Provider {
	return hsm.Provider{Name: p.Name, ServiceAddress: p.ServiceAddress, Domains: p.Domains, Production: p.Production}
}

// Error is a validation error naming the key.
type Error struct {
	Key string // e.g. "limits.max_size_times_recipients"
	Msg string
}

func (e *Error) Error() string { return "config: " + e.Key + ": " + e.Msg }

func bad(key, format string, args ...any) error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Validate applies defaults and checks the sections every program needs. Program-specific
// sections are checked by ValidateMilter and ValidateLMTP.
func (c *Config) Validate() error {
	if c.Node != "" && !validNode(c.Node) {
		return bad("node", "%q: letters, digits and '-' only", c.Node)
	}
	if err := c.Provider.validate(); err != nil {
		return err
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	switch c.Policy.OrdinaryMail {
	case "":
		c.Policy.OrdinaryMail = "anomaly"
	case "anomaly", "reject":
	default:
		return bad("policy.ordinary_mail", "%q: want anomaly or reject", c.Policy.OrdinaryMail)
	}
	if err := c.Log.validate(); err != nil {
		return err
	}
	if err := c.Tracking.validate(); err != nil {
		return err
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return bad("metrics.listen", "%q: want host:port", c.Metrics.Listen)
		}
	}
	switch c.Store.Driver {
	case "":
		return bad("store.driver", "required (sqlite or postgres)")
	case "sqlite", "postgres":
	default:
		return bad("store.driver", "%q: want sqlite or postgres", c.Store.Driver)
	}
	if c.Store.DSN == "" {
		return bad("store.dsn", "required")
	}
	// Checked here as well as by hsm.New and igpec.New, so that pec-lmtpd and pec-milter
	// refuse a bad value before opening anything.
	if err := c.Signer.CheckTuning(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.Index.CheckDurations(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if c.Seal != nil {
		if err := validateSeal(c.Seal); err != nil {
			return err
		}
	}
	return nil
}

// validateSeal checks a present seal section; seal.New checks it again and reads the files.
func validateSeal(s *seal.Config) error {
	if s.TSAURL == "" {
		return bad("seal.tsa_url", "required (the RFC 3161 TSA that timestamps each day)")
	}
	if u, err := url.Parse(s.TSAURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("seal.tsa_url", "%q: want an http:// or https:// URL", s.TSAURL)
	}
	if s.TSACA == "" {
		return bad("seal.tsa_ca", "required (PEM trust anchor of the TSA)")
	}
	if s.Dir == "" {
		return bad("seal.dir", "required")
	}
	if s.Grace < 0 {
		return bad("seal.grace", "%v: must not be negative", s.Grace)
	}
	return nil
}

// ValidateMilter checks the sections pec-milter needs: the listener, clamd, the reinjection
// target, the signer and the index.
func (c *Config) ValidateMilter() error {
	m := &c.Milter
	if m.Listen == "" {
		return bad("milter.listen", "required (unix:/path or inet:host:port)")
	}
	if _, _, err := ParseListen(m.Listen); err != nil {
		return bad("milter.listen", "%v", err)
	}
	if err := m.Peers.validate("milter", m.Listen); err != nil {
		return err
	}
	if m.SocketMode == "" {
		m.SocketMode = "0660"
	}
	if _, err := m.FileMode(); err != nil {
		return bad("milter.socket_mode", "%v", err)
	}
	if m.SocketGroup == "" {
		m.SocketGroup = "postfix"
	}
	if m.Timeout == 0 {
		m.Timeout = 120 * time.Second
	}
	if m.Timeout < time.Second {
		return bad("milter.timeout", "%v: at least 1s", m.Timeout)
	}
	if m.ShutdownGrace == 0 {
		m.ShutdownGrace = 30 * time.Second
	}
	if m.MaxBuffered != 0 && m.MaxBuffered < c.Limits.HardMaxSize {
		return bad("milter.max_buffered", "%d bytes: must be at least limits.hard_max_size (%d)", m.MaxBuffered, c.Limits.HardMaxSize)
	}
	if m.ShutdownGrace < 0 {
		return bad("milter.shutdown_grace", "%v: must not be negative", m.ShutdownGrace)
	}
	if _, err := clamd.New(c.Clamd); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := c.validateDaemonDeps(); err != nil {
		return err
	}
	if err := c.Trust.validate(); err != nil {
		return err
	}
	return c.Confirm.validate()
}

// FileMode parses SocketMode.
func (m *Milter) FileMode() (os.FileMode, error) {
	v, err := strconv.ParseUint(m.SocketMode, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%q: want an octal mode such as 0660", m.SocketMode)
	}
	return os.FileMode(v), nil
}

// ParseListen splits "unix:/path", "inet:host:port" or "host:port" into a network and an
// address for net.Listen. The unix path must be absolute (Postfix needs the same path).
func ParseListen(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := strings.TrimPrefix(s, "unix:")
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q: the socket path must be absolute", s)
		}
		if len(p) > 107 {
			return "", "", fmt.Errorf("%q: socket paths are limited to 107 bytes", s)
		}
		return "unix", p, nil
	case strings.HasPrefix(s, "inet:"):
		s = strings.TrimPrefix(s, "inet:")
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("%q: want unix:/path or inet:host:port", s)
	}
	return "tcp", s, nil
}
