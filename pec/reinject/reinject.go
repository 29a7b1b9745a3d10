// Package reinject submits the store's outbox (receipts, notices, buste di anomalia) to
// Postfix's reinjection listener, an smtpd without milter (DESIGN.md "Durability").
//
// Delivery is at least once, never at most once:
//   - An item leaves the outbox only as "sent" (Postfix answered 250 to DATA) or "parked"
//     (a permanent 5xx: kept for the operator, logged at error level, counted; never
//     deleted). Anything else (4xx, timeout, refused connection, dropped connection) is
//     retried with exponential backoff.
//   - Each item is claimed with a lease in the database, so several drainers (processes,
//     nodes) never send the same item at the same time. Lease expiry is decided by the
//     store's clock. The lease owner names the node's drainer and is stable across its
//     restarts: a restarted drainer takes back its own claims at once, while a drainer of
//     another node waits for the lease to expire.
//   - One message per SMTP transaction, and the item is marked sent in its own small
//     transaction right after the 250 of DATA.
//   - A graceful stop (ctx cancelled: SIGTERM) never cuts a transaction: the message being
//     sent gets up to StopGrace for Postfix's reply and is then recorded (sent, or handed
//     back for the next start), with a context the stop does not cancel; the items claimed
//     but not started are handed back. So a restart sends nothing twice.
//   - The only window for a duplicate is a crash (SIGKILL, power cut) between Postfix's 250
//     and the mark: then that one item, the same bytes with the same deterministic
//     Message-ID, is sent again, and the delivery point drops the second copy.
package reinject

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec/store"
)

// Config is the reinject section of the YAML configuration:
//
//	reinject: {addr: "unix:/var/spool/postfix/public/pec-reinject"}
type Config struct {
	// Addr is Postfix's reinjection listener (required): "unix:/path", the socket of the
	// pec-reinject service in master.cf (postfix-conf/README.md), or host:port.
	Addr string `yaml:"addr"`
	// DirectAddr is Postfix's pec-deliver listener: the reinjection listener without the
	// pec-loop filter, for what our own reception point has nothing to do with (the kinds
	// Deps.Direct names: the accettazione and the other notices the sender's provider sends
	// its own user). Empty: everything goes to Addr, which is correct, only one Postfix pass
	// and one verification dearer for those kinds.
	DirectAddr string        `yaml:"direct_addr"`
	Helo       string        `yaml:"helo"`        // EHLO name; default "localhost"
	Timeout    time.Duration `yaml:"timeout"`     // per SMTP command and for the final reply; default 60s
	Poll       time.Duration `yaml:"poll"`        // look for other processes' items this often; default 5s
	Lease      time.Duration `yaml:"lease"`       // claim duration; default 5m, more than 3 x Timeout
	MinBackoff time.Duration `yaml:"min_backoff"` // first retry delay; default 10s
	MaxBackoff time.Duration `yaml:"max_backoff"` // retry delay cap; default 30m
	Batch      int           `yaml:"batch"`       // items claimed at once; default 16
	// StopGrace is how long, on a graceful stop, the message being sent may still take to
	// be accepted; default 10s, at most timeout.
	StopGrace time.Duration `yaml:"stop_grace"`
}

// Outbox is the part of store.Store the drainer uses.
type Outbox interface {
	ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error)
	MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error
	OutboxWait() <-chan struct{}
}

// Deps are the drainer's dependencies.
type Deps struct {
	Store      Outbox                // required
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: metrics not registered
	// Owner names this drainer in the outbox leases. It must be stable across restarts of
	// the drainer (a restart takes back its own claims at once) and used by one running
	// drainer at a time (two drainers under one name could send one item together), e.g.
	// "pec-milter/<node>". Default: "<program>/<host name>".
	Owner string
	Now   func() time.Time // default time.Now: Mark times, backoff, the lease guard
	// Direct reports the outbox kinds (store.OutboxItem.Kind) sent to Config.DirectAddr
	// (pec.OwnKind); nil: none.
	Direct func(kind string) bool
}

// Drainer sends outbox items. Run it in one goroutine per process.
type Drainer struct {
	mu     sync.Mutex // one pass at a time: a second pass would take back the first's claims
	cfg    Config
	st     Outbox
	log    *slog.Logger
	owner  string
	now    func() time.Time
	direct func(kind string) bool
	m      metrics
}

