// Command pec-demo is the last step of `make demo` (integration/scripts/demo.sh): it runs the
// demo of package demo against the lab that lab-up.sh started in PEC wiring, saving the messages
// under $PEC_LAB/demo, and exits 1 when a message is missing or a check fails.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gestore-pec/gestore/integration/demo"
	"github.com/gestore-pec/gestore/integration/lab"
)

func main() {
	start := time.Now()
	l, err := lab.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pec-demo:", err)
		os.Exit(1)
	}
	dir := filepath.Join(l.Base, "demo")
	// Only this run's messages are left there.
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "pec-demo:", err)
		os.Exit(1)
	}
	pecctl := filepath.Join(filepath.Dir(os.Args[0]), "pecctl")
	if _, err := os.Stat(pecctl); err != nil {
		pecctl = filepath.Join("bin", "pecctl")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err = demo.Run(ctx, demo.Options{Lab: l, Out: os.Stdout, Dir: dir, Pecctl: pecctl})
	fmt.Printf("\nThe demo's messages took %.1f s.\n", time.Since(start).Seconds())
	if err != nil {
		fmt.Fprintln(os.Stderr, "pec-demo: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("All checks passed.")
}
