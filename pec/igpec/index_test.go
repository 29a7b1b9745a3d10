package igpec

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clock is a settable time source.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func TestConfigYAML(t *testing.T) {
	var doc struct {
		Index Config `yaml:"index"`
	}
	in := `index: {source: "ldap://127.0.0.1:3890/o=postacert", bind_dn: "cn=reader,o=postacert", password_env: PEC_INDEX_PW, refresh: 1h, timeout: 10s, trust_anchor: /etc/gestore/agid.pem, cache: /var/lib/gestore/index.ldif, max_age: 36h}`
	if err := yaml.Unmarshal([]byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	want := Config{Source: "ldap://127.0.0.1:3890/o=postacert", BindDN: "cn=reader,o=postacert", PasswordEnv: "PEC_INDEX_PW",
		Refresh: time.Hour, Timeout: 10 * time.Second, TrustAnchor: "/etc/gestore/agid.pem", Cache: "/var/lib/gestore/index.ldif", MaxAge: 36 * time.Hour}
	if doc.Index != want {
		t.Errorf("got %+v\nwant %+v", doc.Index, want)
	}
}

func TestNewConfigErrors(t *testing.T) {
	env := func(string) string { return "" }
	tests := []struct {
		cfg Config
		key string
	}{
		{Config{}, "index.source"},
		{Config{Source: "http://example.com/igpec.ldif"}, "index.source"},
		{Config{Source: "ldap://127.0.0.1:1/o=postacert", BindDN: "cn=x"}, "index.password_env"},
		{Config{Source: "ldap://127.0.0.1:1/o=postacert", BindDN: "cn=x", PasswordEnv: "NOPE"}, "index.password_env"},
		{Config{Source: "ldap://user:secret@127.0.0.1:1/o=postacert"}, "index.source"},
		{Config{Source: "ldap://127.0.0.1:1/not a dn"}, "index.source"},
		{Config{Source: "x.ldif.p7m"}, "index.trust_anchor"},
		{Config{Source: "x.ldif.p7m", TrustAnchor: "/nonexistent.pem"}, "index.trust_anchor"},
		{Config{Source: "x.ldif", Refresh: -time.Second}, "index.refresh"},
		{Config{Source: "x.ldif", Refresh: 25 * time.Hour}, "index.refresh: 25h0m0s: at most 24h (RFC 6109 §4.5"},
		{Config{Source: "x.ldif", Timeout: -time.Second}, "index.timeout"},
		{Config{Source: "x.ldif", MaxAge: -time.Second}, "index.max_age"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg, Deps{Getenv: env})
		if err == nil || !strings.HasPrefix(err.Error(), tt.key) || strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%+v) err = %v, want it to name %s", tt.cfg, err, tt.key)
		}
	}
}

func TestNewFailsNamingSourceNotPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := Config{Source: "ldap://" + addr + "/o=postacert", BindDN: "cn=admin,o=postacert", PasswordEnv: "PW", Timeout: 2 * time.Second}
	_, err = New(cfg, Deps{Getenv: func(string) string { return "s3cr3t-pw" }})
	if err == nil {
		t.Fatal("New succeeded with no server")
	}
	if !strings.Contains(err.Error(), "ldap://"+addr+"/o=postacert") || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Errorf("err = %v: want the source named and no password", err)
	}

	_, err = New(Config{Source: filepath.Join(t.TempDir(), "missing.ldif")}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "missing.ldif") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestRefreshKeepsLastGoodCopy(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test")
	b := f.record(t, "B", "b.test")
	src := &fakeSource{}
	src.set(mustParse(t, ldifOf(t, a)), nil)
	var logs syncBuffer
	clk := newClock()
	reg := prometheus.NewRegistry()
	x, err := New(Config{Source: "ignored"}, Deps{Source: src, Registerer: reg, Now: clk.now,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	first := x.Snapshot()

	src.set(nil, &temporaryError{errors.New("connection refused")})
	clk.advance(2 * time.Hour)
	if _, err := x.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh succeeded with a failing source")
	}
	if x.Snapshot() != first || !x.Certified("a.test") {
		t.Error("the last good snapshot was not kept")
	}
	if n := gauge(t, reg, "pec_index_refresh_failures_total"); n != 1 || x.m.failuresValue() != 1 {
		t.Errorf("pec_index_refresh_failures_total = %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "refresh failed") || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("failure not logged:\n%s", logs.String())
	}
	if got := gauge(t, reg, "pec_index_snapshot_age_seconds"); got != 7200 {
		t.Errorf("snapshot age = %v, want 7200", got)
	}

	// A source answering only malformed records counts as a failure too.
	src.set(mustParse(t, []byte(entryLDIF("providerName=Z,o=postacert", "providerName: Z"))), nil)
	if _, err := x.Refresh(context.Background()); err == nil || x.Snapshot() != first {
		t.Errorf("an index with no valid record replaced the good one (err %v)", err)
	}

	// Stale after a day: warning logged once, gauge set.
	if gauge(t, reg, "pec_index_snapshot_stale") != 0 || strings.Contains(logs.String(), "copy is stale") {
		t.Error("stale after 2h")
	}
	clk.advance(23 * time.Hour)
	x.checkAge()
	x.checkAge()
	if n := strings.Count(logs.String(), "copy is stale"); n != 1 || !x.Stale() || gauge(t, reg, "pec_index_snapshot_stale") != 1 {
		t.Errorf("stale warnings %d, Stale %v\n%s", n, x.Stale(), logs.String())
	}

	// The source is back with one more provider.
	src.set(mustParse(t, ldifOf(t, a, b)), nil)
	rep, err := x.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !x.Certified("b.test") || len(rep.Changes.Added) != 1 || rep.Changes.DomainsAdded[0] != "b.test" || rep.Records != 2 {
		t.Errorf("report %+v", rep)
	}
	if x.Stale() || gauge(t, reg, "pec_index_snapshot_age_seconds") != 0 || gauge(t, reg, "pec_index_records") != 2 {
		t.Error("gauges not reset by a good refresh")
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestCache(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test")
	dir := t.TempDir()
	cache := filepath.Join(dir, "index-cache.ldif")
	src := &fakeSource{}
	src.set(mustParse(t, ldifOf(t, a)), nil)
	clk := newClock()
	x, err := New(Config{Source: "ignored", Cache: cache}, Deps{Source: src, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime().Equal(x.Snapshot().Loaded) {
		t.Errorf("cache mtime %v, want the load time %v", st.ModTime(), x.Snapshot().Loaded)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}

	// Restart while the source is down: the cache is used, with its age.
	src.set(nil, errors.New("down"))
	var logs syncBuffer
	clk.advance(time.Hour)
	y, err := New(Config{Source: "ignored", Cache: cache}, Deps{Source: src, Now: clk.now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !y.Certified("A.TEST") || !strings.Contains(logs.String(), "using the cached copy") || y.Snapshot().Source != "cache "+cache {
		t.Errorf("cache not used: %s", logs.String())
	}
	if age := clk.now().Sub(y.Snapshot().Loaded); age != time.Hour {
		t.Errorf("cached copy age %v, want 1h", age)
	}
	if r, _ := y.Signer(a.Certificates[0].Raw, ""); r == nil {
		t.Error("certificate lost through the cache")
	}

	// Neither source nor cache.
	os.Remove(cache)
	if _, err := New(Config{Source: "ignored", Cache: cache}, Deps{Source: src}); err == nil || !strings.Contains(err.Error(), "fake://index") {
		t.Errorf("err = %v, want a failure naming the source", err)
	}
}

// TestConcurrentLookups runs lookups while refreshes swap snapshots (run with -race).
func TestConcurrentLookups(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test")
	b := f.record(t, "B", "b.test")
	src := &fakeSource{}
	src.set(mustParse(t, ldifOf(t, a)), nil)
	x, err := New(Config{Source: "ignored"}, Deps{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if !x.Certified("a.test") {
					t.Error("a.test vanished during a refresh")
					return
				}
				x.Signer(a.Certificates[0].Raw, "a.test")
			}
		}()
	}
	for i := 0; i < 50; i++ {
		if i%2 == 0 {
			src.set(mustParse(t, ldifOf(t, a, b)), nil)
		} else {
			src.set(mustParse(t, ldifOf(t, a)), nil)
		}
		if _, err := x.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
}

func TestRunRefreshesOnSchedule(t *testing.T) {
	f := newFixture(t)
	src := &fakeSource{}
	src.set(mustParse(t, ldifOf(t, f.record(t, "A", "a.test"))), nil)
	x, err := New(Config{Source: "ignored", Refresh: 10 * time.Millisecond}, Deps{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := x.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v", err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.loads < 5 {
		t.Errorf("%d loads in 200ms at a 10ms interval", src.loads)
	}
}

func TestFileSourceWithURLs(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "A", "a.test")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.der"), a.Certificates[0].Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ldif := "version: 1\n\ndn: o=postacert\nobjectClass: organization\no: postacert\n\n" +
		entryLDIF(a.DN, "providerName: A", "providerCertificate;binary:< file:a.der",
			"providerCertificateHash: "+a.Hashes[0], "mailReceipt: ricevute@a.test", "managedDomains: a.test")
	p := filepath.Join(dir, "igpec.ldif")
	if err := os.WriteFile(p, []byte(ldif), 0o644); err != nil {
		t.Fatal(err)
	}
	x, err := New(Config{Source: p}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := x.Signer(a.Certificates[0].Raw, "a.test"); !ok || r.MailReceipt != "ricevute@a.test" {
		t.Errorf("Signer = %v %v", r, ok)
	}
}

// TestNewRetryAfterFailure: a failed New leaves no metric registered, so a retry on the same
// registry works (a daemon waiting for its index at start).
func TestNewRetryAfterFailure(t *testing.T) {
	f := newFixture(t)
	src := &fakeSource{}
	src.set(nil, errors.New("down"))
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Source: "ignored"}, Deps{Source: src, Registerer: reg}); err == nil {
		t.Fatal("New succeeded with a failing source and no cache")
	}
	src.set(mustParse(t, ldifOf(t, f.record(t, "A", "a.test"))), nil)
	if _, err := New(Config{Source: "ignored"}, Deps{Source: src, Registerer: reg}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if gauge(t, reg, "pec_index_records") != 1 {
		t.Error("metrics not registered by the successful New")
	}
}
