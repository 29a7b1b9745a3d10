package seal

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
	"github.com/gestore-pec/gestore/pec/store/storetest"
	"github.com/gestore-pec/gestore/pec/tsa"
)

var rome, _ = time.LoadLocation("Europe/Rome")

type env struct {
	st     *sqlite.Store
	dbPath string
	s      *Sealer
	dir    string
	tsaCA  string
	tsa    *tsa.Authority
	tsaURL string
	kr     *hsmtest.Keyring
}

func setup(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dbPath: filepath.Join(dir, "pec.db"), dir: filepath.Join(dir, "seals")}
	st, err := sqlite.Open(e.dbPath, sqlite.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	a, err := tsa.NewAuthority("Lab TSA")
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := a.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	e.tsa, e.tsaURL = a, url
	e.tsaCA = filepath.Join(dir, "tsa-ca.pem")
	os.WriteFile(e.tsaCA, tsa.PEM(a.CA), 0o644) //nolint:errcheck
	signerCA := filepath.Join(dir, "signer-ca.pem")
	e.kr = hsmtest.New(t, "Provider A S.p.A.", "pec-a.test")
	os.WriteFile(signerCA, e.kr.CA.PEM(), 0o644) //nolint:errcheck
	now := time.Date(2026, 11, 21, 1, 0, 0, 0, rome)
	e.s, err = New(Config{TSAURL: url, TSACA: e.tsaCA, SignerCA: signerCA, Dir: e.dir},
		Deps{Store: st, Keyring: e.kr, Domain: "pec-a.test", Provider: "Provider A S.p.A.", Location: rome,
			Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// Events on 19 and 20 November (Rome), one just after midnight UTC-wise but on the 20th
	// in Rome, and one on the 21st (not sealable yet).
	times := []time.Time{
		time.Date(2026, 11, 19, 9, 0, 0, 0, rome),
		time.Date(2026, 11, 19, 23, 59, 59, 999999999, rome),
		time.Date(2026, 11, 20, 0, 0, 0, 0, rome), // 2026-11-19T23:00:00Z
		time.Date(2026, 11, 20, 12, 0, 0, 0, rome),
		time.Date(2026, 11, 20, 18, 30, 0, 0, rome),
		time.Date(2026, 11, 21, 0, 30, 0, 0, rome),
	}
	for i, at := range times {
		ev := storetest.SampleEvent(i, at)
		if err := st.Commit(context.Background(), &store.Batch{Events: []store.Event{ev}}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) sealDue(t *testing.T) {
	t.Helper()
	days, err := e.s.SealDue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(days, ",") != "2026-11-19,2026-11-20" {
		t.Fatalf("sealed %v", days)
	}
}

func TestSealChainAndVerify(t *testing.T) {
	e := setup(t)
	e.sealDue(t)
	ctx := context.Background()
	s19, _ := e.st.GetSeal(ctx, "2026-11-19")
	s20, _ := e.st.GetSeal(ctx, "2026-11-20")
	if s19.Count != 2 || s20.Count != 3 || s19.PrevHash != nil || !bytes.Equal(s20.PrevHash, s19.Hash) {
		t.Fatalf("seals: 19 %d events prev %x; 20 %d events prev %x (19 hash %x)", s19.Count, s19.PrevHash, s20.Count, s20.PrevHash, s19.Hash)
	}
	for _, day := range []string{"2026-11-19", "2026-11-20"} {
		r, err := e.s.Verify(ctx, day)
		if err != nil || !r.OK() {
			t.Fatalf("verify %s: %v %+v", day, err, r)
		}
	}
	if _, err := e.s.Seal(ctx, "2026-11-21"); err == nil {
		t.Error("sealed a day that is not over")
	}
	if _, err := e.s.Seal(ctx, "2026-11-20"); err == nil {
		t.Error("sealed a day twice")
	}
	if _, err := e.s.Seal(ctx, "2026-11-18"); err == nil {
		t.Error("sealed a day before the chain")
	}
	// The exported file header chains to the previous day.
	ef, pf, tf := e.s.Files("2026-11-20")
	data, _ := os.ReadFile(ef)
	first := strings.SplitN(string(data), "\n", 2)[0]
	want := `{"count":3,"day":"2026-11-20","first_seq":3,"format":"pec-log-seal/1","last_seq":5,"prev_day":"2026-11-19","prev_hash":"` +
		hexs(s19.Hash) + `","provider":"Provider A S.p.A.","tz":"Europe/Rome"}`
	if first != want {
		t.Errorf("header\n got %s\nwant %s", first, want)
	}
	// Independent checks with openssl: the TSA token over the export, the CMS signature.
	out, err := exec.Command("openssl", "ts", "-verify", "-data", ef, "-in", tf, "-CAfile", e.tsaCA).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify: %v\n%s", err, out)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, e.kr.CA.PEM(), 0o644) //nolint:errcheck
	content := filepath.Join(t.TempDir(), "content")
	out, err = exec.Command("openssl", "cms", "-verify", "-inform", "DER", "-in", pf, "-binary", "-CAfile", caFile,
		"-purpose", "any", "-out", content).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(content); !bytes.Equal(got, data) {
		t.Error("the .p7m content is not the export file")
	}
}

func hexs(b []byte) string { return strings.ToLower(strings.TrimSpace(hexString(b))) }

func TestCanonicalEventLine(t *testing.T) {
	e := storetest.SampleEvent(3, time.Date(2026, 11, 20, 9, 0, 0, 120000000, time.UTC))
	e.Seq = 42
	e.Subject = `Fattura <n. 3> & "altro"`
	var b bytes.Buffer
	if err := encode(&b, eventLine(&e)); err != nil {
		t.Fatal(err)
	}
	want := `{"about":[],"error":"","error_detail":"","generated":["opec2026.00003.01.acc@pec-a.test"],"gestore":"Provider A S.p.A.",` +
		`"identificativo":"opec2026.20261120090000.00003.01@pec-a.test","kind":"accettazione","message_id":"<3.1795165200@client.example>",` +
		`"queue_id":"4Q00000003","receipt_type":"","recipients":[{"addr":"dest3@pec-b.test","type":"certificato"},{"addr":"ufficio@posta.test","type":"esterno"}],` +
		`"sender":"user3@pec-a.test","seq":42,"size":20003,"subject":"Fattura <n. 3> & \"altro\"","time":"2026-11-20T09:00:00.12Z","virus":""}` + "\n"
	if b.String() != want {
		t.Errorf("canonical line\n got %s\nwant %s", b.String(), want)
	}
}

// tamper runs raw SQL on the database file, as an attacker with file access would, after
// dropping the append-only triggers.
func (e *env) tamper(t *testing.T, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite3", e.dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range append([]string{`DROP TRIGGER events_no_update`, `DROP TRIGGER events_no_delete`}, stmts...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestTamperingDetected(t *testing.T) {
	at := time.Date(2026, 11, 20, 15, 0, 0, 0, rome).UnixNano()
	cases := []struct {
		name                    string
		sql                     string
		changed, missing, added string
	}{
		{"edit", `UPDATE events SET subject = 'altro oggetto' WHERE seq = 4`, "[4]", "[]", "[]"},
		{"delete", `DELETE FROM events WHERE seq = 3`, "[]", "[3]", "[]"},
		{"insert", `INSERT INTO events (time, identificativo, kind, sender, recipients, subject, message_id, gestore,
			receipt_type, about, error, error_detail, virus, queue_id, size, generated, logged_at)
			SELECT ` + itoa(at) + `, identificativo, kind, sender, recipients, 'forged', message_id, gestore, receipt_type,
			about, error, error_detail, virus, queue_id, size, generated, logged_at FROM events WHERE seq = 4`, "[]", "[]", "[7]"},
		{"move to another day", `UPDATE events SET time = time - 86400000000000 WHERE seq = 5`, "[]", "[5]", "[]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			e.sealDue(t)
			e.tamper(t, tc.sql)
			r, err := e.s.Verify(context.Background(), "2026-11-20")
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatal("tampered day verifies")
			}
			if !strings.Contains(strings.Join(r.Problems, "\n"), "2026-11-20") {
				t.Errorf("problems do not name the day: %v", r.Problems)
			}
			got := fmtSeqs(r.Changed) + fmtSeqs(r.Missing) + fmtSeqs(r.Added)
			if got != tc.changed+tc.missing+tc.added {
				t.Errorf("changed/missing/added %s, want %s%s%s", got, tc.changed, tc.missing, tc.added)
			}
		})
	}
}

// TestInterruptedSealResumes: files left by a seal whose store write failed do not block the
// next attempt; they are kept aside.
func TestInterruptedSealResumes(t *testing.T) {
	e := setup(t)
	ef, _, _ := e.s.Files("2026-11-19")
	if err := os.MkdirAll(filepath.Dir(ef), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ef, []byte("left over"), 0o440) //nolint:errcheck
	e.sealDue(t)
	r, err := e.s.Verify(context.Background(), "2026-11-19")
	if err != nil || !r.OK() {
		t.Fatalf("verify: %v %+v", err, r)
	}
	aside, _ := filepath.Glob(ef + ".unfinished-*")
	if len(aside) != 1 {
		t.Errorf("left-over file not kept aside: %v", aside)
	}
}
