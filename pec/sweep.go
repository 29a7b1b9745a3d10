package pec

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// Sender-side tracking: the 12 h and 24 h notices (RFC 6109 §3.1.6, pec-spec.md §6.3).
//
// Every certified recipient of a busta we sent has a tracking row, inserted when Postfix
// confirmed it queued the busta (access.go), with its deadlines (Config.Deadlines). Receipts
// from the recipient's provider move the row (presa in carico, consegna, mancata consegna);
// Sweep sends what is due when they do not come in time:
//   - no presa in carico and no consegna 12 h after dispatch: the preavviso (4.4.7);
//   - no consegna from 22 h, by 24 h: the final notice (5.4.7); tracking stops.
// So a presa in carico in time but no consegna gives only the 24 h notice, a consegna between
// 12 h and 24 h only the 12 h one, neither both (store.Next holds the table).
//
// Each notice is committed in one transaction with its log event and the row's transition
// (emit): a crash leaves either all or nothing, and the row is no longer due once the notice
// is in the outbox, so no restart sends a notice twice. A receipt committed meanwhile makes
// the transition a conflict (store.ErrConflict): the notice is dropped, as it should be. The
// daemon runs Sweep under a store lease, so one node sweeps when several share a database.

// Swept counts what one Sweep did.
type Swept struct {
	Notice12, Notice24 int // notices queued
	Superseded         int // dropped: a receipt arrived while the notice was being built
	Failed             int // rows whose notice could not be built or committed (retried next sweep)
	Duration           time.Duration
}

// sweepPage is how many due rows one store query returns: memory stays flat whatever the
// number of tracked recipients.
const sweepPage = 256

// Sweep sends every notice due now. It stops at the first store failure (the next sweep
// resumes) and returns what it did; a row whose notice cannot be built is counted and skipped.
//
// Pages are pipelined: while one page is committed, the next is read and its notices are
// built and signed (the signatures are most of a sweep's CPU; the read and the commit are the
// store's), so at most two pages are in flight. The rows of the page being committed are left
// out of the next read, whether or not their commit has landed yet.
func (e *Engine) Sweep(ctx context.Context) (Swept, error) {
	start := time.Now()
	var sw Swept
	skip := map[string]bool{} // rows that failed in this sweep: not retried until the next
	var prev *noticePage      // built, being committed
	finish := func(err error) (Swept, error) {
		if prev != nil {
			if f := sw.count(ctx, prev.wait(), skip); err == nil {
				err = f
			}
		}
		sw.Duration = time.Since(start)
		return sw, err
	}
	for {
		todo, more, err := e.duePage(ctx, skip, prev)
		if err != nil {
			return finish(&Temporary{Op: "sweep", Err: err})
		}
		cur := e.notices(todo) // signed while prev is committed
		if prev != nil {
			fatal := sw.count(ctx, prev.wait(), skip)
			prev = nil
			if fatal != nil {
				return finish(fatal)
			}
		}
		if len(todo) == 0 {
			return finish(nil)
		}
		cur.commit(ctx, e.deps.Store)
		prev = cur
		if !more {
			return finish(nil)
		}
	}
}

// duePage reads the next page of due rows, without those that failed in this sweep (skip)
// and those of the page being committed (inflight). more is false when no row is left after it.
func (e *Engine) duePage(ctx context.Context, skip map[string]bool, inflight *noticePage) ([]*store.Tracking, bool, error) {
	busy := map[string]bool{}
	if inflight != nil {
		for _, r := range inflight.todo {
			busy[sweepKey(r)] = true
		}
	}
	limit := sweepPage + len(skip) + len(busy)
	rows, err := e.deps.Store.DueTracking(ctx, e.deps.Clock.Now(), limit)
	if err != nil {
		return nil, false, err
	}
	var todo []*store.Tracking
	for i := range rows {
		if k := sweepKey(&rows[i]); !skip[k] && !busy[k] {
			// When the page in flight has committed before this read, its rows are no
			// longer due and the read holds up to two pages of new ones: one at a time.
			if len(todo) == sweepPage {
				return todo, true, nil
			}
			todo = append(todo, &rows[i])
		}
	}
	return todo, len(rows) == limit, nil
}

