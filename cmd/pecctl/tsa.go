package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gestore-pec/gestore/pec/tsa"
)

func init() {
	register(command{name: "tsa", summary: "a test RFC 3161 time-stamping authority for the lab (not a qualified TSA)", run: runTSA})
}

const tsaUsage = `usage:
  pecctl tsa init  -dir DIR                        create the authority in DIR (kept if present)
  pecctl tsa serve -dir DIR [-listen 127.0.0.1:3180]  serve it over HTTP on a loopback address

The authority (tsa-ca.pem, the trust anchor to give as seal.tsa_ca; tsa-cert.pem; tsa-key.pem)
is created in DIR on first use and reused after. It is for tests and the lab: production needs a
qualified TSA (DPR 68/2005 art. 10).
`

func runTSA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tsaUsage)
		return 2
	}
	switch args[0] {
	case "init":
		return tsaInit(args[1:], stdout, stderr)
	case "serve":
		return tsaServe(args[1:], stdout, stderr)
	default:
		fmt.Fprint(stderr, tsaUsage)
		return 2
	}
}

func tsaInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tsa init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`directory` of the authority")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *dir == "" {
		fmt.Fprint(stderr, tsaUsage)
		return 2
	}
	a, created, err := loadOrCreateAuthority(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "pecctl tsa init:", err)
		return 1
	}
	verb := "kept"
	if created {
		verb = "created"
	}
	fmt.Fprintf(stdout, "%s TSA authority %q in %s\n  trust anchor (seal.tsa_ca): %s\n", verb, a.Server.Cert.Subject.CommonName, *dir, filepath.Join(*dir, "tsa-ca.pem"))
	return 0
}

func tsaServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tsa serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`directory` of the authority")
	listen := fs.String("listen", "127.0.0.1:3180", "loopback `host:port` to listen on")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *dir == "" {
		fmt.Fprint(stderr, tsaUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serveTSA(ctx, *dir, *listen, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "pecctl tsa serve:", err)
		return 1
	}
	return 0
}

// serveTSA serves the authority in dir on a loopback address until ctx ends.
func serveTSA(ctx context.Context, dir, listen string, stdout, stderr io.Writer) error {
	if err := checkLoopback(listen); err != nil {
		return err
	}
	a, _, err := loadOrCreateAuthority(dir)
	if err != nil {
		return err
	}
	a.Server.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("program", "pecctl tsa")
	url, closeSrv, err := a.Listen(listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "TSA %q serving %s (trust anchor %s)\n", a.Server.Cert.Subject.CommonName, url, filepath.Join(dir, "tsa-ca.pem"))
	<-ctx.Done()
	return closeSrv()
}

// checkLoopback refuses any address but a literal loopback IP: this TSA is a test authority
// and the project binds every server to 127.0.0.0/8 (or ::1).
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: want host:port", addr)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: only a loopback address (127.0.0.0/8 or ::1) is allowed for this test TSA", addr)
	}
	return nil
}

// loadOrCreateAuthority loads the authority saved in dir, or creates and saves one when dir
// holds none.
func loadOrCreateAuthority(dir string) (*tsa.Authority, bool, error) {
	_, err := os.Stat(filepath.Join(dir, "tsa-ca.pem"))
	if err == nil {
		a, err := tsa.LoadAuthority(dir)
		return a, false, err
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	a, err := tsa.NewAuthority("PEC lab")
	if err != nil {
		return nil, false, err
	}
	if err := a.Save(dir); err != nil {
		return nil, false, err
	}
	return a, true, nil
}
