package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/reinject"
)

// Service is a program's listener: Serve blocks until Shutdown; Shutdown stops accepting,
// lets the work under way finish within ctx and returns.
type Service interface {
	Serve() error
	Shutdown(ctx context.Context) error
}

// Bind makes a Service of a server's Serve(listener) and Shutdown methods.
func Bind(serve func(net.Listener) error, shutdown func(context.Context) error, ln net.Listener) Service {
	return bound{serve, shutdown, ln}
}

type bound struct {
	serve    func(net.Listener) error
	shutdown func(context.Context) error
	ln       net.Listener
}

func (b bound) Serve() error                       { return b.serve(b.ln) }
func (b bound) Shutdown(ctx context.Context) error { return b.shutdown(ctx) }

// Run runs the background work and the services until SIGTERM or SIGINT, or until a service
// fails, then drains in order: every service's Shutdown within grace (work under way
// finishes and is recorded), the background jobs, one last outbox pass so that receipts
// committed by the last transactions leave now rather than at the next start, and the
// metrics endpoint. jobs are the leased jobs of this program besides the ones every program
// runs (seal, retention, expiry of held steps).
func (d *Daemon) Run(svcs []Service, grace time.Duration, jobs ...Job) error {
	bg, err := d.startBackground(jobs)
	if err != nil {
		return err
	}
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	served := make(chan error, len(svcs))
	for _, svc := range svcs {
		go func() { served <- svc.Serve() }()
	}
	d.SetReady(true)
	d.Log.Info(d.Program+" ready", "provider", d.Cfg.Provider.Name, "owner", d.Owner)
	pending := len(svcs)
	select {
	case err = <-served:
		pending--
		d.Log.Error("listener failed", "error", err)
	case <-sigCtx.Done():
		d.Log.Info("shutting down", "grace", grace)
	}
	d.SetReady(false)
	d.shutdown(svcs, grace)
	for ; pending > 0; pending-- {
		<-served
	}
	bg.stop()
	d.Log.Info("stopped")
	return err
}

// background is the work that runs beside the services: index refresh, outbox drainer,
// daily checks, leased jobs and the metrics endpoint.
type background struct {
	d       *Daemon
	cancel  context.CancelFunc
	drainer *reinject.Drainer
	drained chan struct{}
	jobs    *Jobs
	metrics *http.Server
}

// startBackground starts the background work. It outlives the services' shutdown, so that
// receipts committed by the last transactions are sent before exit when Postfix is reachable.
func (d *Daemon) startBackground(jobs []Job) (*background, error) {
	drainer, err := reinject.New(d.Cfg.Reinject, reinject.Deps{Store: d.Store, Logger: d.Log, Registerer: d.Reg, Owner: d.Owner, Direct: pec.OwnKind})
	if err != nil {
		return nil, err
	}
	sealJob, err := d.SealJob()
	if err != nil {
		return nil, err
	}
	if sealJob != nil {
		jobs = append(jobs, *sealJob)
	}
	jobs = append(jobs, d.RetentionJob(time.Now), d.HeldJob(), d.SweepJob())
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{d: d, cancel: cancel, drainer: drainer, drained: make(chan struct{}), jobs: &Jobs{d: d}}
	b.jobs.Go(func() { _ = d.Index.Run(ctx) })
	go func() { defer close(b.drained); _ = drainer.Run(ctx) }()
	b.jobs.Go(func() { d.daily(ctx) })
	for _, j := range jobs {
		b.jobs.Start(ctx, j)
	}
	b.metrics = d.serveMetrics()
	return b, nil
}

// stop ends the background work, then makes one last outbox pass so that the receipts of the
// last transactions leave now rather than at the next start.
func (b *background) stop() {
	b.cancel()
	<-b.drained
	b.jobs.Wait()
	final, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if n, err := b.drainer.DrainOnce(final); err != nil {
		b.d.Log.Warn("final outbox pass incomplete; the rest is sent at the next start", "claimed", n, "error", err)
	}
	cancel()
	if b.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.metrics.Shutdown(ctx)
		cancel()
	}
}

// shutdown stops the services within grace. The first service (the milter) stops first: its
// last transactions finish. The others (the confirmation listener) stay open until Postfix has
// delivered the confirmations of those transactions, so a stop does not delay their receipts
// until the next start.
func (d *Daemon) shutdown(svcs []Service, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = svcs[0].Shutdown(ctx)
	d.waitConfirmations(ctx)
	var wg sync.WaitGroup
	for _, svc := range svcs[1:] {
		wg.Go(func() { _ = svc.Shutdown(ctx) })
	}
	wg.Wait()
}

// waitConfirmations waits, up to 30 s or ctx, until every confirmation this process handed to
// Postfix has come back.
func (d *Daemon) waitConfirmations(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	for n := d.Engine.Unconfirmed(); n > 0; n = d.Engine.Unconfirmed() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.Log.Warn("stopping with confirmations not yet delivered by Postfix; their receipts are released at the next start", "pending", n)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// daily runs the checks a long-running daemon repeats: certificate expiry.
func (d *Daemon) daily(ctx context.Context) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.Keys.WarnExpiring(now)
		}
	}
}

// serveMetrics serves /metrics and /readyz (200 once the listener serves and every
// dependency is open, 503 before and during shutdown) on metrics.listen.
func (d *Daemon) serveMetrics() *http.Server {
	addr := d.Cfg.Metrics.Listen
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.Reg, promhttp.HandlerOpts{Registry: d.Reg}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if d.Cfg.Metrics.Pprof {
		servePprof(mux)
		d.Log.Warn("profiler on: /debug/pprof/ served on the metrics listener (metrics.pprof)", "addr", addr)
	}
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.Log.Error("metrics listener failed", "addr", addr, "error", err)
		}
	}()
	return srv
}
