package seal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec/smime"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
	"github.com/gestore-pec/gestore/pec/store/storetest"
	"github.com/gestore-pec/gestore/pec/tsa"
)

// Each test below breaks exactly one piece of a sealed day, as someone with write access to
// the database or the seal directory could, and checks that Verify fails naming that check
// and no other.

const day = "2026-11-20"

// sealed seals 19 and 20 November and returns the env and the seal of the 20th.
func sealed(t *testing.T) (*env, *store.Seal) {
	t.Helper()
	e := setup(t)
	e.sealDue(t)
	s, err := e.st.GetSeal(context.Background(), day)
	if err != nil {
		t.Fatal(err)
	}
	return e, s
}

// setSeal overwrites one column of a stored seal after dropping the immutability trigger.
func (e *env) setSeal(t *testing.T, d, column string, value any) {
	t.Helper()
	db, err := sql.Open("sqlite3", e.dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TRIGGER IF EXISTS seals_no_update`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE seals SET `+column+` = ? WHERE day = ?`, value, d); err != nil {
		t.Fatal(err)
	}
}

// replaceFile replaces a sealed file (written read-only).
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o440); err != nil {
		t.Fatal(err)
	}
}

// wantOnly verifies day and fails the test unless every problem comes from check and
// the first mentions about.
func (e *env) wantOnly(t *testing.T, check, about string) {
	t.Helper()
	r, err := e.s.Verify(context.Background(), day)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() {
		t.Fatalf("verified; want a %q problem", check)
	}
	for _, p := range r.Problems {
		if !strings.HasPrefix(p, check+": ") {
			t.Errorf("problem outside %q: %s", check, p)
		}
	}
	if !strings.Contains(r.Problems[0], about) {
		t.Errorf("problem %q does not mention %q", r.Problems[0], about)
	}
}

func flipNear(b []byte, fromEnd int) []byte {
	b = bytes.Clone(b)
	b[len(b)-fromEnd] ^= 0x01
	return b
}

// TestVerifyChainToPreviousDay: the seal of the 20th must carry the hash of the 19th's.
func TestVerifyChainToPreviousDay(t *testing.T) {
	e, _ := sealed(t)
	e.setSeal(t, day, "prev_hash", bytes.Repeat([]byte{0xab}, 32))
	e.wantOnly(t, "chain", "previous hash does not match the seal of 2026-11-19")
}

// TestVerifyTimestamp: the RFC 3161 token must be valid, of the configured TSA, and over
// the seal hash. The .tsr file is changed with the stored token, so only the token check
// can see it.
func TestVerifyTimestamp(t *testing.T) {
	t.Run("signature", func(t *testing.T) {
		e, s := sealed(t)
		bad := flipNear(s.Token, 3) // inside the ECDSA signature, the token's last field
		e.setSeal(t, day, "token", bad)
		_, _, tf := e.s.Files(day)
		replaceFile(t, tf, bad)
		e.wantOnly(t, "timestamp", "signature does not verify")
	})
	t.Run("other hash", func(t *testing.T) {
		e, _ := sealed(t)
		c, err := tsa.New(tsa.Config{URL: e.tsaURL, CA: e.tsaCA}, nil)
		if err != nil {
			t.Fatal(err)
		}
		other := sha256.Sum256([]byte("another export"))
		token, _, err := c.Timestamp(context.Background(), other[:])
		if err != nil {
			t.Fatal(err)
		}
		e.setSeal(t, day, "token", token)
		_, _, tf := e.s.Files(day)
		replaceFile(t, tf, token)
		e.wantOnly(t, "timestamp", "message imprint")
	})
	t.Run("other TSA", func(t *testing.T) {
		e, s := sealed(t)
		a, err := tsa.NewAuthority("Rogue TSA")
		if err != nil {
			t.Fatal(err)
		}
		url, stop, err := a.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer stop() //nolint:errcheck
		ca := filepath.Join(t.TempDir(), "rogue-ca.pem")
		os.WriteFile(ca, tsa.PEM(a.CA), 0o644) //nolint:errcheck
		c, err := tsa.New(tsa.Config{URL: url, CA: ca}, nil)
		if err != nil {
			t.Fatal(err)
		}
		token, _, err := c.Timestamp(context.Background(), s.Hash)
		if err != nil {
			t.Fatal(err)
		}
		e.setSeal(t, day, "token", token)
		_, _, tf := e.s.Files(day)
		replaceFile(t, tf, token)
		e.wantOnly(t, "timestamp", "not trusted")
	})
}

