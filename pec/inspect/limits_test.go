package inspect

import (
	"bytes"
	"compress/flate"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestZipBombDeclared(t *testing.T) {
	// 16 GiB declared: refused before anything is expanded.
	z := rawZip("zeros.bin", bombDeflate(4), 0, 0xffffffff, 4)
	cpu := cpuTime()
	r := inspectDefault(t, message(att{name: "bomba.zip", data: z}))
	only(t, r, CodeBomb, "bomba.zip")
	if d := cpuTime() - cpu; r.Expanded != 0 || d > 5*time.Second {
		t.Fatalf("expanded %d in %v of CPU", r.Expanded, d)
	}
	if want := "messaggio non consentito: bomba.zip (archivio che estratto supera 256 MB)"; r.Reason() != want {
		t.Fatalf("Reason() = %q", r.Reason())
	}
}

func TestZipBombLying(t *testing.T) {
	// A 13 KB zip whose 400 overlapping members declare 10 bytes each and expand to
	// 8 MiB each: 3.2 GiB in all, stopped at MaxExpanded on the bytes actually produced.
	z := rawZip("zeros.bin", bombDeflate(8), 0, 10, 400)
	if len(z) > 32<<10 {
		t.Fatalf("bomb is %d bytes", len(z))
	}
	msg := message(att{name: "bomba.zip", data: z})
	in := newInspector(t, DefaultPolicy(), Limits{})
	var r Report
	cpu := cpuTime()
	alloc := allocated(func() { r = in.Inspect(msg) })
	if d := cpuTime() - cpu; d > 5*time.Second {
		t.Fatalf("took %v of CPU", d)
	}
	f := only(t, r, CodeBomb, "bomba.zip > 32-zeros.bin") // 32 members of 8 MiB fill the 256 MiB
	if r.Verdict != Refuse || r.Expanded != DefaultMaxExpanded+1 {
		t.Fatalf("%v %+v expanded %d", r.Verdict, f, r.Expanded)
	}
	if alloc > 8<<20 {
		t.Fatalf("allocated %d bytes to refuse a bomb", alloc)
	}
}

func TestZipLyingSmall(t *testing.T) {
	// A member declaring 10 bytes still gets its whole head sniffed.
	var d bytes.Buffer
	fw, _ := flate.NewWriter(&d, flate.BestCompression)
	fw.Write(pe())
	fw.Close()
	r := inspectDefault(t, message(att{name: "a.zip", data: rawZip("leggimi.txt", d.Bytes(), 0, 10, 1)}))
	if f := only(t, r, CodeForbidden, "a.zip > leggimi.txt"); f.Type != TypePE {
		t.Fatalf("%+v", f)
	}
}

func TestNestedZipBomb(t *testing.T) {
	// A zip of zips (42.zip-like): 10 copies of a zip with 10 copies of a member that
	// honestly declares 64 MiB. Each zip alone fits the budget; together they do not:
	// nested archives draw on the same MaxExpanded.
	leaf := rawZip("zeros.bin", bombDeflate(64), 0, 64<<20, 1)
	var files []zfile
	for i := range 10 {
		files = append(files, zfile{name: string(rune('a'+i)) + ".zip", data: leaf})
	}
	mid := zipOf(t, files...)
	files = nil
	for i := range 10 {
		files = append(files, zfile{name: string(rune('a'+i)) + ".zip", data: mid})
	}
	top := zipOf(t, files...)
	in := newInspector(t, DefaultPolicy(), Limits{})
	msg := message(att{name: "42.zip", data: top})
	var r Report
	alloc := allocated(func() { r = in.Inspect(msg) })
	if r.Verdict != Refuse || len(r.Findings) != 1 || r.Findings[0].Code != CodeBomb {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	if r.Expanded < 3*64<<20 || r.Expanded > DefaultMaxExpanded+1 {
		t.Fatalf("expanded %d", r.Expanded)
	}
	if alloc > 16<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
}

func TestTooDeep(t *testing.T) {
	// 100 zips, each inside the next.
	z := zipOf(t, zfile{name: "fondo.txt", data: []byte("ciao")})
	for range 100 {
		z = zipOf(t, zfile{name: "dentro.zip", data: z})
	}
	in := newInspector(t, DefaultPolicy(), Limits{})
	msg := message(att{name: "matrioska.zip", data: z})
	var r Report
	alloc := allocated(func() { r = in.Inspect(msg) })
	if r.Verdict != Refuse || len(r.Findings) != 1 || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	if n := len([]rune(r.Reason())); n > 320 || !strings.Contains(r.Reason(), " … ") {
		t.Fatalf("Reason() has %d runes: %q", n, r.Reason())
	}
	if alloc > 32<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
	// 100 messages, each forwarded in the next.
	m := message()
	for range 100 {
		m = message(rfc822("inoltro.eml", m))
	}
	if r = in.Inspect(m); r.Verdict != Refuse || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	// 100 000 nested multiparts.
	var b bytes.Buffer
	for i := range 100000 {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=a%d\r\n\r\n--a%d\r\n", i, i)
	}
	if r = in.Inspect(b.Bytes()); r.Verdict != Refuse || r.Findings[0].Code != CodeTooDeep {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
}

func TestTooMany(t *testing.T) {
	in := newInspector(t, DefaultPolicy(), Limits{MaxParts: 100})
	var files []zfile
	for range 200 {
		files = append(files, zfile{name: "a.txt", data: []byte("x")})
	}
	r := in.Inspect(message(att{name: "tanti.zip", data: zipOf(t, files...)}))
	if r.Verdict != Refuse || r.Findings[0].Code != CodeTooMany {
		t.Fatalf("%v %+v", r.Verdict, r.Findings)
	}
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=a\r\n\r\n")
	for range 1000 {
		b.WriteString("--a\r\n\r\nx\r\n")
	}
	if r = in.Inspect(b.Bytes()); r.Verdict != Refuse || r.Findings[0].Code != CodeTooMany || r.Parts != 101 {
		t.Fatalf("%v %d %+v", r.Verdict, r.Parts, r.Findings)
	}
}

// TestLinearTime feeds shapes that would make a careless parser quadratic.
func TestLinearTime(t *testing.T) {
	in := newInspector(t, DefaultPolicy(), Limits{})
	var b bytes.Buffer
	for range 20000 { // repeated fields, each with continuation lines
		b.WriteString("Content-Type: text/plain;\r\n")
		for range 10 {
			b.WriteString(" x=y;\r\n")
		}
	}
	b.WriteString("\r\nbody\r\n")
	var ps bytes.Buffer // many parts, many almost-delimiters
	ps.WriteString("Content-Type: multipart/mixed; boundary=bb\r\n\r\n")
	for range 50000 {
		ps.WriteString("--bb\r\n\r\n--bbx\r\n x--bb\r\n")
	}
	var pdf bytes.Buffer // many streams and names
	pdf.WriteString("%PDF-1.7\n")
	for range 100000 {
		pdf.WriteString("1 0 obj <</A/B>>stream\nendstream endobj /X#41 ")
	}
	for _, msg := range [][]byte{b.Bytes(), ps.Bytes(), message(att{name: "a.pdf", data: pdf.Bytes()})} {
		cpu := cpuTime()
		in.Inspect(msg)
		d := cpuTime() - cpu
		t.Logf("%d bytes: %v of CPU", len(msg), d)
		if d > 3*time.Second {
			t.Fatalf("%d bytes took %v of CPU", len(msg), d)
		}
	}
}

// cpuTime is the CPU time the process has used (user + system). The bounds above are on CPU
// time, not wall time: a quadratic parser burns CPU, while a loaded machine only makes the
// wall clock longer.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
