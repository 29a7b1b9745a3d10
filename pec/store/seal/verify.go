package seal

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/gestore-pec/gestore/pec/smime"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/tsa"
)

// Report is the outcome of verifying one sealed day.
type Report struct {
	Day      string
	Count    int64
	Problems []string // empty: the day verifies
	Changed  []int64  // sequence numbers whose event differs from the sealed one
	Missing  []int64  // sealed events no longer in the log
	Added    []int64  // events in the log that were not sealed
}

// OK reports whether the day verified.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) fail(format string, a ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
}

// Verify checks a sealed day: the chain to the previous seal, the CMS signature over the
// export (and its chain to seal.signer_ca when set), the TSA token (imprint equal to the
// seal hash, signature chaining to the TSA CA), that re-exporting the day from the log
// gives the sealed bytes, and that the files on disk, when present, are the sealed ones.
// When the log differs, the sealed export (kept inside the .p7m) tells which events
// changed, went missing or were added. Each problem starts with the name of the check that
// failed ("chain:", "signature:", "timestamp:", "log:", "files:"). An error means the
// check could not run; a failed check is in the Report.
// (Long on purpose: one check after another, each reported under its own name.)
func (s *Sealer) Verify(ctx context.Context, day string) (*Report, error) {
	r := &Report{Day: day}
	seal, err := s.d.Store.GetSeal(ctx, day)
	if errors.Is(err, store.ErrNotFound) {
		r.fail("day %s is not sealed", day)
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	r.Count = seal.Count
	// 1. Chain.
	prev, err := s.d.Store.LastSeal(ctx, day)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if seal.PrevHash != nil {
			r.fail("chain: the seal refers to a previous seal that is not in the store")
		}
		prev = nil
	case err != nil:
		return nil, err
	case !bytes.Equal(prev.Hash, seal.PrevHash):
		r.fail("chain: previous hash does not match the seal of %s", prev.Day)
	case prev.Day != PrevDay(day):
		r.fail("chain: previous seal is %s, not the day before", prev.Day)
	}
	// 2. Signature: the sealed export is the content of the .p7m.
	sealed, err := s.checkSignature(seal, r)
	if err != nil {
		return nil, err
	}
	// 3. Timestamp.
	roots, err := tsa.LoadPool(s.cfg.TSACA)
	if err != nil {
		return nil, fmt.Errorf("seal.tsa_ca: %w", err)
	}
	if _, err := tsa.Verify(seal.Token, seal.Hash, roots); err != nil {
		r.fail("timestamp: %v", err)
	}
	// 4. The log as it is now.
	x, err := export(ctx, s.d.Store, day, s.headerProvider(sealed), s.d.Location, prev)
	if err != nil {
		return nil, err
	}
	now := sha256.Sum256(x.Data)
	if !bytes.Equal(now[:], seal.Hash) {
		r.fail("log: the events of %s in the database differ from the sealed export", day)
		if sealed != nil {
			r.Changed, r.Missing, r.Added = diff(sealed, x.Data)
		}
	}
	// 5. The files kept on disk, when present, are the sealed ones.
	ef, pf, tf := s.Files(day)
	if b, err := os.ReadFile(ef); err == nil && sealed != nil && !bytes.Equal(b, sealed) {
		r.fail("files: %s differs from the signed export", ef)
	}
	if b, err := os.ReadFile(pf); err == nil && !bytes.Equal(b, seal.Signed) {
		r.fail("files: %s differs from the stored signature", pf)
	}
	if b, err := os.ReadFile(tf); err == nil && !bytes.Equal(b, seal.Token) {
		r.fail("files: %s differs from the stored token", tf)
	}
	return r, nil
}

// headerProvider reuses the provider name written in the sealed header, so that a
// renamed provider does not make old days fail.
func (s *Sealer) headerProvider(sealed []byte) string {
	var h header
	if sealed != nil {
		if i := bytes.IndexByte(sealed, '\n'); i > 0 && json.Unmarshal(sealed[:i], &h) == nil && h.Format == Format {
			return h.Provider
		}
	}
	return s.d.Provider
}

// checkSignature verifies the .p7m (pec/smime) and returns the export it carries, nil when
// its signature does not verify. With seal.signer_ca the signer must chain to it at the
// time the seal was made (any extended key usage: the provider's PEC certificate).
func (s *Sealer) checkSignature(seal *store.Seal, r *Report) ([]byte, error) {
	v, err := smime.VerifyCMS(seal.Signed, nil, smime.VerifyOptions{})
	if err != nil {
		r.fail("signature: %v", err)
		return nil, nil
	}
	if s.cfg.SignerCA != "" {
		pool, err := tsa.LoadPool(s.cfg.SignerCA)
		if err != nil {
			return nil, fmt.Errorf("seal.signer_ca: %w", err)
		}
		err = v.VerifyChain(smime.VerifyOptions{Roots: pool, At: seal.Created, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			r.fail("signature: %v", err)
		}
	}
	sum := sha256.Sum256(v.Entity)
	if !bytes.Equal(sum[:], seal.Hash) {
		r.fail("signature: the signed export does not hash to the seal hash")
	}
	return v.Entity, nil
}

// diff compares two exports event by event (by sequence number).
func diff(sealed, now []byte) (changed, missing, added []int64) {
	a, b := lines(sealed), lines(now)
	for seq, l := range a {
		m, ok := b[seq]
		switch {
		case !ok:
			missing = append(missing, seq)
		case m != l:
			changed = append(changed, seq)
		}
	}
	for seq := range b {
		if _, ok := a[seq]; !ok {
			added = append(added, seq)
		}
	}
	for _, s := range [][]int64{changed, missing, added} {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	return changed, missing, added
}

func lines(data []byte) map[int64]string {
	out := map[int64]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		var l struct {
			Seq int64 `json:"seq"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out[l.Seq] = sc.Text()
		}
	}
	return out
}
