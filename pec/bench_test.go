package pec

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchOriginal is a message with a base64 attachment making it about size bytes.
func benchOriginal(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\nSubject: bench\r\nMessage-ID: <bench@client>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"bb\"\r\n\r\n--bb\r\nContent-Type: text/plain\r\n\r\nciao\r\n" +
		"--bb\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := strings.Repeat("QUJD", 19) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	b.WriteString("--bb--\r\n")
	return b.Bytes()
}

var benchSizes = []int{10 << 10, 1 << 20, 30 << 20}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMB", n>>20)
	}
	return fmt.Sprintf("%dKB", n>>10)
}

// BenchmarkBuildBusta parses the original and builds and signs the busta (RSA-2048, SHA-256).
func BenchmarkBuildBusta(b *testing.B) {
	f := newFix(b, time.Now())
	for _, size := range benchSizes {
		raw := benchOriginal(size)
		b.Run(sizeName(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				orig, err := ParseOriginal(raw)
				if err != nil {
					b.Fatal(err)
				}
				tx := NewTransaction(f.tx.ID, orig, []Recipient{{Addr: "bruno@pec-b.test"}})
				if _, err := (&Builder{ID: f.p, Keys: f.kr}).Busta(f.ref, tx, orig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClassify classifies and verifies (signature integrity, daticert, checks) a busta.
func BenchmarkClassify(b *testing.B) {
	f := newFix(b, time.Now())
	for _, size := range benchSizes {
		orig, err := ParseOriginal(benchOriginal(size))
		if err != nil {
			b.Fatal(err)
		}
		tx := NewTransaction(f.tx.ID, orig, []Recipient{{Addr: "bruno@pec-b.test"}})
		m, err := (&Builder{ID: f.p, Keys: f.kr}).Busta(f.ref, tx, orig)
		if err != nil {
			b.Fatal(err)
		}
		msg := m.Bytes()
		b.Run(sizeName(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for i := 0; i < b.N; i++ {
				c := Classify(msg, ClassifyOptions{})
				if c.Kind != KindBusta || !c.Conforms() {
					b.Fatalf("%s %+v", c.Kind, c.Deviations)
				}
			}
		})
	}
}
