package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
)

func TestLoadLabFile(t *testing.T) {
	c, err := Load("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateMilter(); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateLMTP(); err != nil {
		t.Fatal(err)
	}
	if c.Limits.MaxSizeTimesRecipients != 30_000_000 || c.Limits.HardMaxSize != 100_000_000 || c.Limits.MaxRecipients != 500 {
		t.Errorf("limits = %+v", c.Limits)
	}
	if c.Clamd.Timeout != 30*time.Second || c.Index.Refresh != time.Hour {
		t.Errorf("durations: clamd %v index %v", c.Clamd.Timeout, c.Index.Refresh)
	}
	if c.Provider.Location == nil || c.Provider.Location.String() != "Europe/Rome" {
		t.Errorf("location = %v", c.Provider.Location)
	}
	if c.Signer.PKCS11.PINEnv != "PEC_PIN_A" || c.Signer.Digest != "sha256" || c.Store.DSN != "/tmp/pec-lab/a/pec.db" {
		t.Errorf("signer/store = %+v %+v", c.Signer, c.Store)
	}
	if c.Trust.CRLRefresh != 10*time.Minute || c.Trust.CRLMaxAge != 24*time.Hour || c.Trust.SigningWindow != 120*time.Hour || len(c.Trust.Anchors) != 1 {
		t.Errorf("trust = %+v", c.Trust)
	}
	if c.Milter.SocketMode != "0660" || c.Milter.SocketGroup != "postfix" || c.Milter.Timeout != 120*time.Second {
		t.Errorf("milter defaults = %+v", c.Milter)
	}
	// Issue 12 item 2: by default only Postfix's user may use the milter and confirmation
	// sockets; root is not admitted unless listed.
	for _, p := range []Peers{c.Milter.Peers, c.Confirm.Peers} {
		if len(p.AllowUsers) != 1 || p.AllowUsers[0] != DefaultPeerUser || DefaultPeerUser != "postfix" || len(p.Nets) != 0 {
			t.Errorf("default peers = %+v, want only user postfix", p)
		}
	}
	n, a, err := ParseListen(c.Milter.Listen)
	if err != nil || n != "unix" || a != "/tmp/pec-lab/a/run/milter.sock" {
		t.Errorf("ParseListen = %q %q %v", n, a, err)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		old, new string
		want     string
		milter   bool
	}{
		{"max_size_times_recipients: 30MB", "max_size_times_recipients: 30 parsecs", "config: limits.max_size_times_recipients: \"30 parsecs\" is not a size", false},
		{"max_size_times_recipients: 30MB", "max_size_times_recipients: -5", "config: limits.max_size_times_recipients:", false},
		{"max_recipients: 500", "max_recipients: many", "config: limits.max_recipients: cannot unmarshal", false},
		{"max_recipients: 500", "max_recipients: -1", "config: limits.max_recipients:", false},
		{"hard_max_size: 100MB", "hard_max_size: 10", "config: limits.hard_max_size:", false},
		{"ordinary_mail: anomaly", "ordinary_mail: maybe", "config: policy.ordinary_mail:", false},
		{"timezone: Europe/Rome", "timezone: Mars/Olympus", "config: provider.timezone:", false},
		{"domains: [pec-a.test]", "domains: []", "config: provider.domains:", false},
		{"domains: [pec-a.test]", "domains: [pec_a]", "config: provider.domains[0]:", false},
		{"service_address: posta-certificata@pec-a.test", "service_address: posta-certificata@elsewhere.test", "config: provider.service_address:", false},
		{"receipt_address: ricevute@pec-a.test", "receipt_address: \"Ricevute <ricevute@pec-a.test>\"", "config: provider.receipt_address:", false},
		{"level: info", "level: chatty", "config: log.level:", false},
		{"format: json", "format: xml", "config: log.format:", false},
		{"listen: \"127.0.0.10:9100\"", "listen: \"9100\"", "config: metrics.listen:", false},
		{"dsn: /tmp/pec-lab/a/pec.db", "dsn: \"\"", "config: store.dsn:", false},
		{"driver: sqlite", "driver: mysql", "config: store.driver: \"mysql\": want sqlite or postgres", false},
		{"driver: sqlite", "driver: \"\"", "config: store.driver: required", false},
		{"production: false", "prodution: false", "config: provider.prodution: field prodution not found", false},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"unix:relative.sock\"", "config: milter.listen:", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"unix:/tmp/pec-lab/a/run/milter.sock\", socket_mode: \"999\"", "config: milter.socket_mode:", true},
		{"timeout: 30s", "timeout: -3s", "config: clamd.timeout:", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"unix:/tmp/pec-lab/a/run/milter.sock\", max_buffered: 10MB", "config: milter.max_buffered:", true},
		{"clamd: {addr: \"127.0.0.1:3310\"", "clamd: {addr: \"\"", "config: clamd.addr:", true},
		{"reinject: {addr: \"unix:/tmp/pec-lab/a/postfix/spool/public/pec-reinject\"}", "reinject: {addr: \"\"}", "config: reinject.addr:", true},
		// Issue 12 item 3: a TCP reinjection listener lets any local process inject.
		{"reinject: {addr: \"unix:/tmp/pec-lab/a/postfix/spool/public/pec-reinject\"}", "reinject: {addr: \"127.0.0.10:10025\"}", "config: reinject.addr: \"127.0.0.10:10025\": want unix:", true},
		// Issue 12 item 2: inet: only with an explicit allow-list; each key in its place.
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"inet:127.0.0.1:8891\"", "config: milter.listen: \"inet:127.0.0.1:8891\" is a TCP listener", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"inet:127.0.0.1:8891\", allow_inet_peers: [localhost]", "config: milter.allow_inet_peers[0]:", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"inet:127.0.0.1:8891\", allow_inet_peers: [127.0.0.1], allow_users: [postfix]", "config: milter.allow_users:", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"unix:/tmp/pec-lab/a/run/milter.sock\", allow_inet_peers: [127.0.0.1]", "config: milter.allow_inet_peers: only for an inet: listener", true},
		{"listen: \"unix:/tmp/pec-lab/a/run/milter.sock\"", "listen: \"unix:/tmp/pec-lab/a/run/milter.sock\", allow_users: [\"\"]", "config: milter.allow_users[0]:", true},
		{"confirm: {listen: \"unix:/tmp/pec-lab/a/run/confirm.sock\"", "confirm: {listen: \"inet:127.0.0.1:2425\"", "config: confirm.listen: \"inet:127.0.0.1:2425\" is a TCP listener", true},
		{"anchors: [/tmp/pec-lab/ca/root.pem]", "anchors: []", "config: trust.anchors: required", true},
		{"crls: [\"http://127.0.0.1:3181/ca1.crl\"]", "crls: [\"ldap://ca1.agid.gov.it/x\"]", "config: trust.crls[0]:", true},
		{"crl_refresh: 10m", "crl_refresh: 48h", "config: trust.crl_refresh:", true},
		{"crl_refresh: 10m", "crl_refresh: 10m, signing_window: -1h", "config: trust.signing_window:", true},
		// Each confirm duration under its own key.
		{"expiry: 1m}", "expiry: 1m, retry_window: 500ms}", "config: confirm.retry_window: 500ms: at least 1s", true},
		{"expiry: 1m}", "expiry: 500ms}", "config: confirm.expiry: 500ms: at least 1s", true},
		// Negative signer tuning is refused, not replaced by the default.
		{"digest: sha256", "digest: sha256\n  pool_size: -2", "config: signer.pool_size: -2: must not be negative", false},
		{"digest: sha256", "digest: sha256\n  session_wait: -3s", "config: signer.session_wait: -3s: must not be negative", false},
		{"digest: sha256", "digest: sha256\n  retry_min: -1s", "config: signer.retry_min: -1s: must not be negative", false},
		{"digest: sha256", "digest: sha256\n  retry_max: -1s", "config: signer.retry_max: -1s: must not be negative", false},
		{"digest: sha256", "digest: sha256\n  expiry_warning: -24h", "config: signer.expiry_warning: -24h0m0s: must not be negative", false},
		// RFC 6109 §4.5: the providers index is refreshed at least daily.
		{"refresh: 1h}", "refresh: 48h}", "config: index.refresh: 48h0m0s: at most 24h (RFC 6109 §4.5", false},
		{"refresh: 1h}", "refresh: -1h}", "config: index.refresh: -1h0m0s: must not be negative", false},
	} {
		doc := strings.Replace(string(base), tc.old, tc.new, 1)
		if doc == string(base) {
			t.Fatalf("test case %q does not apply", tc.old)
		}
		c, err := Parse([]byte(doc))
		if err == nil && tc.milter {
			err = c.ValidateMilter()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.new, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"30MB": 30_000_000, "100MB": 100_000_000, "512KiB": 512 * 1024, "1 MiB": 1 << 20,
		"1000": 1000, "10k": 10_000, "2GB": 2_000_000_000, "7B": 7,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1MB", "1.5MB", "30 parsecs", "99999999999999999999GB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func TestParseListen(t *testing.T) {
	for in, want := range map[string][2]string{
		"unix:/run/pec/milter.sock": {"unix", "/run/pec/milter.sock"},
		"inet:127.0.0.1:8891":       {"tcp", "127.0.0.1:8891"},
		"127.0.0.1:8891":            {"tcp", "127.0.0.1:8891"},
	} {
		n, a, err := ParseListen(in)
		if err != nil || n != want[0] || a != want[1] {
			t.Errorf("ParseListen(%q) = %q %q %v", in, n, a, err)
		}
	}
	for _, in := range []string{"unix:x.sock", "inet:nope", "", "unix:/" + strings.Repeat("a", 120)} {
		if _, _, err := ParseListen(in); err == nil {
			t.Errorf("ParseListen(%q) accepted", in)
		}
	}
}

// One identity per PEC domain: a domain with its own key signs as that key's service
// address; the others share the default key and the provider's service address; the main
// identity (the service address's domain) comes first whatever the order of domains.
func TestIdentities(t *testing.T) {
	c := &Config{
		Provider: Provider{Name: "P", Domains: []string{"pec2.test", "pec.test", "pec3.test"},
			ServiceAddress: "posta-certificata@pec.test", ReceiptAddress: "ricevute@pec.test"},
	}
	c.Signer.Keys = append(c.Signer.Keys, hsmKey("pec2.test", "posta-certificata@pec2.test"))
	ids := c.Identities()
	want := []string{
		"pec.test posta-certificata@pec.test",
		"pec2.test posta-certificata@pec2.test",
		"pec3.test posta-certificata@pec.test",
	}
	var got []string
	for _, id := range ids {
		if id.Name != "P" || id.ReceiptAddress != "ricevute@pec.test" {
			t.Errorf("identity %+v", id)
		}
		got = append(got, id.Domain+" "+id.ServiceAddress)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("identities %v, want %v", got, want)
	}
}

func hsmKey(domain, svc string) hsm.KeyConfig {
	return hsm.KeyConfig{Domain: domain, ServiceAddress: svc}
}

// TestStorePostgres: store.driver postgres with a multi-host DSN is a valid configuration.
func TestStorePostgres(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(base), "store: {driver: sqlite, dsn: /tmp/pec-lab/a/pec.db}",
		`store: {driver: postgres, dsn: "postgres://pec@db1:5432,db2:5432/pec?target_session_attrs=read-write"}`, 1)
	if doc == string(base) {
		t.Fatal("test case does not apply")
	}
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Driver != "postgres" || !strings.Contains(c.Store.DSN, "db1:5432,db2:5432") {
		t.Errorf("store: %+v", c.Store)
	}
}

// TestIndexCacheDefault: the local copy of the providers index is on by default, next to the
// SQLite database (issue 12 item 11b); a configured path is kept; "off" turns it off. pecctl's
// Decode gives the same index.cache as the daemons' Parse.
func TestIndexCacheDefault(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"", "", "/tmp/pec-lab/a/providers-index.ldif"},
		{"refresh: 1h}", "refresh: 1h, cache: /srv/idx.ldif}", "/srv/idx.ldif"},
		{"refresh: 1h}", "refresh: 1h, cache: \"off\"}", ""},
		{"{driver: sqlite, dsn: /tmp/pec-lab/a/pec.db}", "{driver: postgres, dsn: \"postgres://pec@db/pec\"}", "/var/lib/gestore/providers-index.ldif"},
	} {
		y := string(base)
		if tc.old != "" {
			if !strings.Contains(y, tc.old) {
				t.Fatalf("testdata/lab-a.yaml lacks %q", tc.old)
			}
			y = strings.Replace(y, tc.old, tc.new, 1)
		}
		c, err := Parse([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", tc.new, err)
		}
		if c.Index.Cache != tc.want {
			t.Errorf("%q: index.cache = %q, want %q", tc.new, c.Index.Cache, tc.want)
		}
		p := filepath.Join(t.TempDir(), "pec.yaml")
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		if c, err := Decode(p); err != nil {
			t.Errorf("%q: Decode: %v", tc.new, err)
		} else if c.Index.Cache != tc.want {
			t.Errorf("%q: Decode: index.cache = %q, want %q", tc.new, c.Index.Cache, tc.want)
		}
	}
}

