//go:build integration

package integration

// The scenario suite's runner and its checks of each message and of the legal log.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// scenarioWait is how long the suite waits for every scenario's messages after the last send;
// scenarioSettle is the wait for what would arrive right behind (a duplicate, a stray receipt).
const (
	scenarioWait   = 2 * time.Minute
	scenarioSettle = 4 * time.Second
)

// TestScenarios runs every scenario (scenarios()), then reads, checks and judges them all; each
// scenario is a subtest, so go test -v shows which failed and why; the run ends with the table.
func TestScenarios(t *testing.T) {
	t.Parallel()
	su := newSuite(t)
	start := time.Now()
	var all, scs []*scen
	only := regexp.MustCompile(os.Getenv("PEC_SCENARIOS")) // a subset, to debug one (matches all when unset)
	for _, sc := range scenarios() {
		if !only.MatchString(sc.name) {
			continue
		}
		s := &scen{suite: su, scenario: sc, token: mailtest.Token("scen"), want: map[string]map[string]int{},
			found: map[string]map[string]int{}, seen: map[string]map[uint32]bool{}}
		all = append(all, s)
		if sc.notRun == "" {
			scs = append(scs, s)
		}
	}
	// The early ones first: their private daemons start, and their deadlines run, while the
	// others are sent.
	for _, early := range []int{2, 1, 0} {
		for _, s := range scs {
			if s.early != early {
				continue
			}
			t0 := time.Now()
			s.send(s)
			if d := time.Since(t0); d > 3*time.Second {
				t.Logf("%s: sent in %v", s.name, d.Round(100*time.Millisecond))
			}
		}
	}
	sent := time.Now()
	su.collect(scs, time.Now().Add(scenarioWait), scenarioSettle)
	collected := time.Now()
	su.checkMessages(scs)
	var rows []tableRow
	for _, s := range all {
		if s.notRun != "" {
			rows = append(rows, tableRow{scenario: s.name, mailbox: "-", kind: "-", want: "-", found: "-", notRun: s.notRun})
			continue
		}
		su.checkLog(s)
		for _, f := range s.after {
			f()
		}
		rows = append(rows, s.judge()...)
	}
	checked := time.Now()
	for _, s := range scs {
		t.Run(s.name, func(t *testing.T) {
			for _, e := range s.errs {
				t.Error(e)
			}
		})
	}
	t.Logf("scenario suite: %d scenarios, sent in %v, collected in %v, checked in %v\n%s", len(scs),
		sent.Sub(start).Round(time.Second), collected.Sub(sent).Round(time.Second), checked.Sub(collected).Round(time.Second), table(rows))
}

// checkMessages runs the three independent checks on every system message found (a few at a
// time: they are processes).
func (su *suite) checkMessages(scs []*scen) {
	dir := su.t.TempDir()
	type job struct {
		s *scen
		g *gotMsg
		n int
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				su.checkMessage(j.s, j.g, filepath.Join(dir, j.s.token+"-"+strconv.Itoa(j.n)))
			}
		}()
	}
	n := 0
	for _, s := range scs {
		for _, g := range s.got {
			n++
			jobs <- job{s, g, n}
		}
	}
	close(jobs)
	wg.Wait()
}

