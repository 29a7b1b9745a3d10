package pec_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/store"
)

// infected appends the EICAR test virus to a message's body.
func infected(m []byte) []byte {
	return append(append([]byte(nil), m...), []byte(clamdtest.EICAR+"\r\n")...)
}

// A virus in a formally wrong message: the virus wins (pec-spec.md §7.1 INFERENCE, access.go):
// the message is quarantined and the sender gets the avviso per virus only, never a second
// avviso for the formal error (issue 20 item 7).
func TestSubmitVirusInFormallyWrongMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  *pec.Submission
	}{
		{"bcc", submission(infected(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: bianca@pec-b.test", "Subject: fattura")), "bruno@pec-b.test")},
		{"from differs from login", submission(infected(msg("From: anna@pec-a.test", "To: bruno@pec-b.test", "Subject: fattura")), "bruno@pec-b.test")},
		{"rcpt not in to/cc", submission(infected(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: fattura")), "bruno@pec-b.test", "bianca@pec-b.test")},
		{"no to", submission(infected(msg("From: alice@pec-a.test", "Subject: fattura")), "bruno@pec-b.test")},
		{"malformed header", submission(infected([]byte("From: alice@pec-a.test\r\nTo bruno without colon\r\nSubject: fattura\r\n\r\n")), "bruno@pec-b.test")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			_, err := f.ap.Submit(context.Background(), tc.sub)
			var ref *pec.Refused
			if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus || ref.Virus != clamdtest.EICARName {
				t.Fatalf("err = %v, want the refusal for the virus", err)
			}
			if r := pec.Reply(err); r.Code != 554 || r.Outcome != pec.OutcomeVirus {
				t.Errorf("reply %v", r)
			}
			items := f.outbox(t)
			if len(items) != 1 || items[0].Kind != "non-accettazione-virus" || strings.Join(items[0].Rcpts, ",") != "alice@pec-a.test" {
				t.Fatalf("outbox = %+v, want one avviso per virus to the login", items)
			}
			c := classify(t, items[0].Raw, f.kr.CA)
			if c.Kind != pec.KindNonAccettazioneVirus || !c.Conforms() || c.Postacert != nil {
				t.Errorf("avviso %s conforms %v: %+v", c.Kind, c.Conforms(), c.Deviations)
			}
			q, err := f.st.Quarantined(context.Background(), ref.Identificativo)
			if err != nil || len(q) != 1 || !bytes.Equal(q[0].Raw, tc.sub.Message) || q[0].Virus != clamdtest.EICARName {
				t.Fatalf("quarantine = %+v, %v", q, err)
			}
			evs := f.events(t)
			if len(evs) != 1 || evs[0].Kind != store.KindNonAccettazioneVirus {
				t.Fatalf("events = %+v, want one non-accettazione-virus", evs)
			}
		})
	}
}

// A store failure while recording a refusal is a temporary failure (4xx): no avviso, event or
// quarantined copy is committed, and the retry once the store is back gets the refusal with
// exactly one avviso (issue 20 item 7).
func TestSubmitStoreFailsWhileRefusing(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  func() *pec.Submission
		kind pec.Kind
	}{
		{"formal error", func() *pec.Submission {
			return submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: bianca@pec-b.test", "Subject: s"), "bruno@pec-b.test")
		}, pec.KindNonAccettazione},
		{"virus", func() *pec.Submission {
			return submission(infected(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: s")), "bruno@pec-b.test")
		}, pec.KindNonAccettazioneVirus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			f.st.broken = true
			_, err := f.ap.Submit(context.Background(), tc.sub())
			var ref *pec.Refused
			if err == nil || errors.As(err, &ref) {
				t.Fatalf("err = %v, want a temporary failure", err)
			}
			if r := pec.Reply(err); !r.Temporary() || r.Code != 451 {
				t.Fatalf("reply %v, want 451", r)
			}
			if f.st.commits.Load() != 0 || len(f.outbox(t)) != 0 || len(f.events(t)) != 0 {
				t.Fatal("something was committed")
			}
			f.st.broken = false
			_, err = f.ap.Submit(context.Background(), tc.sub())
			if !errors.As(err, &ref) || ref.Kind != tc.kind {
				t.Fatalf("retry: %v", err)
			}
			items := f.outbox(t)
			if len(items) != 1 || items[0].Kind != tc.kind.String() {
				t.Fatalf("retry: outbox %+v", items)
			}
			q, _ := f.st.Quarantined(context.Background(), ref.Identificativo)
			if (tc.kind == pec.KindNonAccettazioneVirus) != (len(q) == 1) || len(q) > 1 {
				t.Fatalf("retry: quarantine %+v", q)
			}
		})
	}
}

// Subjects encoded in ISO-8859-1 and Windows-1252 (RFC 2047) are decoded for daticert
// oggetto and the texts, kept as written after the prefix in the Subject, and everything
// built conforms: the busta, the accettazione and a refusal (issue 20 item 7).
func TestSubmitLatin1AndCP1252Subjects(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"=?ISO-8859-1?Q?Fattura_n=B0_1_perch=E8_cos=EC?=", "Fattura n° 1 perchè così"},
		{"=?iso-8859-1?B?UGVyY2jpIGwnYXR0aXZpdOA=?=", "Perché l'attività"},
		{"=?windows-1252?Q?Offerta_=80_100_=96_=93saldo=94?=", "Offerta € 100 – “saldo”"},
		{"=?Windows-1252?Q?Citt=E0_=85_fine?=", "Città … fine"},
		{"Avviso =?iso-8859-1?q?perch=E8?= e =?utf-8?q?=E2=82=AC?=", "Avviso perchè e €"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			m := msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: "+tc.raw, "Message-ID: <l1@pec-a.test>")
			res, err := f.ap.Submit(context.Background(), submission(m, "bruno@pec-b.test"))
			if err != nil {
				t.Fatal(err)
			}
			f.confirm(t, res)
			busta := classify(t, bytes.Join(res.Busta, nil), f.kr.CA)
			acc := classify(t, f.outbox(t)[0].Raw, f.kr.CA)
			for _, c := range []*pec.Classified{busta, acc} {
				if !c.Conforms() || *c.Daticert.Intestazione.Oggetto != tc.want {
					t.Errorf("%s: oggetto %q, want %q; %+v", c.Kind, *c.Daticert.Intestazione.Oggetto, tc.want, c.Deviations)
				}
				if s, _ := c.Header.Get("Subject"); pec.DecodeHeader(s) != c.Kind.Info().Prefix+tc.want {
					t.Errorf("%s: Subject %q decodes to %q", c.Kind, s, pec.DecodeHeader(s))
				}
			}
			// The same subject on a refusal.
			_, err = f.ap.Submit(context.Background(), submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: x@pec-b.test", "Subject: "+tc.raw), "bruno@pec-b.test"))
			var ref *pec.Refused
			if !errors.As(err, &ref) {
				t.Fatalf("refusal: %v", err)
			}
			items := f.outbox(t)
			av := classify(t, items[len(items)-1].Raw, f.kr.CA)
			if av.Kind != pec.KindNonAccettazione || !av.Conforms() || *av.Daticert.Intestazione.Oggetto != tc.want {
				t.Errorf("avviso %s oggetto %q: %+v", av.Kind, *av.Daticert.Intestazione.Oggetto, av.Deviations)
			}
		})
	}
}