// TestVerifySignature: the .p7m must verify, chain to seal.signer_ca, and carry the export
// whose hash is the seal's. The .p7m file changes with the stored one.
func TestVerifySignature(t *testing.T) {
	store := func(t *testing.T, e *env, p7m []byte) {
		e.setSeal(t, day, "signed", p7m)
		_, pf, _ := e.s.Files(day)
		replaceFile(t, pf, p7m)
	}
	t.Run("signature", func(t *testing.T) {
		e, s := sealed(t)
		store(t, e, flipNear(s.Signed, 3)) // inside the RSA signature, the last field
		e.wantOnly(t, "signature", "signature does not verify")
	})
	t.Run("chain", func(t *testing.T) {
		e, _ := sealed(t)
		ef, _, _ := e.s.Files(day)
		export, _ := os.ReadFile(ef)
		intruder := hsmtest.New(t, "Provider A S.p.A.", "pec-a.test") // same names, another CA
		key, chain, _ := intruder.SignerFor("pec-a.test")
		p7m, err := smime.SignCMS(export, key, chain, smime.CMSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		store(t, e, p7m)
		e.wantOnly(t, "signature", "not trusted")
	})
	t.Run("export hash", func(t *testing.T) {
		e, _ := sealed(t)
		ef, _, _ := e.s.Files(day)
		export, _ := os.ReadFile(ef)
		other := bytes.Replace(export, []byte(`"seq":4`), []byte(`"seq":9`), 1)
		key, chain, _ := e.kr.SignerFor("pec-a.test")
		p7m, err := smime.SignCMS(other, key, chain, smime.CMSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		store(t, e, p7m)
		replaceFile(t, ef, other) // the export file agrees with the .p7m: only the hash differs
		e.wantOnly(t, "signature", "does not hash to the seal hash")
	})
}

// TestVerifyFilesOnDisk: the export, .p7m and .tsr files kept in seal.dir must be the sealed
// ones; each is replaced by another that is valid on its own.
func TestVerifyFilesOnDisk(t *testing.T) {
	t.Run("tsr", func(t *testing.T) {
		e, s := sealed(t)
		c, err := tsa.New(tsa.Config{URL: e.tsaURL, CA: e.tsaCA}, nil)
		if err != nil {
			t.Fatal(err)
		}
		token, _, err := c.Timestamp(context.Background(), s.Hash) // valid, same hash, not the stored one
		if err != nil {
			t.Fatal(err)
		}
		_, _, tf := e.s.Files(day)
		replaceFile(t, tf, token)
		e.wantOnly(t, "files", "PEC-2026-11-20.tsr differs from the stored token")
	})
	t.Run("p7m", func(t *testing.T) {
		e, _ := sealed(t)
		ef, pf, _ := e.s.Files(day)
		export, _ := os.ReadFile(ef)
		key, chain, _ := e.kr.SignerFor("pec-a.test")
		p7m, err := smime.SignCMS(export, key, chain, smime.CMSOptions{SigningTime: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		replaceFile(t, pf, p7m)
		e.wantOnly(t, "files", "PEC-2026-11-20.jsonl.p7m differs from the stored signature")
	})
	t.Run("export", func(t *testing.T) {
		e, _ := sealed(t)
		ef, _, _ := e.s.Files(day)
		export, _ := os.ReadFile(ef)
		replaceFile(t, ef, bytes.Replace(export, []byte(`"seq":4`), []byte(`"seq":9`), 1))
		e.wantOnly(t, "files", "PEC-2026-11-20.jsonl differs from the signed export")
	})
}

// TestStoredSealImmutable: a stored seal cannot be replaced through the store, nor updated
// with SQL while the trigger is in place, nor sealed again by the Sealer.
func TestStoredSealImmutable(t *testing.T) {
	e, s := sealed(t)
	ctx := context.Background()
	forged := *s
	forged.Hash = bytes.Repeat([]byte{1}, 32)
	forged.Signed, forged.Token = []byte("forged"), []byte("forged")
	if err := e.st.PutSeal(ctx, forged); !errors.Is(err, store.ErrExists) {
		t.Errorf("PutSeal over a stored seal: %v, want ErrExists", err)
	}
	if _, err := e.s.Seal(ctx, day); !errors.Is(err, store.ErrExists) {
		t.Errorf("sealing a sealed day: %v, want ErrExists", err)
	}
	ef, _, _ := e.s.Files(day)
	if aside, _ := filepath.Glob(ef[:len(ef)-len(".jsonl")] + ".*.unfinished-*"); len(aside) > 0 {
		t.Errorf("sealing again moved the sealed files aside: %v", aside)
	}
	db, err := sql.Open("sqlite3", e.dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`UPDATE seals SET hash = x'00' WHERE day = '2026-11-20'`, `UPDATE seals SET token = x'00'`} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "immutable") {
			t.Errorf("%s: %v, want the immutability trigger to refuse it", q, err)
		}
	}
	got, err := e.st.GetSeal(ctx, day)
	if err != nil || !bytes.Equal(got.Hash, s.Hash) || !bytes.Equal(got.Signed, s.Signed) || !bytes.Equal(got.Token, s.Token) {
		t.Errorf("the stored seal changed: %v", err)
	}
	if r, err := e.s.Verify(ctx, day); err != nil || !r.OK() {
		t.Errorf("verify after the attempts: %v %+v", err, r)
	}
}

// TestVerifyV0Seal: a day sealed before the seal moved to pec/smime (its .p7m made by
// smallstep/pkcs7, its token by the digitorus-based lab TSA) still verifies: signature,
// chain, timestamp and files.
func TestVerifyV0Seal(t *testing.T) {
	const d = "2026-12-01"
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "pec.db"), sqlite.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for i, at := range []time.Time{time.Date(2026, 12, 1, 9, 0, 0, 0, rome), time.Date(2026, 12, 1, 18, 0, 0, 0, rome)} {
		if err := st.Commit(ctx, &store.Batch{Events: []store.Event{storetest.SampleEvent(i, at)}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Config{TSACA: "testdata/v0-tsa-ca.pem", SignerCA: "testdata/v0-signer-ca.pem", Dir: filepath.Join(dir, "seals")},
		Deps{Store: st, Provider: "Provider A S.p.A.", Location: rome})
	if err != nil {
		t.Fatal(err)
	}
	ef, pf, tf := s.Files(d)
	files := map[string][]byte{}
	for _, f := range []string{ef, pf, tf} {
		b, err := os.ReadFile(filepath.Join("testdata", "v0-"+filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
		if err := writeFileSync(f, b); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256(files[ef])
	err = st.PutSeal(ctx, store.Seal{Day: d, FirstSeq: 1, LastSeq: 2, Count: 2, Hash: sum[:], Signed: files[pf], Token: files[tf],
		Created: time.Date(2026, 12, 2, 1, 0, 0, 0, rome)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Verify(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	// The events are storetest's samples; if those change, only the "log:" check may differ.
	for _, p := range r.Problems {
		if !strings.HasPrefix(p, "log: ") {
			t.Errorf("v0 seal: %s", p)
		}
	}
}
