// Command pec-milter is the milter of a PEC provider: the access point on Postfix's submission
// listener and the reception point on its MX listener (by {daemon_name}), plus the outbox
// drainer that reinjects receipts into Postfix.
//
//	pec-milter -config /etc/pec/pec.yaml
//
// SIGTERM or SIGINT: stop accepting milter connections, let open SMTP sessions end for
// milter.shutdown_grace, finish every transaction already at end-of-message, then exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/milter"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/igpec"
	"github.com/gestore-pec/gestore/pec/reinject"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
)

func main() {
	path := flag.String("config", "/etc/pec/pec.yaml", "configuration file")
	flag.Parse()
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "pec-milter:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if err := cfg.ValidateMilter(); err != nil {
		return err
	}
	log := cfg.Log.NewLogger(os.Stderr).With("program", "pec-milter")
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	keys, err := hsm.New(cfg.Signer, hsm.Deps{Logger: log, Registerer: reg, Provider: cfg.Provider.HSM()})
	if err != nil {
		return err
	}
	defer keys.Close()
	index, err := igpec.New(cfg.Index, igpec.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	st, err := sqlite.New(cfg.Store, sqlite.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer st.Close()
	scanner, err := clamd.New(cfg.Clamd)
	if err != nil {
		return err
	}
	ap, err := pec.NewAccessPoint(pec.AccessConfig{
		Provider: pec.Provider{Name: cfg.Provider.Name, Domain: cfg.Provider.ServiceDomain(),
			ServiceAddress: cfg.Provider.ServiceAddress, ReceiptAddress: cfg.Provider.ReceiptAddress},
		Location: cfg.Provider.Location,
		Limits: pec.Limits{MaxRecipients: cfg.Limits.MaxRecipients,
			MaxSizeTimesRecipients: int64(cfg.Limits.MaxSizeTimesRecipients)},
		Options: pec.Options{Hash: keys.Digest()},
	}, pec.AccessDeps{Signer: keys, Index: index, Scanner: scanner, Store: st})
	if err != nil {
		return err
	}
	drainer, err := reinject.New(cfg.Reinject, reinject.Deps{Store: st, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	srv, err := milter.New(milter.Config{MaxSize: int64(cfg.Limits.HardMaxSize), Timeout: cfg.Milter.Timeout,
		MaxBuffered: int64(cfg.Milter.MaxBuffered)},
		milter.Deps{Engine: ap, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	hk, err := newHousekeeper(cfg, st, keys, log)
	if err != nil {
		return err
	}
	ln, err := listen(cfg.Milter)
	if err != nil {
		return err
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	// Background work outlives the milter's shutdown, so that notices committed by the last
	// transactions are sent before exit when Postfix is reachable.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	go func() { _ = index.Run(bg) }()
	drained := make(chan struct{})
	go func() { defer close(drained); _ = drainer.Run(bg) }()
	go daily(bg, keys)
	hk.start(bg)
	metricsSrv := serveMetrics(cfg.Metrics.Listen, reg, log)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("pec-milter ready", "listen", cfg.Milter.Listen, "provider", cfg.Provider.Name)

	select {
	case err = <-served:
		log.Error("milter listener failed", "error", err)
	case <-sigCtx.Done():
		log.Info("shutting down", "grace", cfg.Milter.ShutdownGrace)
		grace, cancel := context.WithTimeout(context.Background(), cfg.Milter.ShutdownGrace)
		_ = srv.Shutdown(grace)
		cancel()
		<-served
	}
	stopBG()
	<-drained
	hk.wait()
	// One last pass, so that the receipts committed by the last transactions leave now
	// rather than at the next start (they are safe in the outbox either way).
	final, cancelFinal := context.WithTimeout(context.Background(), 15*time.Second)
	if n, derr := drainer.DrainOnce(final); derr != nil {
		log.Warn("final outbox pass incomplete; the rest is sent at the next start", "claimed", n, "error", derr)
	}
	cancelFinal()
	if metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = metricsSrv.Shutdown(ctx)
		cancel()
	}
	log.Info("stopped")
	return err
}

// listen opens the milter socket with the configured mode and group.
func listen(m config.Milter) (net.Listener, error) {
	network, addr, err := config.ParseListen(m.Listen)
	if err != nil {
		return nil, err
	}
	mode, err := m.FileMode()
	if err != nil {
		return nil, err
	}
	gid := -1
	if network == "unix" && m.SocketGroup != "-" {
		g, err := user.LookupGroup(m.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("config: milter.socket_group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("config: milter.socket_group: %w", err)
		}
	}
	return milter.Listen(network, addr, mode, gid)
}

// daily runs the checks a long-running daemon repeats: certificate expiry.
func daily(ctx context.Context, keys *hsm.Keys) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			keys.WarnExpiring(now)
		}
	}
}

func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) *http.Server {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "addr", addr, "error", err)
		}
	}()
	return srv
}
