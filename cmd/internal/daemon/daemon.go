// Package daemon is what pec-milter and pec-lmtpd share: it opens every dependency from the
// one configuration (logger, metrics registry, signing keys, store, providers index,
// antivirus, the PEC engine), runs the leased background jobs through one helper, serves the
// metrics and readiness endpoint, and turns SIGTERM into a graceful drain. Each program's
// main only wires its listener to it.
package daemon

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
)

// Daemon holds the opened dependencies of one PEC process.
type Daemon struct {
	Program string // "pec-milter", "pec-lmtpd"
	Cfg     *config.Config
	Log     *slog.Logger
	Reg     *prometheus.Registry
	Keys    *hsm.Keys
	Store   store.Store
	Index   *igpec.Index
	Scanner *clamd.Client // nil for a program opened WithoutScanner (pec-lmtpd)
	Trust   *pec.Trust    // nil unless the configuration has trust anchors (pec-milter requires them)
	Engine  *pec.Engine
	// Owner names this process in store leases: program/node. It is stable across restarts
	// of one node, so a restarted process takes back its own leases at once.
	Owner string

	ready   atomic.Bool
	closers []func() error
}

// Option adds to the engine what one program alone needs (pec-lmtpd: the mailbox lookup and
// the delivery settings), or leaves out what it does not.
type Option func(*options)

type options struct {
	engine    []func(*pec.Config, *pec.Deps)
	noScanner bool
}

// WithDelivery gives the engine the delivery point's mailbox lookup and settings.
func WithDelivery(m pec.Mailboxes, dc pec.DeliveryConfig) Option {
	return func(o *options) {
		o.engine = append(o.engine, func(c *pec.Config, d *pec.Deps) { c.Delivery, d.Mailboxes = dc, m })
	}
}

// WithoutScanner is for a program that scans nothing (pec-lmtpd: the delivery point hands on
// what the access or reception point already scanned, RFC 6109 §2.2.4): clamd is not opened,
// so the configuration needs no clamd section, and Daemon.Scanner is nil. The engine gets a
// scanner that answers every scan with a temporary failure, so a scan reached by mistake
// can never pass a message unscanned. pec-milter, which scans, opens clamd and requires it.
func WithoutScanner() Option { return func(o *options) { o.noScanner = true } }

// noScanner is the engine's scanner in a program opened WithoutScanner.
type noScanner struct{ program string }

func (n noScanner) Scan(context.Context, io.Reader) (string, error) {
	return "", fmt.Errorf("%s opens no antivirus (clamd): it does not scan", n.program)
}

// Open opens every dependency the configuration names, in order, and builds the engine. On
// error whatever was opened is closed again.
func Open(cfg *config.Config, program string, opts ...Option) (_ *Daemon, err error) {
	d := &Daemon{Program: program, Cfg: cfg, Reg: prometheus.NewRegistry()}
	d.Log = cfg.Log.NewLogger(os.Stderr).With("program", program, "node", cfg.NodeName())
	d.Owner = program + "/" + cfg.NodeName()
	d.Reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// d is not the named result: "return nil, err" must not hide what was opened from this.
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.Keys, err = hsm.New(cfg.Signer, hsm.Deps{Logger: d.Log, Registerer: d.Reg, Provider: cfg.Provider.HSM()}); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.Keys.Close)
	// Issue 12 item 10: the PIN stays in the keyring, not in the environment.
	if vars, err := d.Keys.ForgetPINEnv(); err != nil {
		d.Log.Warn("hsm: PIN removed from the environment, but not from /proc/self/environ", "variables", vars, "error", err)
	} else if len(vars) > 0 {
		d.Log.Info("hsm: PIN read and removed from the environment", "variables", vars)
	}
	if d.Index, err = igpec.New(cfg.Index, igpec.Deps{Logger: d.Log, Registerer: d.Reg}); err != nil {
		return nil, err
	}
	if len(cfg.Trust.Anchors) > 0 {
		if d.Trust, err = OpenTrust(cfg.Trust, d.Index, d.Log); err != nil {
			return nil, err
		}
	}
	if d.Store, err = OpenStore(cfg.Store, d.Log, d.Reg); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.Store.Close)
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var scanner pec.Scanner = noScanner{program}
	if !o.noScanner {
		if d.Scanner, err = clamd.New(cfg.Clamd); err != nil {
			return nil, err
		}
		d.closers = append(d.closers, d.Scanner.Close) // its idle clamd sessions
		scanner = d.Scanner
	}
	inspector, err := cfg.Inspector()
	if err != nil {
		return nil, err
	}
	pc := engineConfig(cfg, d.Keys.Digest())
	deps := pec.Deps{Inspector: inspector, Keys: hookKeys(d.Keys), Index: d.Index, Scanner: scanner, Store: d.Store, Trust: d.Trust}
	for _, f := range o.engine {
		f(&pc, &deps)
	}
	d.Engine, err = pec.New(pc, deps)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// engineConfig is the engine's part of the configuration.
func engineConfig(cfg *config.Config, digest crypto.Hash) pec.Config {
	return pec.Config{
		Identities: cfg.Identities(),
		Location:   cfg.Provider.Location,
		Node:       cfg.NodeName(),
		Limits: pec.Limits{MaxRecipients: cfg.Limits.MaxRecipients,
			MaxSizeTimesRecipients: int64(cfg.Limits.MaxSizeTimesRecipients)},
		Options:       pec.Options{Hash: digest, MaxSize: cfg.Limits.BustaMaxSize()},
		ConfirmDomain: cfg.Confirm.Domain,
		ConfirmExpiry: cfg.Confirm.Expiry,
		RetryWindow:   cfg.Confirm.RetryWindow,
		Deadlines:     store.Deadlines{First: cfg.Tracking.First, FinalFrom: cfg.Tracking.FinalFrom, Final: cfg.Tracking.Final},
		OrdinaryMail:  cfg.Policy.OrdinaryMail,
	}
}

// OpenStore opens the store the configuration's driver names: sqlite (one node) or postgres
// (several nodes sharing one database).
func OpenStore(cfg store.Config, log *slog.Logger, reg prometheus.Registerer) (store.Store, error) {
	return storeopen.Open(cfg, log, reg)
}

// SetReady marks the process ready (its listener serves): the readiness endpoint answers 200
// from then on, until SetReady(false) at shutdown.
func (d *Daemon) SetReady(v bool) { d.ready.Store(v) }

// Close closes what Open opened, last first.
func (d *Daemon) Close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	d.closers = nil
	return errors.Join(errs...)
}
