package pec_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/internal/corpus"
	"github.com/gestore-pec/gestore/pec"
)

// FuzzReceive runs the reception point's classification and trust check, and what follows
// from them, on arbitrary message bytes, with a full fixture (index, anchors, CRL, fake clamd,
// memory store). Seeds: a valid busta and receipts of the fixture, a forged and a revoked
// busta, ordinary mail, the real corpus. Invariants: no panic; a result or a typed error (the
// only temporary failures a healthy fixture can give are none); a result's class and outcome
// agree with what the milter will do; an anomaly is a conforming busta di anomalia carrying
// the message as received; only a valid busta or receipt can put anything in the outbox.
func FuzzReceive(f *testing.F) {
	fx := newRxFix(f, pec.PolicyAnomaly)
	busta, tx := fx.busta(f, fx.a, "alice@pec-a.test", "bruno@pec-b.test")
	f.Add(busta)
	forged, _ := fx.busta(f, fx.f, "alice@pec-a.test", "bruno@pec-b.test")
	f.Add(forged)
	revoked, _ := fx.busta(f, fx.r, "rita@pec-r.test", "bruno@pec-b.test")
	f.Add(revoked)
	if m, err := fx.a.bd.Accettazione(ref(), tx); err == nil {
		f.Add(m.Bytes())
	}
	f.Add(rxMsg("From: oscar@posta.test", "To: bruno@pec-b.test", "Subject: ciao"))
	f.Add(rxMsg("From: x@y", "X-Ricevuta: presa-in-carico", "Content-Type: multipart/signed; boundary=z"))
	files, _ := filepath.Glob(corpus.Path("real", "*.eml"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		tm := time.AfterFunc(10*time.Second, func() { panic("WATCHDOG: Receive hangs") })
		defer tm.Stop()
		before := len(fx.outbox(t))
		res, err := fx.eng.Receive(context.Background(), &pec.Incoming{QueueID: "F", MailFrom: "x@posta.test",
			Rcpts: []string{"bruno@pec-b.test"}, Message: msg})
		var rej *pec.Rejected
		switch {
		case err != nil && errors.As(err, &rej):
			if rej.Virus == "" && !rej.TooBig {
				t.Fatalf("refusal under the anomaly policy: %v", err)
			}
			return
		case err != nil:
			t.Fatalf("error on a healthy fixture: %v", err)
		}
		switch res.Class {
		case pec.ClassBusta:
			if res.Confirm == "" && !res.Discard {
				t.Fatalf("busta neither held nor discarded: %+v", res)
			}
		case pec.ClassReceipt:
			if res.Replace != nil || res.Confirm != "" {
				t.Fatalf("receipt changed: %+v", res)
			}
		case pec.ClassOrdinary, pec.ClassInvalid:
			if res.Outcome != pec.OutcomeAnomaly || res.Reason == "" {
				t.Fatalf("not valid but %+v", res)
			}
			c := pec.Classify(bytes.Join(res.Replace, nil), pec.ClassifyOptions{})
			if c.Kind != pec.KindAnomalia || c.Verified == nil || string(c.Postacert) != string(pec.ToCRLF(msg)) {
				t.Fatalf("anomaly: kind %v sig %v", c.Kind, c.SigErr)
			}
			if len(fx.outbox(t)) != before {
				t.Fatal("a message that is not valid PEC produced a notice")
			}
		default:
			t.Fatalf("class %q", res.Class)
		}
	})
}
