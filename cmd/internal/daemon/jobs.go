package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
	"github.com/prometheus/client_golang/prometheus"
)

// Job is background work that one process among those sharing the store runs at a time: the
// runner takes the store lease named Name (for 2 × Every, by the store's clock) before each
// run, so when the node holding it dies another takes over within that time.
type Job struct {
	Name  string
	Every time.Duration
	Run   func(ctx context.Context) error
}

// Jobs runs leased jobs and per-process loops until ctx ends.
type Jobs struct {
	d  *Daemon
	wg sync.WaitGroup
}

// Start runs j until ctx ends, once at once and then every j.Every, each time only if this
// process holds (or takes) the lease.
func (js *Jobs) Start(ctx context.Context, j Job) {
	js.wg.Go(func() {
		log := js.d.Log.With("job", j.Name)
		t := time.NewTicker(j.Every)
		defer t.Stop()
		for {
			ok, err := js.d.Store.TryLease(ctx, j.Name, js.d.Owner, 2*j.Every)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("job lease", "error", err)
			case ok:
				if err := j.Run(ctx); err != nil && ctx.Err() == nil {
					log.Error("job failed", "error", err)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// Go runs a per-process loop (not leased: every process does it).
func (js *Jobs) Go(fn func()) { js.wg.Go(fn) }

// Wait waits for every job to return (after ctx ended).
func (js *Jobs) Wait() { js.wg.Wait() }

const (
	// sealEvery is how often the sealer looks for days that are over; a day is sealed within
	// seal.grace + sealEvery after local midnight.
	sealEvery = 10 * time.Minute
	// retentionEvery is how often the retention job tries; it purges at most once per
	// retentionDaily.
	retentionEvery = time.Hour
	retentionDaily = 24 * time.Hour
	// trackingKeep is how long terminal tracking rows are kept after dispatch. Tracking is
	// working state, not the legal record (the log is, and is kept whole): a month covers
	// every receipt that can still arrive and an operator's questions (store.PurgeTracking).
	trackingKeep = 30 * 24 * time.Hour
	// outboxKeep is how long the bytes of a sent receipt or notice are kept after Postfix
	// took it: as long as its tracking row, for an operator's questions. The item itself
	// (its Message-ID, kind, recipients, when it was sent) stays, as the legal log does
	// (store.PurgeSentOutbox).
	outboxKeep = 30 * 24 * time.Hour
	// heldEvery is how often held steps past their expiry are expired.
	heldEvery = 15 * time.Second
)

// SealJob is the daily seal of the legal log (DPR 68/2005 art. 10), signed by the main
// identity's key, or nil with a warning when the configuration has no seal section.
func (d *Daemon) SealJob() (*Job, error) {
	if d.Cfg.Seal == nil {
		d.Log.Warn("the legal log is NOT being sealed: no seal section in the configuration " +
			"(DPR 68/2005 art. 10 requires a daily timestamp on the log; configure seal.tsa_url, seal.tsa_ca and seal.dir)")
		return nil, nil
	}
	main := d.Engine.Main()
	s, err := seal.New(*d.Cfg.Seal, seal.Deps{Store: d.Store, Keyring: d.Keys, Domain: main.Domain,
		Provider: main.Name, Location: d.Cfg.Provider.Location, Logger: d.Log.With("job", "seal")})
	if err != nil {
		return nil, fmt.Errorf("config: seal: %w", err)
	}
	d.Log.Info("daily log seal enabled", "tsa", d.Cfg.Seal.TSAURL, "dir", d.Cfg.Seal.Dir, "owner", d.Owner)
	return &Job{Name: "seal", Every: sealEvery, Run: func(ctx context.Context) error {
		days, err := s.SealDue(ctx)
		if err != nil {
			return fmt.Errorf("daily log seal (sealed %v): %w", days, err)
		}
		return nil
	}}, nil
}

// HeldJob expires the held steps whose confirmation did not come in time (pec/confirm.go)
// and, once an hour, forgets the outcomes older than the retry window.
func (d *Daemon) HeldJob() Job {
	var purged time.Time
	return Job{Name: "held", Every: heldEvery, Run: func(ctx context.Context) error {
		n, err := d.Engine.ExpireHeld(ctx)
		if n > 0 {
			d.Log.Warn("held steps expired: Postfix never queued their message, nothing attested", "count", n)
		}
		if err != nil {
			return fmt.Errorf("expiring held steps: %w", err)
		}
		if time.Since(purged) > time.Hour {
			if _, err := d.Engine.PurgeHeld(ctx); err != nil {
				return fmt.Errorf("purging held steps: %w", err)
			}
			purged = time.Now()
		}
		return nil
	}}
}

// SweepJob sends the 12 h and 24 h notices that are due (pec.Engine.Sweep), under the
// "sweep" lease: one node sweeps when several share the store. After each sweep it counts the
// recipients still waiting by state (issue 15 item 4; pec-spec.md §6.3): the gauge is the
// sweeping node's, so with several nodes read it from the lease holder (or take the max).
func (d *Daemon) SweepJob() Job {
	notices := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_tracking_notices_total",
		Help: "Timeout notices queued by the sweeper, by kind (12h, 24h) and outcome (sent, superseded, failed)."}, []string{"kind", "outcome"})
	took := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pec_tracking_sweep_seconds",
		Help: "Duration of one sweep of the tracked recipients.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)})
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pec_tracking_open",
		Help: "Certified recipients of our PEC still waiting for a receipt or a notice, by tracking state (sent, taken, notified-12h), counted by the sweeping node after each sweep."}, []string{"state"})
	d.Reg.MustRegister(notices, took, open)
	return Job{Name: "sweep", Every: d.Cfg.Tracking.SweepEvery, Run: func(ctx context.Context) error {
		sw, err := d.Engine.Sweep(ctx)
		if n, cerr := d.Store.OpenTracking(ctx); cerr == nil {
			for _, s := range []store.State{store.StateSent, store.StateTaken, store.StateNotified12} {
				open.WithLabelValues(string(s)).Set(float64(n[s]))
			}
		} else if err == nil {
			err = fmt.Errorf("counting open tracking: %w", cerr)
		}
		notices.WithLabelValues("12h", "sent").Add(float64(sw.Notice12))
		notices.WithLabelValues("24h", "sent").Add(float64(sw.Notice24))
		notices.WithLabelValues("any", "superseded").Add(float64(sw.Superseded))
		notices.WithLabelValues("any", "failed").Add(float64(sw.Failed))
		took.Observe(sw.Duration.Seconds())
		if sw.Notice12+sw.Notice24+sw.Failed > 0 {
			d.Log.Info("sweep", "notices_12h", sw.Notice12, "notices_24h", sw.Notice24, "superseded", sw.Superseded,
				"failed", sw.Failed, "duration", sw.Duration)
		}
		return err
	}}
}

// RetentionJob purges, at most once a day, the quarantined messages past the 30-month
// retention (DPR 68/2005 art. 12), the tracking rows in a terminal state older than
// trackingKeep, and the bytes of the outbox items sent more than outboxKeep ago.
func (d *Daemon) RetentionJob(now func() time.Time) Job {
	var last time.Time
	return Job{Name: "retention", Every: retentionEvery, Run: func(ctx context.Context) error {
		n := now()
		if !last.IsZero() && n.Sub(last) < retentionDaily {
			return nil
		}
		q, err := d.Store.PurgeQuarantine(ctx, n)
		if err != nil {
			return fmt.Errorf("quarantine purge: %w", err)
		}
		tr, err := d.Store.PurgeTracking(ctx, n.Add(-trackingKeep))
		if err != nil {
			return fmt.Errorf("tracking purge: %w", err)
		}
		ob, err := d.Store.PurgeSentOutbox(ctx, n.Add(-outboxKeep))
		if err != nil {
			return fmt.Errorf("outbox purge: %w", err)
		}
		d.Log.Info("retention purge", "quarantine_deleted", q, "tracking_deleted", tr, "outbox_bytes_purged", ob)
		last = n
		return nil
	}}
}

// DeliveriesJob forgets, once an hour, the delivery point's records older than lmtp.keep
// (pec/delivery.go): after that a retry of the same message would be delivered anew.
func (d *Daemon) DeliveriesJob() Job {
	return Job{Name: "deliveries", Every: time.Hour, Run: func(ctx context.Context) error {
		n, err := d.Engine.PurgeDeliveries(ctx)
		if n > 0 {
			d.Log.Info("old delivery records purged", "count", n)
		}
		return err
	}}
}
