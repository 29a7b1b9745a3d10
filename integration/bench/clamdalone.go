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

// clamdAlone is figure P2': the lab's clamd alone scanning messages like the ones the access
// point just took (same size, same shape), n of them over conc connections at once as the
// SMTP sessions were, against the access point's end-of-message p50 in the same run. Each
// scan gets a message of its own, as the access point did: clamd caches the verdict of bytes
// it has scanned, and one message scanned n times made the later scans cache hits (a p50 of
// 0.24 s against 1.3-1.9 s for fresh bytes, depending on n).
func clamdAlone(ctx context.Context, addr, from, rcpt string, size, n, conc int, milter result) error {
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
	fmt.Printf("%-6s clamd alone  %d scans of %d bytes, %d at once: p50 %.1fms; P2' = access point end-of-message p50 ÷ clamd p50 = %.2f (goal ≤ 1.1)\n",
		sizeLabel(size), n, len(first), conc, ms(p50), float64(percentile(milter.lat, .5))/float64(p50))
	return nil
}
