// Command pec-milter is the milter of a PEC provider: the access point on Postfix's submission
// listener and the reception point on its MX listener (by {daemon_name}), plus the outbox
// drainer that reinjects receipts into Postfix and the leased background jobs (daily seal,
// retention).
//
//	pec-milter -config /etc/gestore/pec.yaml
//
// It also serves the confirmation listener (confirm.listen), to which Postfix delivers the
// confirmation recipient of each busta it queued: only then is the accettazione released.
//
// SIGTERM or SIGINT: stop accepting milter connections, let open SMTP sessions end for
// milter.shutdown_grace, finish every transaction already at end-of-message, then exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/cmd/internal/daemon"
	"github.com/gestore-pec/gestore/lmtpd"
	"github.com/gestore-pec/gestore/milter"
)

func main() {
	path := flag.String("config", config.DefaultPath, "configuration file")
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
	d, err := daemon.Open(cfg, "pec-milter")
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.CheckClamd(context.Background()); err != nil {
		return err
	}
	srv, err := milter.New(milter.Config{MaxSize: int64(cfg.Limits.HardMaxSize), Timeout: cfg.Milter.Timeout,
		MaxBuffered: int64(cfg.Milter.MaxBuffered), StreamScanFrom: int64(cfg.Milter.StreamScanFrom)},
		milter.Deps{Engine: d.Engine, Logger: d.Log, Registerer: d.Reg})
	if err != nil {
		return err
	}
	confirm, err := lmtpd.NewConfirmServer(d.Engine, cfg.NodeName(), d.Log, d.Reg)
	if err != nil {
		return err
	}
	ln, err := d.Listen(cfg.Milter.Listener())
	if err != nil {
		return err
	}
	cln, err := d.Listen(cfg.Confirm.Listener())
	if err != nil {
		ln.Close()
		return err
	}
	return d.Run([]daemon.Service{
		daemon.Bind(srv.Serve, srv.Shutdown, ln),
		daemon.Bind(confirm.Serve, confirm.Shutdown, cln),
	}, cfg.Milter.ShutdownGrace)
}