// session returns the open session with the listener of it, dialling it when needed. A
// listener that could not be reached in this pass is not dialled again. When the direct
// listener cannot be reached (say, the pec-deliver entry is missing from master.cf) the item
// goes to Addr instead: pec-deliver only saves a Postfix pass, and its absence must not hold
// back an accettazione.
func (d *Drainer) session(ctx context.Context, conns map[string]*conn, down map[string]error, it *store.OutboxItem) (*conn, string, error) {
	addr := d.addr(it)
	if addr != d.cfg.Addr && down[addr] != nil {
		addr = d.cfg.Addr
	}
	if c := conns[addr]; c != nil {
		return c, addr, nil
	}
	if err := down[addr]; err != nil {
		return nil, addr, err
	}
	c, err := d.dial(ctx, addr)
	if err == nil {
		conns[addr] = c
		return c, addr, nil
	}
	down[addr] = err
	if addr != d.cfg.Addr && ctx.Err() == nil {
		d.log.Warn("reinject.direct_addr unreachable: sending through reinject.addr (one Postfix pass more); check the pec-deliver entry of master.cf",
			slog.String("direct_addr", addr), slog.Any("err", err))
		return d.session(ctx, conns, down, it)
	}
	return nil, addr, err
}

// addr is the listener an item goes to.
func (d *Drainer) addr(it *store.OutboxItem) string {
	if d.cfg.DirectAddr != "" && d.direct != nil && d.direct(it.Kind) {
		return d.cfg.DirectAddr
	}
	return d.cfg.Addr
}

type metrics struct {
	sent, retried, parked *prometheus.CounterVec
	markFailed            prometheus.Counter
}