// checkMessage: pecctl verify --strict (signature, chain to the lab CA at signing time, CRL,
// signer and its domains in the providers index of A's configuration, conformance with no
// warning), openssl smime -verify with the lab CA, and daticert.xml against the DTD of the
// rules (pec-spec.md §5.1), as every message a provider emits must pass. Ordinary mail (a
// DSN reaching an ordinary mailbox) is not a provider's and is only counted.
func (su *suite) checkMessage(s *scen, g *gotMsg, base string) {
	if g.c.Kind == pec.KindOrdinary {
		return
	}
	eml := base + ".eml"
	if err := os.WriteFile(eml, g.raw, 0o600); err != nil {
		s.fail("%s: %v", g.box, err)
		return
	}
	verify := []string{su.pecctl, "verify", "--strict", "--ca", su.l.CA.Cert}
	if su.l.CA.CRL != "" {
		verify = append(verify, "--crl", su.l.CA.CRL)
	}
	cmds := [][]string{
		append(verify, "-config", su.a.ConfigFile, eml),
		{"openssl", "smime", "-verify", "-in", eml, "-CAfile", su.l.CA.Cert, "-purpose", "any", "-out", os.DevNull},
	}
	if g.c.DaticertRaw != nil {
		dc := base + ".daticert.xml"
		if err := os.WriteFile(dc, g.c.DaticertRaw, 0o600); err != nil {
			s.fail("%s: %v", g.box, err)
			return
		}
		cmds = append(cmds, []string{"xmllint", "--noout", "--dtdvalid", corpus.DTD(), dc})
	} else if g.c.Kind != pec.KindAnomalia { // the busta di anomalia alone has no daticert (pec-spec.md §4.2)
		s.fail("%s: %s without daticert.xml", g.box, g.label)
	}
	for _, cmd := range cmds {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			s.fail("%s: %s in %s: %s: %v\n%s", cmd[0]+" "+cmd[1], g.label, g.box, filepath.Base(eml), err, bytes.TrimSpace(out))
		}
	}
}

// checkLog asks pecctl what each provider's legal log holds about the scenario: pecctl trace
// of its transaction, or pecctl log search by its token for what is not a transaction.
func (su *suite) checkLog(s *scen) {
	for _, lw := range s.logs {
		var cmd []string
		if lw.bySubject {
			cmd = []string{su.pecctl, "log", "search", "-config", lw.cfg, "-subject", s.token, "-format", "json"}
		} else {
			if s.id == "" {
				s.fail("pecctl trace: no identificativo found in the scenario's messages")
				return
			}
			cmd = []string{su.pecctl, "trace", "-config", lw.cfg, "--json", s.id}
		}
		out, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			s.fail("%s: %v", strings.Join(cmd[1:3], " "), err)
			continue
		}
		got := eventKinds(out, lw.bySubject)
		if lw.match != "" && !bytes.Contains(out, []byte(lw.match)) {
			s.fail("%s of %s: no event with %s:\n%s", strings.Join(cmd[1:3], " "), filepath.Base(filepath.Dir(lw.cfg)), lw.match, out)
		}
		if !lw.bySubject {
			checkStates(s, lw, out)
		}
		if lw.none && len(got) != 0 {
			s.fail("%s of %s: events %v, want none", strings.Join(cmd[1:3], " "), filepath.Base(filepath.Dir(lw.cfg)), got)
		}
		for _, k := range lw.kinds {
			if got[k] == 0 {
				s.fail("%s of %s: no %s event (events: %v)", strings.Join(cmd[1:3], " "), filepath.Base(filepath.Dir(lw.cfg)), k, got)
			}
		}
	}
}

// checkStates compares the recipients' states in pecctl trace --json output with lw.states.
func checkStates(s *scen, lw logWant, out []byte) {
	var st struct {
		Recipients []struct{ Address, Type, State string }
	}
	if err := json.Unmarshal(out, &st); err != nil {
		s.fail("pecctl trace --json: %v", err)
		return
	}
	got := map[string]store.State{}
	for _, r := range st.Recipients {
		got[strings.ToLower(r.Address)] = store.State(r.State)
		if r.Type == string(store.External) && r.State == "" {
			got[strings.ToLower(r.Address)] = "esterno"
		}
	}
	for rcpt, want := range lw.states {
		if g := got[strings.ToLower(rcpt)]; g != want {
			s.fail("pecctl trace of %s at %s: %s is %q, want %q", s.id, filepath.Base(filepath.Dir(lw.cfg)), rcpt, g, want)
		}
	}
}

// eventKinds counts the events by kind in pecctl trace --json (one story) or pecctl log search
// -format json (one event per line) output.
func eventKinds(out []byte, lines bool) map[store.EventKind]int {
	got := map[store.EventKind]int{}
	if !lines {
		var st struct{ Events []*store.Event }
		if json.Unmarshal(out, &st) == nil {
			for _, e := range st.Events {
				got[e.Kind]++
			}
		}
		return got
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		for _, key := range []string{"kind", "Kind"} {
			if k, ok := e[key].(string); ok {
				got[store.EventKind(k)]++
			}
		}
	}
	return got
}