// An inet: listener is accepted with allow_inet_peers (addresses and networks, IPv4 and IPv6).
func TestInetListenerWithPeers(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(base), `listen: "unix:/tmp/pec-lab/a/run/milter.sock"`,
		`listen: "inet:127.0.0.1:8891", allow_inet_peers: [127.0.0.1, "10.1.2.0/24", "::1"]`, 1)
	c, err := Parse([]byte(doc))
	if err == nil {
		err = c.ValidateMilter()
	}
	if err != nil {
		t.Fatal(err)
	}
	l := c.Milter.Listener()
	if l.Key != "milter" || len(l.Peers.Nets) != 3 || len(l.Peers.AllowUsers) != 0 {
		t.Fatalf("listener = %+v", l)
	}
	for addr, want := range map[string]bool{"127.0.0.1": true, "10.1.2.99": true, "::1": true, "::ffff:127.0.0.1": true,
		"127.0.0.2": false, "10.1.3.1": false, "192.0.2.1": false} {
		if got := l.Peers.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", addr, got, want)
		}
	}
}

// allow_users resolves names and numeric uids; an unknown name is an error naming the key.
func TestPeerUIDs(t *testing.T) {
	p := Peers{AllowUsers: []string{"root", "4242"}}
	uids, err := p.UIDs("milter")
	if err != nil || len(uids) != 2 || uids[0] != 0 || uids[1] != 4242 {
		t.Fatalf("UIDs = %v, %v", uids, err)
	}
	p = Peers{AllowUsers: []string{"root", "no-such-user-gestore"}}
	if _, err := p.UIDs("confirm"); err == nil || !strings.Contains(err.Error(), "config: confirm.allow_users[1]:") {
		t.Fatalf("unknown user: %v", err)
	}
}

// trust.ocsp reaches the engine's trust configuration; it is off unless set.
func TestTrustOCSPKey(t *testing.T) {
	base, err := os.ReadFile("testdata/lab-a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	anchor := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(anchor, hsmtest.NewCA(t).PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(base), "anchors: [/tmp/pec-lab/ca/root.pem]", "anchors: ["+anchor+"]", 1)
	for _, on := range []bool{false, true} {
		d := doc
		if on {
			d = strings.Replace(doc, "crl_refresh: 10m", "crl_refresh: 10m, ocsp: true", 1)
		}
		c, err := Parse([]byte(d))
		if err != nil {
			t.Fatal(err)
		}
		tc, err := c.Trust.TrustConfig()
		if err != nil || tc.OCSP != on || len(tc.Anchors) != 1 {
			t.Errorf("ocsp %v: TrustConfig OCSP %v, %d anchors, %v", on, tc.OCSP, len(tc.Anchors), err)
		}
	}
}
