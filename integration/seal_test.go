//go:build integration

package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/integration/lab"
	"github.com/gestore-pec/gestore/integration/mailtest"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/seal"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// TestSealLabTSA seals a day of provider A's legal log against the lab TSA, then checks it
// with `pecctl log verify` and, independently, with `openssl ts -verify`.
//
// It works on a copy of A's database (sqlite3 .backup) so that the shared lab's log and its
// seal chain are left alone, and seals today by giving the sealer a clock a day ahead (a day
// is sealed only once over, and `pecctl log seal` uses the real clock, so the package is
// called directly for that step; the verification runs the bin/pecctl binary).
func TestSealLabTSA(t *testing.T) {
	l := lab.ForTest(t)
	if l.TSA.URL == "" || l.TSA.CA == "" {
		t.Fatal("lab.json has no TSA: the lab was started without bin/pecctl (make build, then lab-up.sh)")
	}
	pecctl, err := filepath.Abs("../bin/pecctl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pecctl); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	a, err := l.Provider("a")
	if err != nil {
		t.Fatal(err)
	}

	// The lab's pec.yaml for A must carry the seal section pointing at the lab TSA.
	var pc struct {
		Provider struct {
			Name           string   `yaml:"name"`
			Domains        []string `yaml:"domains"`
			ServiceAddress string   `yaml:"service_address"`
			Timezone       string   `yaml:"timezone"`
		} `yaml:"provider"`
		Signer hsm.Config   `yaml:"signer"`
		Store  store.Config `yaml:"store"`
		Seal   *seal.Config `yaml:"seal"`
	}
	b, err := os.ReadFile(a.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	if pc.Seal == nil || pc.Seal.TSAURL != l.TSA.URL || pc.Seal.TSACA != l.TSA.CA || pc.Seal.SignerCA != l.CA.Cert ||
		pc.Seal.Dir != filepath.Join(l.Base, "a", "seal") {
		t.Fatalf("%s: seal section %+v does not match lab.json (tsa %+v, ca %s)", a.ConfigFile, pc.Seal, l.TSA, l.CA.Cert)
	}

	dir := t.TempDir()
	st, copied := copyStore(t, pc.Store, dir)
	defer st.Close()

	// One event of our own today, so that the sealed day is never empty.
	loc, err := time.LoadLocation(pc.Provider.Timezone)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	day := now.In(loc).Format("2006-01-02")
	ctx := context.Background()
	ev := storetest.SampleEvent(int(now.UnixNano()%100000), now)
	if err := st.Commit(ctx, &store.Batch{Events: []store.Event{ev}}); err != nil {
		t.Fatal(err)
	}

	t.Setenv(pc.Signer.PKCS11.PINEnv, a.Token.PIN)
	t.Setenv("SOFTHSM2_CONF", l.SoftHSM.Conf)
	keys, err := hsm.New(pc.Signer, hsm.Deps{Logger: slog.New(slog.DiscardHandler), Provider: hsm.Provider{
		Name: pc.Provider.Name, ServiceAddress: pc.Provider.ServiceAddress, Domains: pc.Provider.Domains}})
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()

	sealDir := filepath.Join(dir, "seal")
	cfg := seal.Config{TSAURL: l.TSA.URL, TSACA: l.TSA.CA, SignerCA: l.CA.Cert, Dir: sealDir}
	_, end, err := seal.DayBounds(day, loc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(cfg, seal.Deps{Store: st, Keyring: keys, Domain: pc.Provider.Domains[0], Provider: pc.Provider.Name,
		Location: loc, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return end.Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	// SealDue, not Seal(day): the copy may hold earlier unsealed days, and seals are contiguous.
	days, err := s.SealDue(ctx)
	if err != nil {
		t.Fatalf("SealDue: %v (sealed %v)", err, days)
	}
	if !slices.Contains(days, day) {
		t.Fatalf("sealed %v, want %s among them", days, day)
	}
	sl, err := st.GetSeal(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	if sl.Count < 1 {
		t.Fatalf("seal of %s has %d events, want at least ours", day, sl.Count)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// pecctl log verify, the operator's command, on the same copy.
	yml := filepath.Join(dir, "pec.yaml")
	if err := os.WriteFile(yml, fmt.Appendf(nil, "provider: {name: %q, domains: [%s], service_address: %s, timezone: %s}\n"+
		"store: {driver: %s, dsn: %q}\nseal: {tsa_url: %q, tsa_ca: %s, signer_ca: %s, dir: %s}\n",
		pc.Provider.Name, pc.Provider.Domains[0], pc.Provider.ServiceAddress, pc.Provider.Timezone, copied.Driver, copied.DSN,
		l.TSA.URL, l.TSA.CA, l.CA.Cert, sealDir), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pecctl, "log", "verify", "-config", yml, "-day", day).CombinedOutput()
	if err != nil || !strings.Contains(string(out), day+": OK") {
		t.Fatalf("pecctl log verify: %v\n%s", err, out)
	}

	// openssl, independently of our code: the token's imprint is the export's SHA-256 and its
	// signature chains to the lab TSA's CA.
	export, _, tsr := s.Files(day)
	out, err = exec.Command("openssl", "ts", "-verify", "-data", export, "-in", tsr, "-CAfile", l.TSA.CA).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify: %v\n%s", err, out)
	}
	// ... and a changed export is refused, so the check above can fail.
	data, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(dir, "forged.jsonl")
	if err := os.WriteFile(forged, append(data, "{}\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("openssl", "ts", "-verify", "-data", forged, "-in", tsr, "-CAfile", l.TSA.CA).CombinedOutput(); err == nil {
		t.Fatalf("openssl ts -verify accepted a changed export:\n%s", out)
	}
}

// copyStore opens a copy of a lab provider's store, so that the test changes neither the
// shared lab's log nor its seals: a SQLite backup in dir, or (PEC_STORE=postgres) a new
// database filled by pg_dump, dropped at the end.
func copyStore(t *testing.T, cfg store.Config, dir string) (store.Store, store.Config) {
	t.Helper()
	if cfg.Driver == "postgres" {
		u, err := url.Parse(cfg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		name := "sealtest_" + strings.ToLower(mailtest.Token("c")[2:12])
		admin, cp := *u, *u
		admin.Path, cp.Path = "/postgres", "/"+name
		if out, err := exec.Command("psql", "-d", admin.String(), "-c", "CREATE DATABASE "+name).CombinedOutput(); err != nil {
			t.Fatalf("create %s: %v\n%s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("psql", "-d", admin.String(), "-c", "DROP DATABASE "+name).Run() }) //nolint:errcheck
		dump := exec.Command("sh", "-c", `pg_dump -d "$1" | psql -q -v ON_ERROR_STOP=1 -d "$2"`, "copy", cfg.DSN, cp.String())
		if out, err := dump.CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v\n%s", cfg.DSN, err, out)
		}
		cfg.DSN = cp.String()
	} else {
		db := filepath.Join(dir, "pec.db")
		if out, err := exec.Command("sqlite3", cfg.DSN, ".backup '"+db+"'").CombinedOutput(); err != nil {
			t.Fatalf("copying %s: %v\n%s", cfg.DSN, err, out)
		}
		cfg.DSN = db
	}
	st, err := storeopen.Open(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st, cfg
}