// count adds a committed page's outcome to sw and marks its failed rows in skip; it returns
// the first failure that should stop the sweep (the store, or the sweep's context).
func (sw *Swept) count(ctx context.Context, p *noticePage, skip map[string]bool) error {
	var fatal error
	for i, r := range p.todo {
		switch err := p.errs[i]; {
		case err == nil && r.Due == store.InputNotice12h:
			sw.Notice12++
		case err == nil:
			sw.Notice24++
		case errors.Is(err, store.ErrConflict):
			sw.Superseded++
		default:
			sw.Failed++
			skip[sweepKey(r)] = true
			var tmp *store.Temporary
			if fatal == nil && (errors.As(err, &tmp) || ctx.Err() != nil) {
				fatal = err
			}
		}
	}
	return fatal
}

// noticePage is one page of notices: built, then committed in the background.
type noticePage struct {
	todo    []*store.Tracking
	batches []*store.Batch
	errs    []error
	done    chan struct{}
}

// notices builds and signs the notices of a page in parallel (the signature is most of their
// cost; the HSM has a session pool).
func (e *Engine) notices(todo []*store.Tracking) *noticePage {
	p := &noticePage{todo: todo, batches: make([]*store.Batch, len(todo)), errs: make([]error, len(todo)), done: make(chan struct{})}
	var wg sync.WaitGroup
	sem := make(chan struct{}, sweepWorkers)
	for i, r := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.batches[i], p.errs[i] = e.notice(r)
		}()
	}
	wg.Wait()
	return p
}

// commit starts committing the page's notices in one transaction: one fsync per page. When a
// receipt moved one of the rows meanwhile the page's commit conflicts and each notice is
// committed on its own, so only the superseded one is dropped. wait returns when it is done.
func (p *noticePage) commit(ctx context.Context, st Store) {
	go func() {
		defer close(p.done)
		page := &store.Batch{}
		for i := range p.todo {
			if p.errs[i] == nil {
				page.Events = append(page.Events, p.batches[i].Events...)
				page.Outbox = append(page.Outbox, p.batches[i].Outbox...)
				page.Transitions = append(page.Transitions, p.batches[i].Transitions...)
			}
		}
		err := st.Commit(ctx, page)
		for i := range p.todo {
			switch {
			case p.errs[i] != nil:
			case errors.Is(err, store.ErrConflict):
				p.errs[i] = st.Commit(ctx, p.batches[i])
			default:
				p.errs[i] = err
			}
		}
	}()
}

// wait waits for the page's commit and returns the page.
func (p *noticePage) wait() *noticePage {
	<-p.done
	return p
}

// sweepWorkers is how many notices of a page are built at once.
const sweepWorkers = 8

func sweepKey(r *store.Tracking) string {
	return r.Identificativo + "\x00" + r.Recipient + "\x00" + string(r.Due)
}

// notice builds and signs the notice due for one tracked recipient and returns its batch
// (event, outbox item, transition).
func (e *Engine) notice(r *store.Tracking) (*store.Batch, error) {
	d, err := daticert.Parse(r.Data)
	if err != nil {
		return nil, fmt.Errorf("tracking data of %s: %w", r.Identificativo, err)
	}
	tx := TransactionFrom(d)
	hours := 12
	if r.Due == store.InputNotice24h {
		hours = 24
	}
	// The sender's identity (the notice goes to our own user, from his domain's service
	// address), one time reference for the notice and its event.
	id, _ := e.IdentityFor(tx.Sender)
	ref := e.now()
	m, err := e.builder(id).Preavviso(ref, tx, r.Recipient, hours)
	if err != nil {
		return nil, err
	}
	b := &store.Batch{}
	ev := txEvent(ref, tx, id.Name)
	emit(b, m, ev, ref.Time())
	return b, nil
}
