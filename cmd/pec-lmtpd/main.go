// Command pec-lmtpd is the delivery point of a PEC provider: the LMTP server Postfix's
// virtual_transport delivers every PEC mailbox to. It hands each message to Dovecot's LMTP
// and, per recipient, turns Dovecot's answer into the ricevuta di avvenuta consegna or the
// avviso di mancata consegna (pec/delivery.go), committed before Postfix gets its reply. It
// also runs the outbox drainer that reinjects those receipts into Postfix, and its share of
// the leased background jobs.
//
//	pec-lmtpd -config /etc/gestore/pec.yaml
//
// It reads the same file as pec-milter (section lmtp; its /metrics and /readyz are on
// lmtp.metrics_listen). It scans nothing (the access and reception points did), so it opens
// no clamd and needs no clamd section. The doveadm API key comes from lmtp.doveadm.api_key_env or
// api_key_file.
//
// SIGTERM or SIGINT: stop accepting, let the transactions under way finish, commit and reply
// within lmtp.shutdown_grace, send what the outbox holds, exit.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/cmd/internal/daemon"
	"github.com/gestore-pec/gestore/lmtpd"
	"github.com/gestore-pec/gestore/pec"
)

func main() {
	path := flag.String("config", config.DefaultPath, "configuration file")
	flag.Parse()
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "pec-lmtpd:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	d, err := open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	cfg := d.Cfg
	l := &cfg.LMTP
	dv, err := lmtpd.NewDovecot(lmtpd.DovecotConfig{Addr: l.Dovecot, Hostname: cfg.NodeName(), Timeout: l.Timeout}, d.Reg)
	if err != nil {
		return fmt.Errorf("config: lmtp.dovecot: %w", err)
	}
	defer dv.Close()
	srv, err := lmtpd.NewDeliveryServer(lmtpd.DeliveryConfig{Hostname: cfg.NodeName(), MaxSize: int64(cfg.Limits.QueueMaxSize),
		MaxBuffered: int64(l.MaxBuffered), Timeout: l.Timeout},
		lmtpd.DeliveryDeps{Engine: d.Engine, Mailstore: dv, Logger: d.Log, Registerer: d.Reg})
	if err != nil {
		return err
	}
	ln, err := d.Listen(l.Listener())
	if err != nil {
		return err
	}
	return d.Run([]daemon.Service{daemon.Bind(srv.Serve, srv.Shutdown, ln)}, l.ShutdownGrace, d.DeliveriesJob())
}

// open loads and checks the file and opens the dependencies of the delivery point. It opens
// no antivirus (daemon.WithoutScanner): the delivery point scans nothing (the access and
// reception points did), so the file needs no clamd section.
func open(path string) (*daemon.Daemon, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateLMTP(); err != nil {
		return nil, err
	}
	l := &cfg.LMTP
	cfg.Metrics.Listen = l.MetricsListen // metrics.listen is pec-milter's
	key, err := l.Doveadm.APIKey()
	if err != nil {
		return nil, err
	}
	look, err := lmtpd.NewDoveadm(lmtpd.DoveadmConfig{URL: l.Doveadm.URL, APIKey: key, RecipientDelimiter: l.Doveadm.RecipientDelimiter})
	if err != nil {
		return nil, err
	}
	return daemon.Open(cfg, "pec-lmtpd", daemon.WithoutScanner(), daemon.WithDelivery(look, pec.DeliveryConfig{
		Owner: "pec-lmtpd/" + cfg.NodeName(), Lease: l.Lease, MaxDelay: l.MaxDelay, Keep: l.Keep}))
}
