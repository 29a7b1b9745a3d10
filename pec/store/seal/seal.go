package seal

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gestore-pec/gestore/pec/smime"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/tsa"
)

// Config is the seal section of the YAML configuration:
//
//	seal: {tsa_url: "http://127.0.0.1:3180/", tsa_ca: /etc/gestore/tsa-ca.pem, dir: /var/lib/gestore/seals}
type Config struct {
	TSAURL   string        `yaml:"tsa_url"`   // RFC 3161 TSA (a qualified one in production)
	TSACA    string        `yaml:"tsa_ca"`    // PEM trust anchor of the TSA
	SignerCA string        `yaml:"signer_ca"` // optional PEM CA to check the .p7m signer chain in verify
	Dir      string        `yaml:"dir"`       // where PEC-<day>.jsonl, .jsonl.p7m and .tsr are kept (WORM storage advised)
	Grace    time.Duration `yaml:"grace"`     // wait after midnight before sealing a day; default 10m
}

// Keyring is the signing dependency (hsm.Keyring's shape).
type Keyring interface {
	SignerFor(domain string) (crypto.Signer, []*x509.Certificate, error)
}

// Deps are the Sealer's dependencies.
type Deps struct {
	Store    store.Store
	Keyring  Keyring        // required to seal; verify works without it
	Domain   string         // whose key signs (the provider's first PEC domain)
	Provider string         // gestore name, written in the header
	Location *time.Location // provider.timezone; default Europe/Rome
	Now      func() time.Time
	Logger   *slog.Logger
	TSA      *tsa.Client // default: built from Config
}

// Sealer seals and verifies days of log.
type Sealer struct {
	cfg Config
	d   Deps
}

