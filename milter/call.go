package milter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/d--j/go-milter"

	"github.com/gestore-pec/gestore/pec"
)

// call runs fn, one engine call of an end-of-message, with the milter.timeout deadline,
// sending progress packets so that Postfix keeps waiting. At the deadline, or when Postfix goes
// away, it stops waiting at once: fn's context is cancelled and its late result, if any, is
// dropped. Nothing is attested by a late result: a held step whose message Postfix never queued
// is never confirmed and expires (pec/confirm.go). A panic in the engine is a temporary failure.
//
// The functions fn sends on side (nil: none) run here, between the progress packets: they
// may write to Postfix (m is not safe for concurrent use). One still in side when fn returns
// is not run.
func call[T any](s *Server, m milter.Modifier, queueID string, side <-chan func(), fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	type result struct {
		res T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("engine panic", "panic", fmt.Sprint(p), "queue_id", queueID)
				ch <- result{zero, fmt.Errorf("engine panic: %v", p)}
			}
		}()
		r, err := fn(ctx)
		ch <- result{r, err}
	}()
	t := time.NewTicker(s.cfg.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			return r.res, r.err
		case <-ctx.Done():
			// fn's context is cancelled; its late answer still tells the operator what the
			// deadline was waiting for (a store locked for longer than its busy timeout, a
			// clamd or HSM that stopped answering).
			go func() {
				if r := <-ch; r.err != nil {
					s.log.Warn("pec temporary failure: end-of-message answer after the deadline, dropped", "queue_id", queueID, "error", r.err)
				}
			}()
			return zero, &pec.Temporary{Op: "deadline", Err: fmt.Errorf("end-of-message not decided within milter.timeout (%s)", s.cfg.Timeout)}
		case f := <-side:
			f()
		case <-t.C:
			if err := m.Progress(); err != nil && !errors.Is(err, milter.ErrVersionTooLow) {
				return zero, &pec.Temporary{Op: "progress", Err: fmt.Errorf("postfix went away: %w", err)}
			}
		}
	}
}
