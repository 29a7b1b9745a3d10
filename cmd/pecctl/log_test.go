package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/mattn/go-sqlite3" // the tampering test opens the SQLite file directly

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/postgres/pgtest"
	"github.com/gestore-pec/gestore/pec/store/storeopen"
	"github.com/gestore-pec/gestore/pec/tsa"
)

var rome, _ = time.LoadLocation("Europe/Rome")

type logEnv struct {
	dir, config, db string
	store           store.Config
}

// dbFile is the SQLite file every environment has a path for (the store of a sqlite one).
func (e *logEnv) dbFile() string { return filepath.Join(e.dir, "pec.db") }

// drivers are the stores pecctl is tested against: every log and stats test runs on both.
var drivers = []string{"sqlite", "postgres"}

// forEachStore runs fn as a subtest per store driver.
func forEachStore(t *testing.T, fn func(t *testing.T, driver string)) {
	for _, d := range drivers {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// newLogEnv writes a configuration with a PEM signer from the test keyring, a TSA on
// loopback, and a database (SQLite file, or a fresh schema of the shared PostgreSQL
// cluster) with a few days of realistic events.
func newLogEnv(t *testing.T, driver string) *logEnv {
	t.Helper()
	dir := t.TempDir()
	e := &logEnv{dir: dir, config: filepath.Join(dir, "pec.yaml"), db: filepath.Join(dir, "pec.db")}
	e.store = store.Config{Driver: "sqlite", DSN: e.db}
	if driver == "postgres" {
		e.db = pgtest.Shared(t).Schema(t)
		e.store = store.Config{Driver: "postgres", DSN: e.db}
	}
	kr := hsmtest.New(t, "Provider A S.p.A.", "pec-a.test")
	signer, chain, _ := kr.SignerFor("pec-a.test")
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	certFile := write("chain.pem", tsa.PEM(chain...))
	signerCA := write("signer-ca.pem", kr.CA.PEM())
	a, err := tsa.NewAuthority("Lab TSA")
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := a.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	tsaCA := write("tsa-ca.pem", tsa.PEM(a.CA))
	write("pec.yaml", []byte(fmt.Sprintf(`provider:
  name: "Provider A S.p.A."
  domains: [pec-a.test]
  service_address: posta-certificata@pec-a.test
  timezone: Europe/Rome
signer:
  pem_key: %s
  certificate: %s
store: {driver: %s, dsn: "%s"}
seal: {tsa_url: "%s", tsa_ca: %s, signer_ca: %s, dir: %s, grace: 1ns}
milter: {listen: "unix:/nonexistent"}
`, keyFile, certFile, e.store.Driver, e.db, url, tsaCA, signerCA, filepath.Join(dir, "seals"))))

	st, err := storeopen.Open(e.store, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := func(at time.Time, kind store.EventKind, id, sender, subject string, rcpts ...string) store.Event {
		x := store.Event{Time: at, Kind: kind, Identificativo: id, Sender: sender, Subject: subject, Gestore: "Provider A S.p.A."}
		for _, r := range rcpts {
			typ := store.Certified
			if strings.HasSuffix(r, "posta.test") {
				typ = store.External
			}
			x.Recipients = append(x.Recipients, store.Recipient{Addr: r, Type: typ})
		}
		return x
	}
	d1 := time.Date(2026, 9, 14, 10, 0, 0, 0, rome)
	d2 := time.Date(2026, 9, 15, 11, 0, 0, 0, rome)
	virus := ev(d2, store.KindNonAccettazioneVirus, "id3@pec-a.test", "anna@pec-a.test", "allegato", "bruno@pec-b.test")
	virus.Virus = "Eicar-Test-Signature"
	rv := ev(d2.Add(time.Hour), store.KindRilevazioneVirus, "idB2@pec-b.test", "bruno@pec-b.test", "fattura", "alice@pec-a.test")
	rv.Virus = "Eicar-Test-Signature"
	cons := ev(d1.Add(time.Minute), store.KindConsegna, "idB1@pec-b.test", "bianca@pec-b.test", "Saluti, \"ciao\"", "alice@pec-a.test")
	cons.About = []string{"alice@pec-a.test"}
	batches := [][]store.Event{
		{ev(d1, store.KindAccettazione, "id1@pec-a.test", "alice@pec-a.test", "Contratto", "bruno@pec-b.test", "oscar@posta.test"),
			ev(d1, store.KindBustaTrasporto, "id1@pec-a.test", "alice@pec-a.test", "Contratto", "bruno@pec-b.test", "oscar@posta.test")},
		{ev(d1.Add(time.Minute), store.KindPresaInCarico, "idB1@pec-b.test", "bianca@pec-b.test", "Saluti, \"ciao\"", "alice@pec-a.test"), cons},
		{ev(d2, store.KindAccettazione, "id2@pec-a.test", "anna@pec-a.test", "Fattura settembre", "bianca@pec-b.test")},
		{virus},
		{ev(d2.Add(time.Hour), store.KindPresaInCarico, "idB2@pec-b.test", "bruno@pec-b.test", "fattura", "alice@pec-a.test"), rv},
	}
	for _, b := range batches {
		if err := st.Commit(context.Background(), &store.Batch{Events: b}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *logEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLogSearchExportExtract(t *testing.T) { forEachStore(t, testLogSearchExportExtract) }

func testLogSearchExportExtract(t *testing.T, driver string) {
	e := newLogEnv(t, driver)
	code, out, stderr := e.run(t, "log", "search", "-config", e.config, "-sender", "ALICE@pec-a.test")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "tipo=accettazione: mittente=alice@pec-a.test") ||
		!strings.Contains(out, "oscar@posta.test (esterno)") || !strings.Contains(out, "2026-09-14 10:00:00 +0200") {
		t.Fatalf("search by sender: %d\n%s%s", code, out, stderr)
	}
	code, out, _ = e.run(t, "log", "search", "-config", e.config, "-id", "idB2@pec-b.test", "-kind", "rilevazione-virus")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "virus=Eicar-Test-Signature") {
		t.Fatalf("search by id and kind: %d\n%s", code, out)
	}
	code, out, _ = e.run(t, "log", "search", "-config", e.config, "-from", "2026-09-15", "-to", "2026-09-16", "-subject", "FATTURA")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("search by day and subject: %d\n%s", code, out)
	}
	// -db names the store without a configuration: driver:location.
	code, out, stderr = e.run(t, "log", "search", "-db", e.store.Driver+":"+e.db, "-id", "id1@pec-a.test")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("search with -db %s: %d\n%s%s", e.store.Driver, code, out, stderr)
	}
	if code, _, stderr := e.run(t, "log", "search", "-config", e.config, "-kind", "bogus"); code != 1 || !strings.Contains(stderr, "bogus") {
		t.Errorf("unknown kind: %d %s", code, stderr)
	}

	// CSV export of everything, read back with encoding/csv.
	csvFile := filepath.Join(e.dir, "all.csv")
	if code, _, stderr := e.run(t, "log", "export", "-config", e.config, "-format", "csv", "-out", csvFile); code != 0 {
		t.Fatalf("export csv: %s", stderr)
	}
	if st, err := os.Stat(csvFile); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("exported log: %v, mode %v; want no permission for group and others", err, st.Mode())
	}
	f, _ := os.Open(csvFile)
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(recs) != 9 || strings.Join(recs[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("csv: %v, %d records, header %v", err, len(recs), recs[0])
	}
	if recs[4][6] != `Saluti, "ciao"` || recs[4][10] != "alice@pec-a.test" {
		t.Errorf("csv quoting or about: %q", recs[4])
	}
	// JSON export: one canonical object per line.
	code, out, _ = e.run(t, "log", "export", "-config", e.config, "-format", "json", "-kind", "non-accettazione-virus")
	var obj map[string]any
	if code != 0 || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &obj) != nil || obj["virus"] != "Eicar-Test-Signature" {
		t.Fatalf("export json: %d %s", code, out)
	}

	// A user's extract: alice sent id1, and received idB1 and idB2.
	code, out, _ = e.run(t, "log", "extract", "-config", e.config, "-mailbox", "alice@pec-a.test", "-format", "csv")
	recs, _ = csv.NewReader(strings.NewReader(out)).ReadAll()
	ids := map[string]int{}
	for _, r := range recs[1:] {
		ids[r[3]]++
	}
	if code != 0 || len(recs) != 7 || ids["id1@pec-a.test"] != 2 || ids["idB1@pec-b.test"] != 2 || ids["idB2@pec-b.test"] != 2 {
		t.Fatalf("extract alice: %d %v\n%s", code, ids, out)
	}
	if code, _, _ := e.run(t, "log", "extract", "-config", e.config); code != 1 {
		t.Error("extract without -mailbox accepted")
	}
}

func TestLogSealVerifyAndTampering(t *testing.T) { forEachStore(t, testLogSealVerifyAndTampering) }

func testLogSealVerifyAndTampering(t *testing.T, driver string) {
	e := newLogEnv(t, driver)
	code, out, stderr := e.run(t, "log", "seal", "-config", e.config, "-due")
	if code != 0 || !strings.Contains(out, "sealed 2026-09-14: 4 events") || !strings.Contains(out, "sealed 2026-09-15: 4 events") {
		t.Fatalf("seal -due: %d\n%s%s", code, out, stderr)
	}
	for _, day := range []string{"2026-09-14", "2026-09-15"} {
		code, out, stderr := e.run(t, "log", "verify", "-config", e.config, "-day", day)
		if code != 0 || !strings.Contains(out, day+": OK") {
			t.Fatalf("verify %s: %d\n%s%s", day, code, out, stderr)
		}
	}
	if code, out, _ := e.run(t, "log", "verify", "-config", e.config, "-day", "2027-01-10"); code != 1 || !strings.Contains(out, "not sealed") {
		t.Errorf("verify of an unsealed day: %d %s", code, out)
	}
	// The files pecctl log seal wrote are checked by openssl too: the .p7m (pec/smime's
	// CMS) against the signer CA, the .tsr against the TSA CA.
	seals := filepath.Join(e.dir, "seals")
	export, p7m, tsr := filepath.Join(seals, "PEC-2026-09-15.jsonl"), filepath.Join(seals, "PEC-2026-09-15.jsonl.p7m"), filepath.Join(seals, "PEC-2026-09-15.tsr")
	content := filepath.Join(e.dir, "content")
	if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", p7m, "-CAfile",
		filepath.Join(e.dir, "signer-ca.pem"), "-purpose", "any", "-out", content).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify %s: %v\n%s", p7m, err, out)
	}
	if a, b := readTestFile(t, content), readTestFile(t, export); !bytes.Equal(a, b) {
		t.Error("the .p7m does not carry the export")
	}
	if out, err := exec.Command("openssl", "ts", "-verify", "-data", export, "-in", tsr, "-CAfile",
		filepath.Join(e.dir, "tsa-ca.pem")).CombinedOutput(); err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify %s: %v\n%s", tsr, err, out)
	}
	// log verify names the failed check: here a .tsr that is not the stored token.
	other := filepath.Join(seals, "PEC-2026-09-14.tsr")
	os.Remove(tsr)                                   //nolint:errcheck
	os.WriteFile(tsr, readTestFile(t, other), 0o440) //nolint:errcheck
	if code, out, _ := e.run(t, "log", "verify", "-config", e.config, "-day", "2026-09-15"); code != 1 ||
		!strings.Contains(out, "files: "+tsr+" differs from the stored token") {
		t.Errorf("verify with another .tsr: %d\n%s", code, out)
	}
	os.Remove(tsr) //nolint:errcheck // the checks below run without it: a missing file is no problem
	e.tamper(t, `UPDATE events SET sender = 'mallory@pec-a.test' WHERE seq = 6`)
	code, out, _ = e.run(t, "log", "verify", "-config", e.config, "-day", "2026-09-15")
	if code != 1 || !strings.Contains(out, "2026-09-15: FAILED") || !strings.Contains(out, "events changed since the seal (seq): [6]") {
		t.Fatalf("verify after tampering: %d\n%s", code, out)
	}
	if code, _, _ := e.run(t, "log", "verify", "-config", e.config, "-day", "2026-09-14"); code != 0 {
		t.Error("the untouched day no longer verifies")
	}
}

