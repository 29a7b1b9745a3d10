package hsm_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
)

// BenchmarkSign compares the keyring's crypto.Signer (session pool, metrics, recovery checks)
// with a raw miekg/pkcs11 loop (a session per goroutine, C_SignInit + C_Sign CKM_RSA_PKCS over
// the same DigestInfo) on the same SoftHSM2 RSA-2048 key, in one process, through one
// *pkcs11.Ctx. Report: sigs/s.
//
//	go test -run '^$' -bench Sign -benchtime 2s ./hsm/
func BenchmarkSign(b *testing.B) {
	cfg := tokenConfig("pec-main", "rsa", goodCert(b, newCA(b), "pec-main", "rsa"))
	// As many sessions as the raw loop at g=8 (the default, 2×GOMAXPROCS, is 4 here): on a
	// loaded machine 8 threads in C_Sign get a larger share of the CPUs than 4 do, which would
	// measure the scheduler, not the signer.
	cfg.PoolSize = 8
	k := newKeys(b, cfg)
	signer, _, _ := k.SignerFor(testDomain)
	d := sha256.Sum256([]byte("signed attributes"))
	info := hsm.DigestInfo(crypto.SHA256, d[:])
	for _, g := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("raw/g=%d", g), func(b *testing.B) {
			signs := make([]func([]byte) error, g)
			for i := range signs {
				sign, closeFn, err := hsm.RawSession(signer)
				if err != nil {
					b.Fatal(err)
				}
				defer closeFn()
				signs[i] = sign
			}
			parallel(b, g, func(i int) error { return signs[i](info) })
		})
		b.Run(fmt.Sprintf("signer/g=%d", g), func(b *testing.B) {
			parallel(b, g, func(int) error {
				_, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
				return err
			})
		})
	}
}

// parallel runs b.N calls of f spread over g goroutines and reports signatures per second.
func parallel(b *testing.B, g int, f func(goroutine int) error) {
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range g {
		n := b.N / g
		if i < b.N%g {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if err := f(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
}

// BenchmarkSignInterleaved alternates short batches of raw and signer signatures (100 each per
// round, b.N rounds) so that load from other processes hits both alike, and reports both rates
// and their ratio (signer/raw; the goal is at least 0.9).
//
//	go test -run '^$' -bench SignInterleaved -benchtime 20x ./hsm/
func BenchmarkSignInterleaved(b *testing.B) {
	cfg := tokenConfig("pec-main", "rsa", goodCert(b, newCA(b), "pec-main", "rsa"))
	// As many sessions as the raw loop at g=8 (the default, 2×GOMAXPROCS, is 4 here): on a
	// loaded machine 8 threads in C_Sign get a larger share of the CPUs than 4 do, which would
	// measure the scheduler, not the signer.
	cfg.PoolSize = 8
	k := newKeys(b, cfg)
	signer, _, _ := k.SignerFor(testDomain)
	d := sha256.Sum256([]byte("signed attributes"))
	info := hsm.DigestInfo(crypto.SHA256, d[:])
	const batch = 100
	for _, g := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("g=%d", g), func(b *testing.B) {
			signs := make([]func([]byte) error, g)
			for i := range signs {
				sign, closeFn, err := hsm.RawSession(signer)
				if err != nil {
					b.Fatal(err)
				}
				defer closeFn()
				signs[i] = sign
			}
			var rawDur, sigDur time.Duration
			for range b.N {
				rawDur += timed(b, g, batch, func(i int) error { return signs[i](info) })
				sigDur += timed(b, g, batch, func(int) error {
					_, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
					return err
				})
			}
			raw := float64(b.N*batch) / rawDur.Seconds()
			sig := float64(b.N*batch) / sigDur.Seconds()
			b.ReportMetric(raw, "raw_sigs/s")
			b.ReportMetric(sig, "signer_sigs/s")
			b.ReportMetric(sig/raw, "ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// timed makes n calls of f over g goroutines and returns the wall time.
func timed(b *testing.B, g, n int, f func(goroutine int) error) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range g {
		c := n / g
		if i < n%g {
			c++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range c {
				if err := f(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}
