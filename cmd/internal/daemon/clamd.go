package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/clamd"
)

// CheckClamd makes sure clamd's StreamMaxLength covers limits.hard_max_size, the largest
// message pec-milter accepts (issue 12 item 9). Past StreamMaxLength clamd answers "INSTREAM
// size limit exceeded" and gives no verdict, so such a message could only be answered with a
// temporary failure, at every retry, until Postfix gives up days later: the process refuses
// to start instead, naming the clamd.conf setting. It waits up to clamd.startup_wait for
// clamd to answer (clamd loads its signatures for a while after it starts).
func (d *Daemon) CheckClamd(ctx context.Context) error {
	if d.Scanner == nil {
		return errors.New("daemon: no antivirus opened (WithoutScanner) to check")
	}
	size := int64(d.Cfg.Limits.HardMaxSize)
	deadline := time.Now().Add(d.Scanner.StartupWait())
	for {
		err := d.Scanner.CheckStreamLimit(ctx, size)
		var sl *clamd.StreamLimitError
		switch {
		case err == nil:
			d.Log.Info("clamd: StreamMaxLength covers limits.hard_max_size", "clamd", d.Cfg.Clamd.Addr, "hard_max_size", size)
			return nil
		case errors.As(err, &sl):
			return fmt.Errorf("clamd at %s refuses a stream of %d bytes (limits.hard_max_size): StreamMaxLength in clamd.conf is lower, "+
				"so every larger message would get a temporary failure for ever; set \"StreamMaxLength %dM\" (or more) in clamd.conf "+
				"and restart clamd, or lower limits.hard_max_size (postfix-conf/README.md, \"Antivirus\")",
				d.Cfg.Clamd.Addr, size, (size+(1<<20)-1)>>20)
		case !errors.Is(err, clamd.ErrUnavailable):
			return fmt.Errorf("clamd at %s: checking StreamMaxLength: %w", d.Cfg.Clamd.Addr, err)
		case !time.Now().Before(deadline):
			return fmt.Errorf("clamd at %s did not answer within clamd.startup_wait (%v), so its StreamMaxLength could not be checked: %w",
				d.Cfg.Clamd.Addr, d.Scanner.StartupWait(), err)
		}
		d.Log.Warn("clamd: not answering yet, waiting to check its StreamMaxLength", "clamd", d.Cfg.Clamd.Addr, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
