//go:build integration

package igpec

import (
	"context"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/integration/lab"
)

// TestLabIndex loads the lab's slapd (both providers) and checks every lookup against the
// values lab.json describes.
func TestLabIndex(t *testing.T) {
	l := lab.ForTest(t)
	cfg := Config{
		Source:      l.LDAP.URL + "/" + l.LDAP.BaseDN,
		BindDN:      l.LDAP.BindDN,
		PasswordEnv: "PEC_TEST_INDEX_PW",
		Timeout:     10 * time.Second,
	}
	getenv := func(k string) string {
		if k == "PEC_TEST_INDEX_PW" {
			return l.LDAP.Password
		}
		return ""
	}
	x, err := New(cfg, Deps{Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	s := x.Snapshot()
	// The lab's providers, and the reception tests' revoked test signer (Provider R).
	if len(s.Rejected) != 0 || len(s.Records) < len(l.Providers) {
		t.Fatalf("records %d (want at least %d), rejected %v", len(s.Records), len(l.Providers), s.Rejected)
	}
	for _, p := range l.Providers {
		for _, d := range []string{p.Domain, strings.ToUpper(p.Domain), strings.ToUpper(p.Domain[:1]) + p.Domain[1:] + "."} {
			r, ok := x.DomainRecord(d)
			if !ok || r.Name != p.Name || r.MailReceipt != p.ReceiptAddress {
				t.Errorf("DomainRecord(%q) = %v, %v; want %s / %s", d, r, ok, p.Name, p.ReceiptAddress)
			}
		}
		pemBytes, err := os.ReadFile(p.Cert)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(pemBytes)
		if blk == nil {
			t.Fatalf("%s: no PEM", p.Cert)
		}
		if CertificateHash(blk.Bytes) != p.CertSHA1 {
			t.Errorf("%s: SHA-1 %s, lab.json says %s", p.Cert, CertificateHash(blk.Bytes), p.CertSHA1)
		}
		r, ok := x.Signer(blk.Bytes, p.Domain)
		if !ok || r.Name != p.Name || !r.Manages(p.Domain) || r.MailReceipt != p.ReceiptAddress {
			t.Errorf("Signer(%s cert) = %v, %v", p.ID, r, ok)
		}
		if rs := s.ByHash(strings.ToLower(p.CertSHA1)); len(rs) != 1 || rs[0].Name != p.Name {
			t.Errorf("ByHash(%s) = %v", p.CertSHA1, rs)
		}
		for _, other := range l.Providers {
			if other != p && r != nil && r.Manages(other.Domain) {
				t.Errorf("%s manages %s", p.Name, other.Domain)
			}
		}
	}
	// Not pec-c.test: go test runs packages in parallel, and the integration package's
	// sysadmin test adds provider C to this same slapd while it installs C (CI failed on
	// that once). No test adds pec-absent.test.
	for _, d := range []string{l.Ordinary.Domain, "pec-absent.test", "sub." + l.Providers[0].Domain, ""} {
		if x.Certified(d) {
			t.Errorf("Certified(%q) = true", d)
		}
	}

	// A wrong password fails at start, naming the server and not the password.
	bad := func(string) string { return "wrong-" + l.LDAP.Password }
	_, err = New(cfg, Deps{Getenv: bad})
	if err == nil || !strings.Contains(err.Error(), l.LDAP.URL) || strings.Contains(err.Error(), l.LDAP.Password) {
		t.Errorf("wrong password: err = %v", err)
	}
}

// slapdInstance is a private slapd in a temporary directory, run by the lab's
// slapd-instance.sh with this package's schema.
type slapdInstance struct {
	dir, port, ldif string
}

func startSlapd(t *testing.T, ldif []byte) *slapdInstance {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	s := &slapdInstance{dir: t.TempDir(), port: port}
	s.ldif = filepath.Join(s.dir, "index.ldif")
	s.start(t, ldif)
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *slapdInstance) script(t *testing.T, args ...string) {
	t.Helper()
	schema, err := filepath.Abs("pec-index.schema")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("../../integration/scripts/slapd-instance.sh", args...)
	cmd.Env = append(os.Environ(), "SLAPD_SCHEMA="+schema)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("slapd-instance.sh %v: %v\n%s", args, err, out)
	}
}

func (s *slapdInstance) start(t *testing.T, ldif []byte) {
	t.Helper()
	if err := os.WriteFile(s.ldif, ldif, 0o644); err != nil {
		t.Fatal(err)
	}
	s.script(t, "start", filepath.Join(s.dir, "slapd"), s.port, s.ldif)
}

func (s *slapdInstance) stop(t *testing.T) {
	t.Helper()
	s.script(t, "stop", filepath.Join(s.dir, "slapd"), s.port)
}

// rootLDIF has no "version: 1" line: slapadd (2.5) refuses it, unlike ldapadd.
const rootLDIF = "dn: o=postacert\nobjectClass: top\nobjectClass: organization\no: postacert\n\n"

// TestPrivateSlapd: a bad record is rejected with its reason while the others load; slapd
// stopped during a run leaves lookups answering from the last snapshot, with the failure in
// the log and the metric; the next refresh after slapd returns succeeds.
func TestPrivateSlapd(t *testing.T) {
	f := newFixture(t)
	a := f.record(t, "Provider A S.p.A.", "pec-a.test")
	b := f.record(t, "Provider B S.p.A.", "pec-b.test", "Cert.PEC-B.test")
	c := f.record(t, "Provider C S.p.A.", "pec-c.test")
	// A unit of B with its own certificate.
	bu := f.record(t, "Provider B S.p.A.", "coll.pec-b.test")
	bu.Unit, bu.DN = "collaudo", ProviderDN("Provider B S.p.A.", "collaudo")
	// Bad: its hash is the SHA-1 of another certificate.
	bad := f.record(t, "Provider Bad S.p.A.", "pec-bad.test")
	bad.Hashes = []string{CertificateHash(c.Certificates[0].Raw)}

	strip := func(b []byte) string { return strings.TrimPrefix(string(b), "version: 1\n") }
	ldif1 := rootLDIF + strip(ldifOf(t, a, b, bu, bad))
	s := startSlapd(t, []byte(ldif1))

	var logs syncBuffer
	reg := prometheus.NewRegistry()
	x, err := New(Config{Source: "ldap://127.0.0.1:" + s.port + "/o=postacert", Timeout: 5 * time.Second},
		Deps{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	snap := x.Snapshot()
	if len(snap.Records) != 3 || len(snap.Rejected) != 1 {
		t.Fatalf("records %d rejected %v", len(snap.Records), snap.Rejected)
	}
	if r := snap.Rejected[0]; !strings.EqualFold(r.DN, bad.DN) || !strings.Contains(r.Reason, "matches none of the record's certificates") {
		t.Errorf("rejected %v", r)
	}
	if !strings.Contains(logs.String(), "record rejected") || gauge(t, reg, "pec_index_rejected_records") != 1 {
		t.Error("rejection not logged or not in pec_index_rejected_records")
	}
	check := func(stage string) {
		t.Helper()
		if !x.Certified("PEC-A.test.") || !x.Certified("cert.pec-b.test") || x.Certified("pec-bad.test") {
			t.Errorf("%s: domain lookups wrong", stage)
		}
		if r, ok := x.Signer(bu.Certificates[0].Raw, "coll.pec-b.test"); !ok || r.Unit != "collaudo" {
			t.Errorf("%s: unit signer = %v", stage, r)
		}
		if r, ok := x.Signer(a.Certificates[0].Raw, ""); !ok || r.MailReceipt != "ricevute@pec-a.test" {
			t.Errorf("%s: A signer = %v", stage, r)
		}
	}
	check("first load")

	// slapd goes away.
	s.stop(t)
	rep, err := x.Refresh(context.Background())
	var temp interface{ Temporary() bool }
	if err == nil || !errors.As(err, &temp) || !temp.Temporary() {
		t.Fatalf("Refresh with slapd down: %+v, %v", rep, err)
	}
	check("slapd down")
	if n := gauge(t, reg, "pec_index_refresh_failures_total"); n != 1 {
		t.Errorf("pec_index_refresh_failures_total = %v, want 1", n)
	}
	if !strings.Contains(logs.String(), "refresh failed; keeping the last good copy") || !strings.Contains(logs.String(), "127.0.0.1:"+s.port) {
		t.Errorf("failure not logged:\n%s", logs.String())
	}

	// slapd is back, now with provider C too.
	s.start(t, []byte(rootLDIF+strip(ldifOf(t, a, b, bu, bad, c))))
	rep, err = x.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Changes.Added) != 1 || !strings.EqualFold(rep.Changes.Added[0], c.DN) || !x.Certified("pec-c.test") {
		t.Errorf("after restart: %+v", rep)
	}
	check("slapd back")
	if n := gauge(t, reg, "pec_index_refresh_failures_total"); n != 1 {
		t.Errorf("failures counted after a good refresh: %v", n)
	}

	// The same through the scheduled refresh (Run): slapd stops, the failures are counted
	// while lookups answer, and the copy catches up by itself once slapd is back.
	y, err := New(Config{Source: "ldap://127.0.0.1:" + s.port + "/o=postacert", Timeout: 2 * time.Second, Refresh: 100 * time.Millisecond},
		Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- y.Run(ctx) }()
	defer func() { cancel(); <-done }()
	x = y
	s.stop(t)
	waitFor(t, "a scheduled refresh failure", func() bool { return y.m.failuresValue() >= 2 })
	check("slapd down, scheduled")
	s.start(t, []byte(rootLDIF+strip(ldifOf(t, a, b, bu, bad, c, f.record(t, "Provider D S.p.A.", "pec-d.test")))))
	waitFor(t, "the scheduled refresh to load provider D", func() bool { return y.Certified("pec-d.test") })
	check("slapd back, scheduled")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