// New validates cfg, applies defaults and builds a Drainer.
// (Long on purpose: every option of the drainer validated with its default at start-up.)
func New(cfg Config, d Deps) (*Drainer, error) {
	if cfg.Addr == "" {
		return nil, errors.New("reinject.addr: required (the Postfix reinjection listener, unix:/path or host:port)")
	}
	if _, _, err := dialAddr(cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.DirectAddr != "" {
		if _, _, err := dialAddr(cfg.DirectAddr); err != nil {
			return nil, err
		}
	}
	def := func(v *time.Duration, x time.Duration, key string) error {
		if *v == 0 {
			*v = x
		}
		if *v < 0 {
			return fmt.Errorf("reinject.%s: negative", key)
		}
		return nil
	}
	if err := errors.Join(def(&cfg.Timeout, time.Minute, "timeout"), def(&cfg.Poll, 5*time.Second, "poll"),
		def(&cfg.MinBackoff, 10*time.Second, "min_backoff"), def(&cfg.MaxBackoff, 30*time.Minute, "max_backoff"),
		def(&cfg.Lease, 5*time.Minute, "lease")); err != nil {
		return nil, err
	}
	if err := def(&cfg.StopGrace, min(10*time.Second, cfg.Timeout), "stop_grace"); err != nil {
		return nil, err
	}
	if cfg.StopGrace > cfg.Timeout {
		return nil, fmt.Errorf("reinject.stop_grace: %v is longer than reinject.timeout (%v)", cfg.StopGrace, cfg.Timeout)
	}
	if cfg.Lease <= 3*cfg.Timeout {
		return nil, fmt.Errorf("reinject.lease: %v is not longer than 3 x reinject.timeout (%v)", cfg.Lease, cfg.Timeout)
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		return nil, errors.New("reinject.max_backoff: smaller than min_backoff")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 16
	}
	if cfg.Helo == "" {
		cfg.Helo = "localhost"
	}
	if d.Store == nil {
		return nil, errors.New("reinject: no store")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Owner == "" {
		d.Owner = defaultOwner()
	}
	dr := &Drainer{cfg: cfg, st: d.Store, log: d.Logger.With(slog.String("component", "reinject")), owner: d.Owner, now: d.Now, direct: d.Direct}
	dr.m = metrics{
		sent:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_reinject_sent_total", Help: "Generated messages accepted by Postfix."}, []string{"kind"}),
		retried:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_reinject_retries_total", Help: "Delivery attempts to Postfix that will be retried."}, []string{"kind"}),
		parked:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pec_reinject_parked_total", Help: "Generated messages refused permanently (kept, parked)."}, []string{"kind"}),
		markFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "pec_reinject_mark_failures_total", Help: "Sent messages that could not be marked sent (they will be sent again)."}),
	}
	if d.Registerer != nil {
		for _, c := range []prometheus.Collector{dr.m.sent, dr.m.retried, dr.m.parked, dr.m.markFailed} {
			if err := d.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return dr, nil
}

// defaultOwner is "<program>/<host name>": the same after a restart, different for two
// programs of one host.
func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return filepath.Base(os.Args[0]) + "/" + host
}

// Owner is the name under which this drainer leases items.
func (d *Drainer) Owner() string { return d.owner }

// Run drains the outbox until ctx ends: at once when a Commit of this process adds items,
// otherwise every Poll interval (items of other processes, retries that became due).
func (d *Drainer) Run(ctx context.Context) error {
	for {
		wake := d.st.OutboxWait() // before claiming: no wake-up is lost
		n, err := d.DrainOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d.log.Warn("outbox drain pass failed", slog.Any("err", err))
		} else if n > 0 {
			continue // there may be more
		}
		t := time.NewTimer(d.cfg.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// DrainOnce claims one batch of due items and tries each once. It returns how many it
// claimed. When ctx ends it stops as a graceful stop does (see the package documentation):
// the transaction under way finishes within StopGrace and is recorded, the items not
// started are handed back.
// (Long on purpose: claim, send and mark of one pass kept together so the lease rules are visible at once.)
func (d *Drainer) DrainOnce(ctx context.Context) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	claimed := d.now()
	items, err := d.st.ClaimOutbox(ctx, store.Claim{Owner: d.owner, Lease: d.cfg.Lease, Limit: d.cfg.Batch})
	if err != nil || len(items) == 0 {
		return 0, err
	}
	conns := map[string]*conn{} // one session per listener (Addr, DirectAddr)
	down := map[string]error{}  // listeners that could not be reached in this pass
	var dialErr error
	defer func() {
		for _, c := range conns {
			c.quit()
		}
	}()
	for i := range items {
		it := &items[i]
		// Stop (and hand the rest back) when shutting down, or when the lease could run
		// out during the next transaction: another drainer may then claim the item, and
		// two drainers must never send the same item at once.
		if ctx.Err() != nil || d.now().After(claimed.Add(d.cfg.Lease-3*d.cfg.Timeout)) {
			d.release(ctx, items[i:])
			return len(items), ctx.Err()
		}
		c, addr, err := d.session(ctx, conns, down, it)
		if ctx.Err() != nil { // stopped while connecting: nothing was attempted
			d.release(ctx, items[i:])
			return len(items), ctx.Err()
		}
		if err != nil {
			// Postfix unreachable: this item, and the rest for the same listener, are retried
			// later.
			dialErr = err
			d.retry(ctx, it, err)
			continue
		}
		res := c.send(ctx, it)
		switch {
		case res.err == nil:
			if err := d.markSent(ctx, it, res.note, claimed); err != nil {
				return len(items), err
			}
		case res.permanent:
			d.park(ctx, it, res.err)
		case ctx.Err() != nil && !replied(res.err):
			// Stopped, and Postfix did not answer within StopGrace: whether it queued the
			// message is unknown. Hand it back, so that the next start sends it at once
			// (with the same Message-ID) instead of after a backoff.
			d.log.Warn("stopping: no reply from Postfix within the stop grace; the message is sent again at the next start",
				slog.String("message_id", it.MessageID), slog.String("kind", it.Kind), slog.Any("err", res.err))
			d.release(ctx, items[i:i+1])
		default:
			d.retry(ctx, it, res.err)
		}
		if res.err != nil { // the session may be in any state: start afresh
			c.close()
			delete(conns, addr)
		}
	}
	return len(items), dialErr
}

// recording returns the context for writing an outcome to the store: not cancelled by a
// stop (a shutdown must not turn a sent message into a resend), but bounded.
func (d *Drainer) recording(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d.cfg.Timeout)
}

func (d *Drainer) release(ctx context.Context, items []store.OutboxItem) {
	ctx, cancel := d.recording(ctx)
	defer cancel()
	for i := range items {
		err := d.st.MarkOutbox(ctx, items[i].ID, d.owner, store.Mark{State: store.OutboxPending, Release: true})
		if err != nil {
			d.log.Warn("could not release outbox item; this node's next pass takes it back, others after its lease",
				slog.String("message_id", items[i].MessageID), slog.Any("err", err))
		}
	}
}

// markSent records that Postfix accepted it. A temporary store failure (a database failing
// over to its standby) is retried while the claim lasts: until then no other drainer sends
// the item, and once it is marked nobody does, so the message goes out once. A restarted
// drainer with the same owner would send it again: that is the only resend left.
func (d *Drainer) markSent(ctx context.Context, it *store.OutboxItem, note string, claimed time.Time) error {
	giveUp := time.Now().Add(claimed.Add(d.cfg.Lease).Sub(d.now()))
	for {
		rctx, cancel := d.recording(ctx)
		err := d.st.MarkOutbox(rctx, it.ID, d.owner, store.Mark{State: store.OutboxSent, At: d.now(), Error: note})
		cancel()
		if err == nil {
			d.m.sent.WithLabelValues(it.Kind).Inc()
			d.log.Info("reinjected", slog.String("message_id", it.MessageID), slog.String("kind", it.Kind),
				slog.String("identificativo", it.Identificativo), slog.Int("attempt", it.Attempts+1))
			return nil
		}
		var tmp interface{ Temporary() bool }
		if !errors.As(err, &tmp) || !tmp.Temporary() || ctx.Err() != nil || time.Now().Add(markRetry).After(giveUp) {
			d.m.markFailed.Inc()
			d.log.Error("message accepted by Postfix but not marked sent: it will be sent again",
				slog.String("message_id", it.MessageID), slog.String("kind", it.Kind), slog.Any("err", err))
			return err
		}
		d.log.Warn("message accepted by Postfix, the store cannot mark it sent yet: retrying while the claim lasts",
			slog.String("message_id", it.MessageID), slog.Any("err", err))
		time.Sleep(markRetry)
	}
}

// markRetry is the pause between two attempts to mark a sent item.
const markRetry = 500 * time.Millisecond

func (d *Drainer) park(ctx context.Context, it *store.OutboxItem, cause error) {
	d.m.parked.WithLabelValues(it.Kind).Inc()
	d.log.Error("generated message refused permanently by Postfix: parked, operator action needed",
		slog.String("message_id", it.MessageID), slog.String("kind", it.Kind),
		slog.String("identificativo", it.Identificativo), slog.String("reply", cause.Error()))
	ctx, cancel := d.recording(ctx)
	defer cancel()
	err := d.st.MarkOutbox(ctx, it.ID, d.owner, store.Mark{State: store.OutboxParked, At: d.now(), Error: cause.Error()})
	if err != nil {
		d.log.Error("could not park outbox item", slog.String("message_id", it.MessageID), slog.Any("err", err))
	}
}

func (d *Drainer) retry(ctx context.Context, it *store.OutboxItem, cause error) {
	d.m.retried.WithLabelValues(it.Kind).Inc()
	next := d.now().Add(d.backoff(it.Attempts))
	d.log.Warn("reinjection failed, will retry", slog.String("message_id", it.MessageID), slog.String("kind", it.Kind),
		slog.Int("attempt", it.Attempts+1), slog.Time("next", next), slog.String("err", cause.Error()))
	ctx, cancel := d.recording(ctx)
	defer cancel()
	err := d.st.MarkOutbox(ctx, it.ID, d.owner, store.Mark{State: store.OutboxPending, At: d.now(), NextAttempt: next, Error: cause.Error()})
	if err != nil {
		d.log.Warn("could not schedule retry; this node's next pass takes the item back, others after its lease",
			slog.String("message_id", it.MessageID), slog.Any("err", err))
	}
}

// backoff is MinBackoff * 2^attempts, capped at MaxBackoff, minus up to 20% jitter so that
// items failed together do not retry together.
func (d *Drainer) backoff(attempts int) time.Duration {
	b := float64(d.cfg.MinBackoff) * math.Pow(2, float64(min(attempts, 30)))
	b = math.Min(b, float64(d.cfg.MaxBackoff))
	return time.Duration(b * (1 - 0.2*rand.Float64()))
}
