package pec_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
)

// infectedOfSize is a message from alice to rcpts carrying EICAR, padded to about size bytes.
func infectedOfSize(from string, size int, rcpts ...string) []byte {
	m := msg("From: "+from, "To: "+strings.Join(rcpts, ", "), "Subject: allegato",
		"Date: Sun, 22 Nov 2026 11:30:00 +0100", "MIME-Version: 1.0", "Content-Type: text/plain")
	m = append(m, []byte(clamdtest.EICAR+"\r\n")...)
	line := strings.Repeat("z", 76) + "\r\n"
	for len(m) < size {
		m = append(m, line...)
	}
	return m
}

// TestSubmitSizeBeforeScan: the size verdict comes before the antivirus (issue 12 item 9).
// A message over the size × recipients limit is refused with the avviso without being
// streamed to clamd, even when clamd is down or it carries a virus; within the limit a virus
// still wins over any formal exception (pec-spec.md §7.1 ordering).
func TestSubmitSizeBeforeScan(t *testing.T) {
	ctx := context.Background()
	lim := pec.Limits{MaxSizeTimesRecipients: 100_000}
	rcpts := []string{"bruno@pec-b.test", "bianca@pec-b.test"}

	t.Run("over the limit, infected", func(t *testing.T) {
		f := newFixture(t, lim)
		_, err := f.ap.Submit(ctx, submission(infectedOfSize("alice@pec-a.test", 60_000, rcpts...), rcpts...))
		var ref *pec.Refused
		var fe *pec.FormalError
		if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazione || !errors.As(err, &fe) || fe.Reason != pec.ReasonTooLarge {
			t.Fatalf("err = %v, want the avviso for size × recipients", err)
		}
		if n := f.clamd.Scans(); n != 0 {
			t.Errorf("clamd got %d streams, want none", n)
		}
		if q, _ := f.st.Quarantined(ctx, ref.Identificativo); len(q) != 0 {
			t.Errorf("an unscanned message was quarantined: %+v", q)
		}
	})
	t.Run("over the limit, clamd down", func(t *testing.T) {
		f := newFixture(t, lim)
		f.clamd.Close()
		_, err := f.ap.Submit(ctx, submission(infectedOfSize("alice@pec-a.test", 60_000, rcpts...), rcpts...))
		var fe *pec.FormalError
		if !errors.As(err, &fe) || fe.Reason != pec.ReasonTooLarge {
			t.Fatalf("err = %v, want the avviso, not a temporary failure", err)
		}
	})
	t.Run("over the limit and another exception", func(t *testing.T) {
		f := newFixture(t, lim)
		_, err := f.ap.Submit(ctx, submission(infectedOfSize("anna@pec-a.test", 60_000, rcpts...), rcpts...))
		var fe *pec.FormalError
		if !errors.As(err, &fe) || fe.Reason != pec.ReasonFromMismatch {
			t.Fatalf("err = %v, want the first formal exception (from-mismatch)", err)
		}
		if n := f.clamd.Scans(); n != 0 {
			t.Errorf("clamd got %d streams, want none", n)
		}
	})
	t.Run("within the limit, infected and formally wrong", func(t *testing.T) {
		f := newFixture(t, lim)
		_, err := f.ap.Submit(ctx, submission(infectedOfSize("anna@pec-a.test", 20_000, rcpts...), rcpts...))
		var ref *pec.Refused
		if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus || ref.Virus != clamdtest.EICARName {
			t.Fatalf("err = %v, want the avviso per virus (a virus wins)", err)
		}
		if n := f.clamd.Scans(); n != 1 {
			t.Errorf("clamd got %d streams, want 1", n)
		}
	})
	t.Run("within the limit, clean", func(t *testing.T) {
		f := newFixture(t, lim)
		clean := []byte(strings.Replace(string(infectedOfSize("alice@pec-a.test", 20_000, rcpts...)), clamdtest.EICAR, "pulito", 1))
		if _, err := f.ap.Submit(ctx, submission(clean, rcpts...)); err != nil {
			t.Fatalf("err = %v", err)
		}
		if n := f.clamd.Scans(); n != 1 {
			t.Errorf("clamd got %d streams, want 1", n)
		}
	})
}
