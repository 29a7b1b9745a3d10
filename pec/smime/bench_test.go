package smime

import (
	"crypto"
	"fmt"
	"testing"
)

var benchSizes = []int{10 << 10, 1 << 20, 30 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

// BenchmarkSign signs entities of 10 KB, 1 MB and 30 MB with RSA-2048 and SHA-256.
func BenchmarkSign(b *testing.B) {
	sc := signers(b)[0]
	for _, n := range benchSizes {
		entity := testEntity(n)
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(entity)))
			for b.Loop() {
				if _, _, err := Sign(entity, sc.signer, sc.chain, SignOptions{Hash: crypto.SHA256}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignParts is Sign without building the body: what a streaming caller pays.
func BenchmarkSignParts(b *testing.B) {
	sc := signers(b)[0]
	for _, n := range benchSizes {
		entity := testEntity(n)
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(entity)))
			for b.Loop() {
				if _, _, _, err := SignParts(entity, sc.signer, sc.chain, SignOptions{Hash: crypto.SHA256}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify verifies those messages (integrity and chain).
func BenchmarkVerify(b *testing.B) {
	sc := signers(b)[0]
	for _, n := range benchSizes {
		msg := signedMessage(b, sc, crypto.SHA256, n)
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := Verify(msg, VerifyOptions{Roots: sc.ca.Pool()}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
