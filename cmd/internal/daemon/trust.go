package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/igpec"
)

// OpenTrust builds the reception point's trust check from the trust section, with the
// providers index, and loads the CRLs once so that the first messages do not wait for them (a
// CRL that cannot be loaded now is retried on demand; messages depending on it are temp-failed
// until it loads: pec.ErrRevocationUnknown).
func OpenTrust(cfg config.Trust, idx *igpec.Index, log *slog.Logger) (*pec.Trust, error) {
	tc, err := cfg.TrustConfig()
	if err != nil {
		return nil, err
	}
	tr, err := pec.NewTrust(tc, pec.TrustDeps{Index: idx, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("config: trust: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CRLTimeout+time.Second)
	defer cancel()
	if err := tr.Refresh(ctx); err != nil {
		log.Warn("CRL not loaded at start; retried when a message needs it", "error", err)
	}
	log.Info("trust check ready", "anchors", len(tc.Anchors), "crls", len(tc.CRLs), "signing_window", tc.SigningWindow.String())
	return tr, nil
}
