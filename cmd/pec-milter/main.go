// Command pec-milter is the milter of a PEC provider: the access point on Postfix's submission
// listener and the reception point on its MX listener (by {daemon_name}), plus the outbox
// drainer that reinjects receipts into Postfix and the leased background jobs (daily seal,
// retention).
//
//	pec-milter -config /etc/pec/pec.yaml
//
// SIGTERM or SIGINT: stop accepting milter connections, let open SMTP sessions end for
// milter.shutdown_grace, finish every transaction already at end-of-message, then exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/gestore-pec/gestore/cmd/internal/config"
	"github.com/gestore-pec/gestore/cmd/internal/daemon"
	"github.com/gestore-pec/gestore/milter"
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
	d, err := daemon.Open(cfg, "pec-milter")
	if err != nil {
		return err
	}
	defer d.Close()
	srv, err := milter.New(milter.Config{MaxSize: int64(cfg.Limits.HardMaxSize), Timeout: cfg.Milter.Timeout,
		MaxBuffered: int64(cfg.Milter.MaxBuffered)},
		milter.Deps{Engine: d.Engine, Logger: d.Log, Registerer: d.Reg})
	if err != nil {
		return err
	}
	ln, err := d.Listen(cfg.Milter.Listen, cfg.Milter.SocketMode, cfg.Milter.SocketGroup)
	if err != nil {
		return fmt.Errorf("config: milter.listen: %w", err)
	}
	return d.Run(service{srv, ln}, cfg.Milter.ShutdownGrace)
}

// service binds the milter server to its listener.
type service struct {
	srv *milter.Server
	ln  net.Listener
}

func (s service) Serve() error                       { return s.srv.Serve(s.ln) }
func (s service) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
