package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
)

const (
	// sealInterval is how often the sealer looks for days that are over; a day is sealed
	// within seal.grace + sealInterval after local midnight.
	sealInterval = 10 * time.Minute
	// retentionCheck is how often the retention job tries to take its lease; it purges at
	// most once per retentionEvery. The lease lasts 2 × retentionCheck, so when the node
	// holding it dies another node takes over within that time.
	retentionCheck = time.Hour
	retentionEvery = 24 * time.Hour
	// trackingKeep is how long terminal tracking rows are kept after dispatch. Tracking is
	// working state, not the legal record (the log is, and is kept whole): a month covers
	// every receipt that can still arrive and an operator's questions (store.PurgeTracking).
	trackingKeep = 30 * 24 * time.Hour
)

// housekeeper runs the daily seal of the legal log (when configured) and the retention
// purges in the background, each under a store lease so that one node among those sharing
// the store does the work.
type housekeeper struct {
	st     store.Store
	sealer *seal.Sealer // nil: sealing off
	owner  string
	log    *slog.Logger
	wg     sync.WaitGroup
}

// newHousekeeper checks the seal configuration (TSA CA readable) before anything starts.
func newHousekeeper(cfg *config.Config, st store.Store, keys *hsm.Keys, log *slog.Logger) (*housekeeper, error) {
	h := &housekeeper{st: st, owner: leaseOwner(), log: log}
	if cfg.Seal == nil {
		log.Warn("the legal log is NOT being sealed: no seal section in the configuration " +
			"(DPR 68/2005 art. 10 requires a daily timestamp on the log; configure seal.tsa_url, seal.tsa_ca and seal.dir)")
		return h, nil
	}
	s, err := seal.New(*cfg.Seal, seal.Deps{Store: st, Keyring: keys, Domain: cfg.Provider.ServiceDomain(),
		Provider: cfg.Provider.Name, Location: cfg.Provider.Location, Logger: log.With("job", "seal")})
	if err != nil {
		return nil, fmt.Errorf("config: seal: %w", err)
	}
	log.Info("daily log seal enabled", "tsa", cfg.Seal.TSAURL, "dir", cfg.Seal.Dir, "owner", h.owner)
	h.sealer = s
	return h, nil
}

// start runs the jobs until ctx ends; wait waits for them to return.
func (h *housekeeper) start(ctx context.Context) {
	if h.sealer != nil {
		h.wg.Go(func() { h.sealer.Run(ctx, h.owner, sealInterval) })
	}
	h.wg.Go(func() { retention(ctx, h.st, h.owner, h.log.With("job", "retention"), time.Now) })
}

func (h *housekeeper) wait() { h.wg.Wait() }

// retention purges, once a day and under the store lease "retention", the quarantined
// messages past the 30-month retention (DPR 68/2005 art. 12) and the tracking rows in a
// terminal state older than trackingKeep.
func retention(ctx context.Context, st store.Store, owner string, log *slog.Logger, now func() time.Time) {
	t := time.NewTicker(retentionCheck)
	defer t.Stop()
	var last time.Time
	for {
		n := now()
		if ok, err := st.TryLease(ctx, "retention", owner, n, 2*retentionCheck); err != nil {
			if ctx.Err() == nil {
				log.Warn("retention lease", "error", err)
			}
		} else if ok && (last.IsZero() || n.Sub(last) >= retentionEvery) {
			if purgeOnce(ctx, st, n, log) {
				last = n
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// purgeOnce runs both purges and reports whether both succeeded.
func purgeOnce(ctx context.Context, st store.Store, now time.Time, log *slog.Logger) bool {
	ok := true
	q, err := st.PurgeQuarantine(ctx, now)
	if err != nil {
		log.Error("quarantine purge failed", "error", err)
		ok = false
	}
	tr, err := st.PurgeTracking(ctx, now.Add(-trackingKeep))
	if err != nil {
		log.Error("tracking purge failed", "error", err)
		ok = false
	}
	if ok {
		log.Info("retention purge", "quarantine_deleted", q, "tracking_deleted", tr)
	}
	return ok
}

// leaseOwner names this process for the store leases: host, pid and a random suffix, so
// that two processes never share a lease by accident.
func leaseOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("pec-milter/%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
