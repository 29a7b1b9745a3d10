package config

import (
	"net"
	"os"
	"strings"
	"time"
)

// LMTP is the pec-lmtpd section: the delivery point between Postfix and Dovecot
// (pec/delivery.go, lmtpd/delivery.go).
//
//	lmtp:
//	  listen: "unix:/run/pec/lmtp.sock"     # Postfix: virtual_transport = lmtp:unix:/run/pec/lmtp.sock
//	  allow_users: [postfix]                # the default (Postfix's lmtp client, by SO_PEERCRED)
//	  dovecot: "unix:/run/dovecot/lmtp"     # Dovecot's LMTP socket, 0600 for our user (dovecot-pec.conf)
//	  doveadm: {url: "http://127.0.0.1:8080/doveadm/v1", api_key_file: /etc/dovecot/doveadm.key}
//	  metrics_listen: "127.0.0.1:9101"      # /metrics and /readyz of pec-lmtpd
type LMTP struct {
	// Listen is "unix:/path" or "inet:host:port" (host:port): where Postfix's
	// virtual_transport delivers. Required.
	Listen string `yaml:"listen"`
	// SocketMode and SocketGroup of a unix socket, as for milter: default "0660" and
	// "postfix".
	SocketMode  string `yaml:"socket_mode"`
	SocketGroup string `yaml:"socket_group"`
	// Peers: who may connect (allow_users on a unix socket, default [postfix];
	// allow_inet_peers, required, on inet:). Whoever can talk to this listener can put a
	// message in any PEC mailbox and have it receipted (DESIGN.md "Trust").
	Peers `yaml:",inline"`
	// Dovecot is Dovecot's LMTP listener: "unix:/path" (postfix-conf/dovecot-pec.conf:
	// $base_dir/lmtp, mode 0600 for pec-lmtpd's user) or "host:port". Required.
	Dovecot string `yaml:"dovecot"`
	// Doveadm is Dovecot's doveadm HTTP API, which the crash recovery asks whether a mailbox
	// already holds a message. Required.
	Doveadm Doveadm `yaml:"doveadm"`
	// Timeout bounds one transaction from the end of the data to the replies. Default 5m.
	Timeout time.Duration `yaml:"timeout"`
	// Lease: how long another process's unfinished delivery of a message is left alone;
	// above Timeout. Default 10m.
	Lease time.Duration `yaml:"lease"`
	// MaxDelay: a busta Dovecot refuses temporarily this long after its time reference gets
	// the avviso di mancata consegna instead (RFC 6109 §2.2.2). Default 24h; below Postfix's
	// maximal_queue_lifetime.
	MaxDelay time.Duration `yaml:"max_delay"`
	// Keep: how long delivery records are kept to recognise retries. Default 720h.
	Keep time.Duration `yaml:"keep"`
	// MaxBuffered bounds the message bytes held in memory by all transactions together;
	// default the larger of 4 × limits.queue_max_size and 256MiB.
	MaxBuffered Size `yaml:"max_buffered"`
	// ShutdownGrace: how long SIGTERM waits for transactions under way. Default 30s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MetricsListen is pec-lmtpd's /metrics and /readyz (host:port); metrics.listen is
	// pec-milter's, and both read this file. Empty: no endpoint.
	MetricsListen string `yaml:"metrics_listen"`
}

// Doveadm is the doveadm HTTP API (Dovecot's doveadm_api_key and a doveadm inet_listener
// http). The key never comes from this file: api_key_env names an environment variable,
// api_key_file a file.
type Doveadm struct {
	URL        string `yaml:"url"`
	APIKeyEnv  string `yaml:"api_key_env"`
	APIKeyFile string `yaml:"api_key_file"`
	// RecipientDelimiter is Dovecot's recipient_delimiter (default "+"; "-" for none).
	RecipientDelimiter string `yaml:"recipient_delimiter"`
}

