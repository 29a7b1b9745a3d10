package milter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

// startRx is a harness whose engine answers Receive with fn.
func startRx(t *testing.T, fn func(context.Context, *pec.Incoming) (*pec.Received, error)) *harness {
	t.Helper()
	h := start(t, Config{}, accepted)
	h.eng.rfn = fn
	return h
}

// metric is the value of a counter with the given labels (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.GetHistogram() != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func mods(r result) (hdr []string, body []byte) {
	for _, m := range r.mods {
		if m.Type == milter.ActionReplaceBody {
			body = append(body, m.Body...)
			continue
		}
		hdr = append(hdr, m.String())
	}
	return hdr, body
}

// A valid busta: the engine sees the exact bytes and the envelope; the message is accepted
// unchanged with the confirmation recipient added without DSN, and the engine is told it was
// handed to Postfix.
func TestReceptionBusta(t *testing.T) {
	h := startRx(t, func(context.Context, *pec.Incoming) (*pec.Received, error) {
		return &pec.Received{Class: pec.ClassBusta, Outcome: pec.OutcomeAccepted, Kind: pec.KindBusta, Identificativo: "id-1@pec-a.test",
			Confirm: "tok9@confirm.pec.invalid", Timings: pec.ReceiveTimings{Verify: time.Millisecond}}, nil
	})
	s, macros := h.session(t, RoleReception)
	r := send(t, s, macros, trx{from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test", "bianca@pec-b.test"}, msg: []byte(busta)})
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("action %v", r.act)
	}
	got, body := mods(r)
	if strings.Join(got, "\n") != `AddRcpt "<tok9@confirm.pec.invalid>" "NOTIFY=NEVER"` || body != nil {
		t.Errorf("modifications %v body %q", got, body)
	}
	h.eng.mu.Lock()
	in := h.eng.ins[0]
	issued := strings.Join(h.eng.issued, ",")
	h.eng.mu.Unlock()
	if string(in.Message) != busta || in.MailFrom != "alice@pec-a.test" || in.QueueID != "4XyZ12AbC" ||
		strings.Join(in.Rcpts, ",") != "bruno@pec-b.test,bianca@pec-b.test" {
		t.Errorf("incoming %+v", in)
	}
	if issued != "tok9@confirm.pec.invalid" {
		t.Errorf("issued %q", issued)
	}
	if v := metric(t, h.reg, "pec_reception_messages_total", map[string]string{"class": "busta", "outcome": "accepted"}); v != 1 {
		t.Errorf("messages counter %v", v)
	}
	if v := metric(t, h.reg, "pec_reception_verify_seconds", nil); v != 1 {
		t.Errorf("verify histogram count %v", v)
	}
}

// An anomaly replaces the whole message (every field deleted, the anomaly's added, the body
// replaced); the envelope is untouched.
func TestReceptionAnomalyReplaces(t *testing.T) {
	anomaly := "Received: from mx\r\nSubject: ANOMALIA MESSAGGIO: x\r\nX-Trasporto: errore\r\n\r\nbody of the anomaly\r\n"
	h := startRx(t, func(context.Context, *pec.Incoming) (*pec.Received, error) {
		return &pec.Received{Class: pec.ClassOrdinary, Outcome: pec.OutcomeAnomaly, Reason: "ordinary", Replace: [][]byte{[]byte(anomaly)}}, nil
	})
	s, macros := h.session(t, RoleReception)
	r := send(t, s, macros, trx{from: "oscar@posta.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("action %v", r.act)
	}
	got, body := mods(r)
	want := []string{`ChangeHeader 3 "received" ""`, `ChangeHeader 1 "Message-ID" ""`, `ChangeHeader 1 "Subject" ""`,
		`ChangeHeader 1 "To" ""`, `ChangeHeader 1 "From" ""`, `ChangeHeader 2 "Received" ""`, `ChangeHeader 1 "Received" ""`,
		`AddHeader "Received" " from mx"`, `AddHeader "Subject" " ANOMALIA MESSAGGIO: x"`, `AddHeader "X-Trasporto" " errore"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || string(body) != "body of the anomaly\r\n" {
		t.Errorf("modifications:\n%s\nbody %q", strings.Join(got, "\n"), body)
	}
	if v := metric(t, h.reg, "pec_reception_anomalies_total", map[string]string{"reason": "ordinary"}); v != 1 {
		t.Errorf("anomalies counter %v", v)
	}
}

// A presa in carico addressed to a user goes to the service mailbox instead.
func TestReceptionRedirect(t *testing.T) {
	h := startRx(t, func(context.Context, *pec.Incoming) (*pec.Received, error) {
		return &pec.Received{Class: pec.ClassReceipt, Outcome: pec.OutcomeAccepted, Kind: pec.KindPresaInCarico,
			Redirect: "ricevute@pec-a.test", Drop: []string{"alice@pec-a.test"}}, nil
	})
	s, macros := h.session(t, RoleReception)
	r := send(t, s, macros, trx{from: "posta-certificata@pec-b.test", rcpts: []string{"alice@pec-a.test"}, msg: []byte(busta)})
	got, _ := mods(r)
	if r.act.Type != milter.ActionAccept || strings.Join(got, "\n") != "DelRcpt \"<alice@pec-a.test>\"\nAddRcpt \"<ricevute@pec-a.test>\" \"\"" {
		t.Fatalf("action %v modifications %v", r.act, got)
	}
}

// Discard (an infected busta, a retry of a queued one) and the refusals through pec.Reply.
func TestReceptionDiscardAndRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		res     *pec.Received
		err     error
		typ     milter.ActionType
		code    uint16
		reply   string
		class   string
		outcome string
	}{
		{"virus in busta", &pec.Received{Class: pec.ClassBusta, Outcome: pec.OutcomeVirus, Discard: true, Virus: "EICAR"}, nil,
			milter.ActionDiscard, 0, "", "busta", "virus"},
		{"duplicate", &pec.Received{Class: pec.ClassBusta, Outcome: pec.OutcomeDuplicate, Discard: true, Retry: true}, nil,
			milter.ActionDiscard, 0, "", "busta", "duplicate"},
		{"policy reject", nil, &pec.Rejected{Class: pec.ClassOrdinary, Reason: "ordinary", Detail: "x"},
			milter.ActionRejectWithCode, 550, "550 5.7.1 Not a valid PEC message (ordinary)", "ordinaria", "rejected"},
		{"infected ordinary", nil, &pec.Rejected{Class: pec.ClassOrdinary, Reason: "ordinary", Virus: "EICAR"},
			milter.ActionRejectWithCode, 554, "554 5.7.1 Message refused: virus found (EICAR)", "ordinaria", "virus"},
		{"temporary", nil, &pec.Temporary{Op: "revocation", Err: pec.ErrRevocationUnknown},
			milter.ActionRejectWithCode, 451, "451 4.3.0 Temporary failure", "unknown", "tempfail"},
		{"no outcome", nil, nil, milter.ActionRejectWithCode, 451, "451 4.3.0", "unknown", "tempfail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startRx(t, func(context.Context, *pec.Incoming) (*pec.Received, error) { return tc.res, tc.err })
			s, macros := h.session(t, RoleReception)
			r := send(t, s, macros, trx{from: "x@posta.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
			if r.act.Type != tc.typ || (tc.code != 0 && r.act.SMTPCode != tc.code) || !strings.HasPrefix(r.act.SMTPReply, tc.reply) || len(r.mods) != 0 {
				t.Fatalf("action %v (code %d) mods %v", r.act, r.act.SMTPCode, r.mods)
			}
			if v := metric(t, h.reg, "pec_reception_messages_total", map[string]string{"class": tc.class, "outcome": tc.outcome}); v != 1 {
				t.Errorf("messages{%s,%s} = %v", tc.class, tc.outcome, v)
			}
			if v := counter(t, h.reg, RoleReception, tc.outcome); v != 1 {
				t.Errorf("transactions{%s} = %v", tc.outcome, v)
			}
		})
	}
}

// Receive runs under the same deadline and progress packets as Submit.
func TestReceptionEngineTimeout(t *testing.T) {
	h := start(t, Config{Timeout: 50 * time.Millisecond, ProgressInterval: 10 * time.Millisecond}, accepted)
	h.eng.rfn = func(ctx context.Context, _ *pec.Incoming) (*pec.Received, error) {
		<-ctx.Done()
		return nil, &pec.Temporary{Op: "scan", Err: errors.New("slow clamd")}
	}
	s, macros := h.session(t, RoleReception)
	r := send(t, s, macros, trx{from: "x@posta.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.SMTPCode != 451 {
		t.Fatalf("action %v", r.act)
	}
}
