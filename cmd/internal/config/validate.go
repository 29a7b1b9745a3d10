package config

import (
	"fmt"
	"net/mail"
	"path/filepath"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// The checks of each section, applied by Validate and the program-specific validators.

func (cf *Confirm) validate() error {
	if cf.Listen == "" {
		return bad("confirm.listen", "required (unix:/path; Postfix's transport_maps routes the confirmation domain there)")
	}
	if _, _, err := ParseListen(cf.Listen); err != nil {
		return bad("confirm.listen", "%v", err)
	}
	if err := cf.Peers.validate("confirm", cf.Listen); err != nil {
		return err
	}
	if cf.SocketMode == "" {
		cf.SocketMode = "0660"
	}
	if cf.SocketGroup == "" {
		cf.SocketGroup = "postfix"
	}
	if cf.Domain == "" {
		cf.Domain = pec.DefaultConfirmDomain
	}
	cf.Domain = strings.ToLower(cf.Domain)
	if !validDomain(cf.Domain) {
		return bad("confirm.domain", "%q is not a domain name", cf.Domain)
	}
	if cf.Expiry == 0 {
		cf.Expiry = time.Hour
	}
	if cf.RetryWindow == 0 {
		cf.RetryWindow = 24 * time.Hour
	}
	if cf.Expiry < time.Second {
		return bad("confirm.expiry", "%v: at least 1s", cf.Expiry)
	}
	if cf.RetryWindow < time.Second {
		return bad("confirm.retry_window", "%v: at least 1s", cf.RetryWindow)
	}
	return nil
}

// validateReinject checks reinject.addr: the unix socket of Postfix's pec-reinject service
// (postfix-conf/master.cf.pec). Issue 12 item 3: what arrives there is queued without any
// check, so only our daemons may reach it; a unix socket in Postfix's public/ directory is
// reachable by root, the postfix user and group postdrop only (postfix-conf/README.md). A TCP
// listener would let any local process inject unsigned mail into PEC mailboxes.
func (c *Config) validateReinject() error {
	if c.Reinject.Addr == "" {
		return bad("reinject.addr", "required (unix:/path of Postfix's pec-reinject socket, e.g. unix:/var/spool/postfix/public/pec-reinject)")
	}
	// reinject.direct_addr (optional) is the pec-deliver service, the same listener without
	// the pec-loop filter: the same rule.
	for _, l := range []struct{ key, val, service string }{
		{"reinject.addr", c.Reinject.Addr, "pec-reinject"},
		{"reinject.direct_addr", c.Reinject.DirectAddr, "pec-deliver"},
	} {
		if l.val == "" {
			continue
		}
		network, _, err := ParseListen(l.val)
		if err != nil {
			return bad(l.key, "%v", err)
		}
		if network != "unix" {
			return bad(l.key, "%q: want unix:/path of Postfix's %s socket; a TCP reinjection listener lets any local process inject into PEC mailboxes", l.val, l.service)
		}
	}
	return nil
}

func (p *Provider) validate() error {
	if strings.TrimSpace(p.Name) == "" {
		return bad("provider.name", "required")
	}
	if len(p.Domains) == 0 {
		return bad("provider.domains", "at least one domain")
	}
	for i, d := range p.Domains {
		d = strings.ToLower(strings.TrimSpace(d))
		if !validDomain(d) {
			return bad(fmt.Sprintf("provider.domains[%d]", i), "%q is not a domain name", p.Domains[i])
		}
		p.Domains[i] = d
	}
	for _, a := range []struct{ key, val string }{
		{"provider.service_address", p.ServiceAddress},
		{"provider.receipt_address", p.ReceiptAddress},
	} {
		if a.val == "" {
			return bad(a.key, "required")
		}
		if ad, err := mail.ParseAddress(a.val); err != nil || ad.Address != a.val || ad.Name != "" {
			return bad(a.key, "%q is not a bare address", a.val)
		}
	}
	if !p.ServesDomain(domainOf(p.ServiceAddress)) {
		return bad("provider.service_address", "%q is not in provider.domains", p.ServiceAddress)
	}
	if p.Timezone == "" {
		p.Timezone = "Europe/Rome"
	}
	loc, err := time.LoadLocation(p.Timezone)
	if err != nil {
		return bad("provider.timezone", "%q: %v", p.Timezone, err)
	}
	p.Location = loc
	return nil
}

// ServiceDomain is the domain of the service address: the provider's mail domain, which keys
// the signer and ends every identificativo.
func (p *Provider) ServiceDomain() string { return domainOf(p.ServiceAddress) }

// ServesDomain reports whether d (any case) is one of the provider's PEC domains.
func (p *Provider) ServesDomain(d string) bool {
	for _, x := range p.Domains {
		if strings.EqualFold(x, d) {
			return true
		}
	}
	return false
}

func (l *Limits) validate() error {
	if l.MaxRecipients == 0 {
		l.MaxRecipients = 500
	}
	if l.MaxRecipients < 0 {
		return bad("limits.max_recipients", "%d: must be positive", l.MaxRecipients)
	}
	if l.MaxSizeTimesRecipients == 0 {
		l.MaxSizeTimesRecipients = 30 * 1000 * 1000
	}
	if l.MaxSizeTimesRecipients < 0 {
		return bad("limits.max_size_times_recipients", "must be positive")
	}
	if l.HardMaxSize == 0 {
		l.HardMaxSize = 100 * 1000 * 1000
	}
	if l.HardMaxSize < 1024 {
		return bad("limits.hard_max_size", "%d bytes: too small", l.HardMaxSize)
	}
	if l.HardMaxSize > 1<<31 {
		return bad("limits.hard_max_size", "%d bytes: above 2 GiB, messages are held in memory", l.HardMaxSize)
	}
	if l.QueueMaxSize == 0 {
		l.QueueMaxSize = 104857600
	}
	if l.QueueMaxSize < l.HardMaxSize {
		return bad("limits.queue_max_size", "%d bytes: below limits.hard_max_size (%d); Postfix would refuse first, with no avviso", l.QueueMaxSize, l.HardMaxSize)
	}
	return nil
}

func (l *Log) validate() error {
	switch strings.ToLower(l.Level) {
	case "":
		l.Level = "info"
	case "debug", "info", "warn", "error":
		l.Level = strings.ToLower(l.Level)
	default:
		return bad("log.level", "%q: want debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "":
		l.Format = "json"
	case "json", "text":
	default:
		return bad("log.format", "%q: want json or text", l.Format)
	}
	return nil
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func validNode(n string) bool {
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return len(n) > 0 && len(n) <= 63
}

func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (tr *Tracking) validate() error {
	d := store.Deadlines{First: tr.First, FinalFrom: tr.FinalFrom, Final: tr.Final}
	if d == (store.Deadlines{}) {
		d = store.DefaultDeadlines
	}
	if err := d.Validate(); err != nil {
		return bad("tracking", "%v", err)
	}
	tr.First, tr.FinalFrom, tr.Final = d.First, d.FinalFrom, d.Final
	if tr.SweepEvery == 0 {
		tr.SweepEvery = time.Minute
	}
	if tr.SweepEvery < time.Second || tr.SweepEvery > tr.Final-tr.FinalFrom {
		return bad("tracking.sweep_every", "%v: between 1s and final - final_from", tr.SweepEvery)
	}
	return nil
}

// IndexCacheOff disables the local copy of the providers index (index.cache: off).
const IndexCacheOff = "off"

// DefaultIndexCacheDir holds the local copy of the providers index when the store is not a
// SQLite file.
const DefaultIndexCacheDir = "/var/lib/gestore"

// defaultIndexCache turns the local copy of the providers index on unless the file says
// "off" (issue 12 item 11b): with it pec-milter starts and serves from the last good copy
// while the index source (slapd) is down, as RFC 6109 §4.5's local copy is meant to; without
// it pec-milter cannot start then. The default file is providers-index.ldif next to the
// SQLite database (a directory the process must be able to write anyway, for the -wal and
// -shm files), else in DefaultIndexCacheDir.
func (c *Config) defaultIndexCache() {
	switch c.Index.Cache {
	case IndexCacheOff:
		c.Index.Cache = ""
	case "":
		dir := DefaultIndexCacheDir
		if c.Store.Driver == "sqlite" {
			if abs, err := filepath.Abs(c.Store.DSN); err == nil {
				dir = filepath.Dir(abs)
			}
		}
		c.Index.Cache = filepath.Join(dir, "providers-index.ldif")
	}
}
