package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec/clamd"
)

// clamdAlone is the lab's clamd alone scanning messages like the ones the access point just
// took (same size, same shape), n of them over conc connections at once as the SMTP sessions
// were; it prints their p50 beside the access point's end-of-message p50 of the same run:
// figure P2' from 1 MB up, and at every size the floor the scan puts under P2's
// end-of-message ratio (the rules put the scan before the reply, so the access point cannot
// answer sooner than the listener without it plus clamd's own time). Each scan gets a message
// of its own, as the access point does (payload): clamd caches the verdict of bytes it has scanned, and
// one message scanned n times made the later scans cache hits (a p50 of 0.24 s against
// 1.3-1.9 s for fresh bytes, depending on n).
func clamdAlone(ctx context.Context, addr, from, rcpt string, size, n, conc int, plain, null, scan, milter result) error {
	c, err := clamd.New(clamd.Config{Addr: addr})
	if err != nil {
		return err
	}
	msgs := make(chan []byte, n)
	first := message(from, rcpt, "bench "+mailtest.Token("clamd"), payload(size))
	msgs <- first
	for range n - 1 {
		msgs <- message(from, rcpt, "bench "+mailtest.Token("clamd"), payload(size))
	}
	close(msgs)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for range jobs {
				msg := <-msgs
				start := time.Now()
				_, err := c.Scan(ctx, bytes.NewReader(msg))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				lat = append(lat, time.Since(start))
				mu.Unlock()
				time.Sleep(pace) // as the sessions paused (-pace)
			}
		})
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("clamd alone: %w", firstErr)
	}
	p50 := percentile(lat, .5)
	fmt.Printf("%-6s clamd alone  %d scans of %d bytes, %d at once: p50 %.1fms\n", sizeLabel(size), n, len(first), conc, ms(p50))
	plainEOM, pecEOM := percentile(plain.lat, .5), percentile(milter.lat, .5)
	fmt.Printf("       end-of-message floor (no milter p50 + clamd alone p50) ÷ no milter p50 = %.1f× (P2 measured %.1f×, goal ≤ 2)\n",
		float64(plainEOM+p50)/float64(plainEOM), float64(pecEOM)/float64(plainEOM))
	if null.sent > 0 {
		nullEOM := percentile(null.lat, .5)
		fmt.Printf("       with the milter protocol: (null milter p50 + clamd alone p50) ÷ no milter p50 = %.1f×\n",
			float64(nullEOM+p50)/float64(plainEOM))
	}
	if size >= 1<<20 {
		fmt.Printf("       P2' = access point end-of-message p50 ÷ clamd p50 = %.2f (goal ≤ 1.1)\n", float64(pecEOM)/float64(p50))
		if scan.sent > 0 {
			scanEOM := percentile(scan.lat, .5)
			fmt.Printf("       P2' floor = null+clamd end-of-message p50 ÷ clamd p50 = %.2f: our own work adds %.0f ms (%.1f%% of the end-of-message)\n",
				float64(scanEOM)/float64(p50), ms(pecEOM-scanEOM), 100*float64(pecEOM-scanEOM)/float64(pecEOM))
		}
	}
	return nil
}
