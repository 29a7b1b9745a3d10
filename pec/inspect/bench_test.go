package inspect

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchMessage builds a message of about size bytes: text plus base64 attachments
// (random bytes, as photos and PDFs look), or, with archives, a zip of text and random
// members and a docx.
func benchMessage(b *testing.B, size int, archives bool) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	random := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		return p
	}
	text := func(n int) []byte {
		words := strings.Fields("il la di che per una con non sono relazione fattura documento comune della allegato")
		var s strings.Builder
		for s.Len() < n {
			s.WriteString(words[rng.IntN(len(words))])
			s.WriteByte(' ')
		}
		return []byte(s.String()[:n])
	}
	payload := size * 3 / 4 // base64 grows by 4/3
	if !archives {
		n := max(1, payload/(256<<10))
		var atts []att
		for i := range n {
			atts = append(atts, att{name: fmt.Sprintf("foto%d.jpg", i), data: random(payload / n)})
		}
		return message(atts...)
	}
	var files []zfile
	for i := 0; i < 8; i++ {
		n := payload / 16
		files = append(files, zfile{name: fmt.Sprintf("scansioni/%d.pdf", i), data: random(n)}, zfile{name: fmt.Sprintf("testi/%d.txt", i), data: text(n * 3)})
	}
	return message(att{name: "documenti.zip", data: zipOf(b, files...)}, att{name: "relazione.docx", data: docx(b, false)})
}

func BenchmarkInspect(b *testing.B) {
	in, err := New(DefaultPolicy(), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{10 << 10, 1 << 20, 30 << 20} {
		for _, archives := range []bool{false, true} {
			name := fmt.Sprintf("%dKB/plain", size>>10)
			if archives {
				name = fmt.Sprintf("%dKB/archives", size>>10)
			}
			b.Run(name, func(b *testing.B) {
				msg := benchMessage(b, size, archives)
				if r := in.Inspect(msg); r.Verdict != Clean {
					b.Fatalf("%v %+v", r.Verdict, r.Findings)
				}
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					in.Inspect(msg)
				}
			})
		}
	}
}
