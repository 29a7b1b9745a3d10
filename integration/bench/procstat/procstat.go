// Package procstat measures the CPU time the lab's processes spend during a benchmark: it
// samples /proc every Interval and groups the processes of the lab (those whose command line
// names the lab's base directory, the Postfix masters of its instances, and every descendant
// of either) by program: postfix, dovecot, pec-milter, pec-lmtpd, clamd, slapd, other.
//
// Postfix and Dovecot run short-lived children; a child's time is counted from the last
// sample that saw it (utime+stime of /proc/<pid>/stat, never the parent's cutime, which would
// count it twice), so a process that exits between two samples loses at most one interval.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Interval is the sampling period.
const Interval = 200 * time.Millisecond

// Detail splits the postfix and dovecot groups by daemon ("postfix/smtpd", "postfix/cleanup",
// "dovecot/lmtp"...); the bench sets it from PEC_BENCH_CPU_DETAIL=1.
var Detail = os.Getenv("PEC_BENCH_CPU_DETAIL") == "1"

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times on Linux.
const clockTick = 100

// Sampler samples the lab's processes until Stop.
type Sampler struct {
	base  string
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	first map[int]proc      // CPU at the first sample that saw each pid
	last  map[int]proc      // CPU at the last sample that saw each pid
	cmds  map[string]string // command lines by pid and start time (read once per process)
}

type proc struct {
	group string
	ticks int64
	start string // starttime: tells a reused pid apart
}

// Start begins sampling the processes of the lab at base.
func Start(base string) *Sampler {
	s := &Sampler{base: base, stop: make(chan struct{}), done: make(chan struct{}), first: map[int]proc{}, last: map[int]proc{}, cmds: map[string]string{}}
	s.sample(true)
	go s.run()
	return s
}

func (s *Sampler) run() {
	defer close(s.done)
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			s.sample(false)
			return
		case <-t.C:
			s.sample(false)
		}
	}
}

// Stop ends sampling and returns CPU seconds per group spent since Start.
func (s *Sampler) Stop() map[string]float64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for pid, l := range s.last {
		f, ok := s.first[pid]
		if !ok || f.start != l.start {
			f = proc{}
		}
		if l.group != "" {
			out[l.group] += float64(l.ticks-f.ticks) / clockTick
		}
	}
	return out
}

// Groups returns the group names of m in a stable order.
func Groups(m map[string]float64) []string {
	var g []string
	for k := range m {
		g = append(g, k)
	}
	sort.Strings(g)
	return g
}

type stat struct {
	comm, cmd, start string
	ppid             int
	ticks            int64
}

func (s *Sampler) sample(initial bool) {
	all := s.readAll()
	roots := s.roots(all)
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, st := range all {
		g := group(pid, all, roots)
		if g == "" {
			continue
		}
		p := proc{group: g, ticks: st.ticks, start: st.start}
		if initial {
			s.first[pid] = p
		} else if f, ok := s.first[pid]; ok && f.start != st.start {
			delete(s.first, pid) // the pid was reused: the new process counts from zero
		}
		s.last[pid] = p
	}
}

// roots are the pids whose descendants belong to the lab: the Postfix masters named by the
// instances' pid files, and every process whose command line names the base directory.
func (s *Sampler) roots(all map[int]stat) map[int]bool {
	roots := map[int]bool{}
	files, _ := filepath.Glob(filepath.Join(s.base, "*", "postfix", "spool", "pid", "master.pid"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				roots[pid] = true
			}
		}
	}
	for pid, st := range all {
		if strings.Contains(st.cmd, s.base+"/") {
			roots[pid] = true
		}
	}
	return roots
}

// group names the program a lab process belongs to ("" when it is not the lab's): the
// program of its nearest ancestor (itself included) that is a known program.
func group(pid int, all map[int]stat, roots map[int]bool) string {
	inLab := false
	name := ""
	for p, depth := pid, 0; p > 1 && depth < 20; depth++ {
		st, ok := all[p]
		if !ok {
			break
		}
		if name == "" {
			name = program(st)
		}
		if roots[p] {
			inLab = true
			break
		}
		p = st.ppid
	}
	if !inLab {
		return ""
	}
	if name == "" {
		return "other"
	}
	if name == "postfix/master" && all[pid].comm != "master" {
		return "postfix/" + all[pid].comm // a daemon master started (its command line is short)
	}
	return name
}

func program(st stat) string {
	switch {
	case strings.HasPrefix(st.comm, "pec-milter"), strings.HasPrefix(st.comm, "pec-lmtpd"),
		st.comm == "clamd", st.comm == "slapd", st.comm == "dovecot":
		return st.comm
	case strings.Contains(st.cmd, "/usr/lib/postfix/"), st.comm == "master":
		if Detail {
			return "postfix/" + st.comm
		}
		return "postfix"
	case strings.Contains(st.cmd, "dovecot"):
		if Detail {
			return "dovecot/" + st.comm
		}
		return "dovecot"
	}
	return ""
}