// tamper runs q on the database past the append-only triggers, as an attacker with the
// database's superuser would: SQLite with the trigger dropped, PostgreSQL with triggers off
// for the session (session_replication_role).
func (e *logEnv) tamper(t *testing.T, q string) {
	t.Helper()
	if e.store.Driver == "postgres" {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, e.db)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		for _, q := range []string{`SET session_replication_role = replica`, q} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	db, err := sql.Open("sqlite3", e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`DROP TRIGGER events_no_update`, q} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStats(t *testing.T) { forEachStore(t, testStats) }

func testStats(t *testing.T, driver string) {
	e := newLogEnv(t, driver)
	code, out, stderr := e.run(t, "stats", "-config", e.config, "-quadrimestre", "2026-3", "-format", "json")
	if code != 0 {
		t.Fatalf("stats: %d %s", code, stderr)
	}
	var s Stats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	want := Stats{From: "2026-09-01", To: "2027-01-01", Domains: []string{"pec-a.test"}, Mailboxes: 2, MailboxFrom: "active",
		MessagesOut: 2, MessagesIn: 2, VirusIn: 1, VirusOut: 1, Delivered: 1}
	if fmt.Sprintf("%+v", s) != fmt.Sprintf("%+v", want) {
		t.Errorf("stats\n got %+v\nwant %+v", s, want)
	}
	passwd := filepath.Join(e.dir, "passwd")
	os.WriteFile(passwd, []byte("alice@pec-a.test:{PLAIN}x::::\nanna@pec-a.test:{PLAIN}x::::\nnew@pec-a.test:{PLAIN}x::::\nbruno@pec-b.test:{PLAIN}x\n"), 0o600) //nolint:errcheck
	code, out, _ = e.run(t, "stats", "-config", e.config, "-from", "2026-09-15", "-to", "2026-09-16", "-passwd", passwd)
	if code != 0 || !strings.Contains(out, "mailboxes         3 (passwd)") || !strings.Contains(out, "messages out      1\n") ||
		!strings.Contains(out, "messages in       1\n") {
		t.Fatalf("stats with passwd: %d\n%s", code, out)
	}
	if code, _, _ := e.run(t, "stats", "-config", e.config, "-quadrimestre", "2026-4"); code != 1 {
		t.Error("quadrimestre 4 accepted")
	}
	if code, out, _ := e.run(t, "stats", "-config", e.config, "-quadrimestre", "2026-2"); code != 0 || !strings.Contains(out, "messages out      0") {
		t.Errorf("empty period: %d %s", code, out)
	}
}