// APIKey reads the key from the environment variable or the file. The key is never logged
// nor put in an error.
func (d Doveadm) APIKey() (string, error) {
	if d.APIKeyEnv != "" {
		k := os.Getenv(d.APIKeyEnv)
		if k == "" {
			return "", bad("lmtp.doveadm.api_key_env", "environment variable %s is empty or unset", d.APIKeyEnv)
		}
		return k, nil
	}
	// Verbatim, final newline included: Dovecot's "doveadm_api_key = <file" keeps the file's
	// bytes as they are, so both sides read the same key from the same file.
	b, err := os.ReadFile(d.APIKeyFile)
	if err != nil {
		return "", bad("lmtp.doveadm.api_key_file", "%v", err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", bad("lmtp.doveadm.api_key_file", "%s is empty", d.APIKeyFile)
	}
	return string(b), nil
}

// Listener returns the LMTP listener (after ValidateLMTP).
func (l *LMTP) Listener() Listener {
	return Listener{Key: "lmtp", Spec: l.Listen, Mode: l.SocketMode, Group: l.SocketGroup, Peers: l.Peers}
}

// ValidateLMTP checks and completes the sections pec-lmtpd needs.
func (c *Config) ValidateLMTP() error {
	l := &c.LMTP
	if l.Listen == "" {
		return bad("lmtp.listen", "required (unix:/path or inet:host:port)")
	}
	if _, _, err := ParseListen(l.Listen); err != nil {
		return bad("lmtp.listen", "%v", err)
	}
	if l.SocketMode == "" {
		l.SocketMode = "0660"
	}
	if _, err := (&Milter{SocketMode: l.SocketMode}).FileMode(); err != nil {
		return bad("lmtp.socket_mode", "%v", err)
	}
	if l.SocketGroup == "" {
		l.SocketGroup = "postfix"
	}
	if err := l.Peers.validate("lmtp", l.Listen); err != nil {
		return err
	}
	if l.Dovecot == "" {
		return bad("lmtp.dovecot", "required (Dovecot's LMTP: host:port or unix:/path)")
	}
	if _, _, err := ParseListen(l.Dovecot); err != nil {
		return bad("lmtp.dovecot", "%v", err)
	}
	if err := l.validateDurations(); err != nil {
		return err
	}
	if l.MaxBuffered != 0 && l.MaxBuffered < c.Limits.QueueMaxSize {
		return bad("lmtp.max_buffered", "%d bytes: below limits.queue_max_size (%d)", l.MaxBuffered, c.Limits.QueueMaxSize)
	}
	if l.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(l.MetricsListen); err != nil {
			return bad("lmtp.metrics_listen", "%q: want host:port", l.MetricsListen)
		}
	}
	if err := l.Doveadm.validate(); err != nil {
		return err
	}
	return c.validateDaemonDeps()
}

func (l *LMTP) validateDurations() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&l.Timeout, 5*time.Minute)
	def(&l.Lease, 10*time.Minute)
	def(&l.MaxDelay, 24*time.Hour)
	def(&l.Keep, 30*24*time.Hour)
	def(&l.ShutdownGrace, 30*time.Second)
	switch {
	case l.Timeout < time.Second:
		return bad("lmtp.timeout", "%v: at least 1s", l.Timeout)
	case l.Lease <= l.Timeout:
		return bad("lmtp.lease", "%v: must be above lmtp.timeout (%v), or another process could take over a delivery under way", l.Lease, l.Timeout)
	case l.MaxDelay < time.Minute:
		return bad("lmtp.max_delay", "%v: at least 1m", l.MaxDelay)
	case l.Keep < 24*time.Hour:
		return bad("lmtp.keep", "%v: at least 24h (Postfix retries for days)", l.Keep)
	case l.ShutdownGrace < 0:
		return bad("lmtp.shutdown_grace", "%v: must not be negative", l.ShutdownGrace)
	}
	return nil
}

func (d *Doveadm) validate() error {
	if d.URL == "" {
		return bad("lmtp.doveadm.url", "required (Dovecot's doveadm HTTP API, e.g. http://127.0.0.1:8080/doveadm/v1): the crash recovery asks it whether a mailbox already holds a message")
	}
	if !strings.HasPrefix(d.URL, "http://") && !strings.HasPrefix(d.URL, "https://") {
		return bad("lmtp.doveadm.url", "%q: want http:// or https://", d.URL)
	}
	switch {
	case d.APIKeyEnv == "" && d.APIKeyFile == "":
		return bad("lmtp.doveadm.api_key_env", "api_key_env or api_key_file required (Dovecot's doveadm_api_key)")
	case d.APIKeyEnv != "" && d.APIKeyFile != "":
		return bad("lmtp.doveadm.api_key_env", "give api_key_env or api_key_file, not both")
	}
	return nil
}

// validateDaemonDeps checks what every daemon opens besides its listener: the reinjection
// target of the outbox drainer, the signer and the index.
func (c *Config) validateDaemonDeps() error {
	if err := c.validateReinject(); err != nil {
		return err
	}
	if c.Index.Source == "" {
		return bad("index.source", "required")
	}
	if c.Signer.Certificate == "" && len(c.Signer.Keys) == 0 {
		return bad("signer.certificate", "required")
	}
	return nil
}