// New validates the configuration.
func New(cfg Config, d Deps) (*Sealer, error) {
	if d.Store == nil {
		return nil, errors.New("seal: no store")
	}
	if cfg.Dir == "" {
		return nil, errors.New("seal.dir: required")
	}
	if cfg.TSACA == "" {
		return nil, errors.New("seal.tsa_ca: required")
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Minute
	}
	if d.Location == nil {
		loc, err := time.LoadLocation("Europe/Rome")
		if err != nil {
			return nil, fmt.Errorf("provider.timezone: %w", err)
		}
		d.Location = loc
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.TSA == nil && cfg.TSAURL != "" {
		c, err := tsa.New(tsa.Config{URL: cfg.TSAURL, CA: cfg.TSACA}, nil)
		if err != nil {
			return nil, err
		}
		d.TSA = c
	}
	return &Sealer{cfg: cfg, d: d}, nil
}

// Files returns the paths of a day's export, signed export and timestamp.
func (s *Sealer) Files(day string) (export, p7m, tsr string) {
	base := filepath.Join(s.cfg.Dir, "PEC-"+day)
	return base + ".jsonl", base + ".jsonl.p7m", base + ".tsr"
}

// Seal seals one day. The day must be over (plus Grace), sealed days must be contiguous
// (the previous day sealed, unless this is the first seal), and a day is sealed once.
// (Long on purpose: the steps of one day's seal (export, sign, timestamp, chain, store) in the order they must happen.)
func (s *Sealer) Seal(ctx context.Context, day string) (*store.Seal, error) {
	if s.d.Keyring == nil || s.d.TSA == nil {
		return nil, errors.New("seal: signer and seal.tsa_url are needed to seal")
	}
	_, end, err := DayBounds(day, s.d.Location)
	if err != nil {
		return nil, err
	}
	if now := s.d.Now(); now.Before(end.Add(s.cfg.Grace)) {
		return nil, fmt.Errorf("seal: day %s is not over yet (sealable from %s)", day, end.Add(s.cfg.Grace).Format(time.RFC3339))
	}
	if _, err := s.d.Store.GetSeal(ctx, day); err == nil {
		return nil, fmt.Errorf("%w: day %s is already sealed", store.ErrExists, day)
	}
	if latest, err := s.d.Store.LastSeal(ctx, "9999-12-31"); err == nil && latest.Day > day {
		return nil, fmt.Errorf("seal: %s is already sealed, a chain cannot go back to %s", latest.Day, day)
	}
	prev, err := s.d.Store.LastSeal(ctx, day)
	switch {
	case errors.Is(err, store.ErrNotFound):
		prev = nil
	case err != nil:
		return nil, err
	case prev.Day != PrevDay(day):
		return nil, fmt.Errorf("seal: the last sealed day is %s: seal %s first", prev.Day, PrevDay(day))
	}
	x, err := export(ctx, s.d.Store, day, s.d.Provider, s.d.Location, prev)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(x.Data)
	signed, err := s.sign(x.Data)
	if err != nil {
		return nil, err
	}
	token, _, err := s.d.TSA.Timestamp(ctx, sum[:])
	if err != nil {
		return nil, fmt.Errorf("seal: timestamp: %w", err)
	}
	seal := store.Seal{Day: day, FirstSeq: x.FirstSeq, LastSeq: x.LastSeq, Count: x.Count, Hash: sum[:],
		Signed: signed, Token: token, Created: s.d.Now()}
	if prev != nil {
		seal.PrevHash = prev.Hash
	}
	ef, pf, tf := s.Files(day)
	// Files without a seal in the store are what an interrupted Seal left (for example the
	// store was busy at PutSeal): keep them aside, never overwrite or delete them.
	for _, f := range []string{ef, pf, tf} {
		if _, err := os.Stat(f); err == nil {
			aside := f + ".unfinished-" + s.d.Now().UTC().Format("20060102T150405.000000000")
			if err := os.Rename(f, aside); err != nil {
				return nil, fmt.Errorf("seal: %w", err)
			}
			s.d.Logger.Warn("files of an unfinished seal set aside", slog.String("day", day), slog.String("file", aside))
		}
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{ef, x.Data}, {pf, signed}, {tf, token}} {
		if err := writeFileSync(f.path, f.data); err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
	}
	if err := s.d.Store.PutSeal(ctx, seal); err != nil {
		return nil, err
	}
	s.d.Logger.Info("log day sealed", slog.String("day", day), slog.Int64("events", x.Count),
		slog.String("hash", fmt.Sprintf("%x", sum)))
	return &seal, nil
}

// sign makes a CMS SignedData carrying data (a .p7m), signed by the provider key with
// SHA-256 through pec/smime, the code that signs PEC messages.
func (s *Sealer) sign(data []byte) ([]byte, error) {
	signer, chain, err := s.d.Keyring.SignerFor(s.d.Domain)
	if err != nil {
		return nil, fmt.Errorf("seal: signer: %w", err)
	}
	if len(chain) == 0 {
		return nil, errors.New("seal: signer has no certificate")
	}
	p7m, err := smime.SignCMS(data, signer, chain, smime.CMSOptions{Hash: crypto.SHA256, SigningTime: s.d.Now()})
	if err != nil {
		return nil, fmt.Errorf("seal: signing: %w", err)
	}
	return p7m, nil
}

// writeFileSync writes a file atomically (temporary file, fsync, rename, fsync of the
// directory) and refuses to replace an existing one: sealed files are write-once.
func writeFileSync(path string, data []byte) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite a sealed file", filepath.Base(path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	// Sealed files are the provider's and its auditors' (issue 12 item 10): 0440 exactly,
	// whatever the umask. A temporary file left by a crash would keep its own mode under
	// O_TRUNC, so it goes first.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o440)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o440); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SealDue seals every day that is over and not sealed yet, from the day after the last
// seal (or, with no seal at all, the day of the first event) up to yesterday. One node runs
// it (take the store lease "seal" when several nodes share the store).
func (s *Sealer) SealDue(ctx context.Context) ([]string, error) {
	now := s.d.Now().In(s.d.Location)
	today := now.Format("2006-01-02")
	var next string
	last, err := s.d.Store.LastSeal(ctx, today)
	switch {
	case err == nil:
		next = nextDay(last.Day)
	case errors.Is(err, store.ErrNotFound):
		var first *store.Event
		err := s.d.Store.ScanLog(ctx, store.Query{Limit: 1}, func(e *store.Event) error { first = e; return nil })
		if err != nil {
			return nil, err
		}
		if first == nil {
			return nil, nil
		}
		next = first.Time.In(s.d.Location).Format("2006-01-02")
	default:
		return nil, err
	}
	var done []string
	for next < today {
		_, end, _ := DayBounds(next, s.d.Location)
		if now.Before(end.Add(s.cfg.Grace)) {
			break
		}
		if _, err := s.Seal(ctx, next); err != nil {
			return done, err
		}
		done = append(done, next)
		next = nextDay(next)
	}
	return done, nil
}

func nextDay(day string) string {
	d, _ := time.Parse("2006-01-02", day)
	return d.AddDate(0, 0, 1).Format("2006-01-02")
}

// Run seals due days every interval until ctx ends, holding the store lease "seal" so that
// only one of several processes or nodes does it.
func (s *Sealer) Run(ctx context.Context, owner string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if ok, err := s.d.Store.TryLease(ctx, "seal", owner, 2*interval); err == nil && ok {
			if days, err := s.SealDue(ctx); err != nil {
				s.d.Logger.Error("daily log seal failed", slog.Any("err", err), slog.Any("sealed", days))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
