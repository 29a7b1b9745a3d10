package pec_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/store"
)

// signCounter reports every signature made with its keys on signed.
type signCounter struct {
	pec.Signer
	signed chan struct{}
}

type countedKey struct {
	crypto.Signer
	signed chan struct{}
}

func (s signCounter) SignerFor(d string) (crypto.Signer, []*x509.Certificate, error) {
	k, chain, err := s.Signer.SignerFor(d)
	return countedKey{k, s.signed}, chain, err
}

func (k countedKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.Signer.Sign(r, digest, opts)
	k.signed <- struct{}{}
	return sig, err
}

// gatedScanner gives its verdict only once the busta and the accettazione have been signed
// (two signatures), and an error if they are not signed within a few seconds: the access
// point builds them while clamd scans (issue 19, pec/scan.go).
type gatedScanner struct {
	signed chan struct{}
	virus  string
}

func (g gatedScanner) Scan(ctx context.Context, r io.Reader) (string, error) {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return "", err
	}
	for range 2 {
		select {
		case <-g.signed:
		case <-time.After(5 * time.Second):
			return "", errors.New("the busta was not signed while the scan ran")
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return g.virus, nil
}

func overlapEngine(t *testing.T, f *fixture, virus string) *pec.Engine {
	t.Helper()
	signed := make(chan struct{}, 8)
	eng, err := pec.New(pec.Config{Identities: []pec.Identity{provider}, Node: "test"},
		pec.Deps{Keys: signCounter{f.kr, signed}, Index: fakeIndex{"pec-a.test": true, "pec-b.test": true},
			Scanner: gatedScanner{signed: signed, virus: virus}, Store: f.st})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// The busta and the accettazione are signed while the antivirus scans, and the message is
// accepted with the verdict: with a scan that waits for the signatures, Submit succeeds.
func TestSubmitSignsWhileScanning(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	res, err := overlapEngine(t, f, "").Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if len(res.Busta) == 0 || res.Confirm == "" {
		t.Fatalf("no busta: %+v", res)
	}
}

// On a virus the busta and the accettazione signed during the scan are dropped: the store
// gets the avviso per virus and its event only: no busta, no accettazione.
func TestSubmitVirusDropsPreparedBusta(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	_, err := overlapEngine(t, f, clamdtest.EICARName).Submit(context.Background(), submission(good))
	var ref *pec.Refused
	if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus {
		t.Fatalf("err = %v, want the avviso per virus", err)
	}
	items := f.outbox(t)
	if len(items) != 1 || items[0].Kind != "non-accettazione-virus" {
		t.Fatalf("outbox = %+v", items)
	}
	evs := f.events(t)
	if len(evs) != 1 || evs[0].Kind != store.KindNonAccettazioneVirus {
		t.Fatalf("events = %+v", evs)
	}
}