// readAll reads every process's stat, and the command line of the processes it has not seen.
// Only the sampling goroutine calls it (and Start, before that goroutine starts).
func (s *Sampler) readAll() map[int]stat {
	out := map[int]stat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, ok := parseStat(string(b))
		if !ok {
			continue
		}
		key := e.Name() + "/" + st.start + "/" + st.comm // a new comm: the process exec()ed
		cmd, seen := s.cmds[key]
		if !seen {
			if c, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil {
				cmd = strings.ReplaceAll(string(c), "\x00", " ")
			}
			s.cmds[key] = cmd
		}
		st.cmd = cmd
		out[pid] = st
	}
	return out
}

// parseStat reads comm, ppid, utime+stime and starttime from /proc/<pid>/stat (proc(5)).
func parseStat(s string) (stat, bool) {
	l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if l < 0 || r < l || r+2 > len(s) {
		return stat{}, false
	}
	f := strings.Fields(s[r+2:])
	if len(f) < 20 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return stat{comm: s[l+1 : r], ppid: ppid, ticks: ut + st, start: f[19]}, true
}

// Per is the lab's CPU time per message (or PEC transaction) of one run, in milliseconds, by
// group.
type Per map[string]float64

// PerUnit divides the CPU seconds Stop returned by the units (messages, transactions) they
// were spent on; nil for none.
func PerUnit(cpu map[string]float64, units int) Per {
	if units <= 0 {
		return nil
	}
	p := Per{}
	for g, v := range cpu {
		p[g] = 1000 * v / float64(units)
	}
	return p
}

// Total is the CPU of every group.
func (p Per) Total() float64 { return p.Sum() }

// Sum adds the groups of the programs named (a program's group, or its daemons' groups with
// Detail: "postfix" covers "postfix/smtpd"); no program: every group.
func (p Per) Sum(programs ...string) float64 {
	t := 0.0
	for g, v := range p {
		prog, _, _ := strings.Cut(g, "/")
		if len(programs) == 0 || slices.Contains(programs, prog) {
			t += v
		}
	}
	return t
}

// String is "total T: group ms group ms ..." in Groups order.
func (p Per) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "total %.1f:", p.Total())
	m := map[string]float64(p)
	for _, g := range Groups(m) {
		fmt.Fprintf(&b, " %s %.1f", g, p[g])
	}
	return b.String()
}

// Ceiling states the bound the rest of the stack puts on a ratio of plain mail to PEC measured
// by CPU (and on a throughput ratio, while both runs are CPU-bound): the whole CPU of a plain
// unit ÷ what Postfix and Dovecot alone spend per PEC unit (the mail the rules make of it:
// busta, receipts, confirmations), then with clamd's scans added (the rules require them).
// It is the ratio our own processes (pec-milter, pec-lmtpd, slapd, pec-deliver) would give
// if they cost nothing: a goal above it cannot be met by making them faster on this stack.
// Where the plain side runs some of our processes too (P7 reception: the busta that skips
// the reception point is still delivered by pec-lmtpd, its receipts still pass pec-milter
// at A), they cost nothing there either, so the plain side counts without them.
func Ceiling(fig string, goal float64, plain, pec Per) string {
	if plain == nil || pec == nil {
		return ""
	}
	rest := plain.Total() - plain.Sum(Ours...)
	mail := pec.Sum("postfix", "dovecot")
	scan := mail + pec.Sum("clamd")
	return fmt.Sprintf("       %s ceiling if our processes cost nothing: %.3f (plain %.1f ms ÷ Postfix+Dovecot %.1f ms per PEC unit); "+
		"with the clamd scans %.3f (%.1f ms); ours now %.1f ms; goal %.2f",
		fig, rest/mail, rest, mail, rest/scan, scan, pec.Total()-scan, goal)
}

// Ours are the project's own programs among the groups.
var Ours = []string{"pec-milter", "pec-lmtpd", "slapd", "pec-deliver"}

// ByCPU states a ratio by CPU: a plain unit's CPU across the lab ÷ a PEC unit's.
func ByCPU(fig string, plain, pec Per) string {
	if plain == nil || pec == nil || pec.Total() == 0 {
		return ""
	}
	return fmt.Sprintf("%s by CPU = %.3f (plain %.1f ms ÷ PEC %.1f ms per message, across the lab)", fig, plain.Total()/pec.Total(), plain.Total(), pec.Total())
}
