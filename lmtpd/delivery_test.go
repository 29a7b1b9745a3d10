package lmtpd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/lmtpd/dovecottest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The delivery server on a real listener, Postfix played by go-smtp's LMTP client, Dovecot
// by dovecottest; assertions on the replies on the wire, the fake mailboxes and the store.

type index map[string]bool

func (i index) Certified(d string) bool { return i[strings.ToLower(d)] }

var (
	provA = pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test"}
	provB = pec.Identity{Name: "Provider B S.p.A.", Domain: "pec-b.test", ServiceAddress: "posta-certificata@pec-b.test",
		ReceiptAddress: "ricevute@pec-b.test"}
)

type fixture struct {
	kr   *hsmtest.Keyring
	st   *storetest.Memory
	dv   *dovecottest.Server
	eng  *pec.Engine
	srv  *DeliveryServer
	addr string
	reg  *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{kr: hsmtest.New(t, "Provider", "pec-a.test", "pec-b.test"), st: storetest.NewMemory(),
		dv: dovecottest.New(t, "bruno@pec-b.test", "bianca@pec-b.test", "piena@pec-b.test"), reg: prometheus.NewRegistry()}
	f.dv.SetFull("piena@pec-b.test", true)
	cd := clamdtest.New(t)
	sc, err := clamd.New(clamd.Config{Addr: cd.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	look, err := NewDoveadm(DoveadmConfig{URL: f.dv.APIURL(), APIKey: dovecottest.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	f.eng, err = pec.New(pec.Config{Identities: []pec.Identity{provB}, Node: "mx1"},
		pec.Deps{Keys: f.kr, Index: index{"pec-a.test": true, "pec-b.test": true}, Scanner: sc, Store: f.st, Mailboxes: look})
	if err != nil {
		t.Fatal(err)
	}
	f.start(t)
	return f
}

// start runs a delivery server (again, as after a restart) on a fresh listener.
func (f *fixture) start(t *testing.T) {
	t.Helper()
	if _, err := NewDeliveryServer(DeliveryConfig{MaxSize: 1}, DeliveryDeps{Engine: f.eng}); err == nil {
		t.Fatal("a server without mail store was built")
	}
	f.reg = prometheus.NewRegistry()
	srv, err := NewDeliveryServer(DeliveryConfig{Hostname: "mx.pec-b.test", MaxSize: 10 << 20, Timeout: 20 * time.Second},
		DeliveryDeps{Engine: f.eng, Mailstore: dovecotClient(t, f.dv.Addr()), Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv, f.addr = srv, ln.Addr().String()
	go srv.Serve(ln)                                         //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown(context.Background()) }) //nolint:errcheck
}

// dovecotClient is the delivery point's Dovecot client for addr, closed at the test's end.
func dovecotClient(t *testing.T, addr string) *Dovecot {
	t.Helper()
	dv, err := NewDovecot(DovecotConfig{Addr: addr, Hostname: "mx.pec-b.test", Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dv.Close() })
	return dv
}

// busta builds a busta of provider A from alice, as Postfix hands it over.
func (f *fixture) busta(t *testing.T, hdr ...string) []byte {
	t.Helper()
	h := append([]string{"From: alice@pec-a.test", "Subject: Prova", "Message-ID: <c1@client.example>"}, hdr...)
	orig, err := pec.ParseOriginal([]byte(strings.Join(h, "\r\n") + "\r\n\r\nTesto.\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	ref := pec.NewTimeRef(time.Now(), nil)
	id, _ := pec.NewIdentificativo(ref.Time(), "ap", "pec-a.test", nil)
	tx := pec.NewSubmissionTransaction(id, orig, pec.Envelope{MailFrom: "alice@pec-a.test"}, func(string) daticert.RecipientType { return daticert.Certificato })
	m, err := (&pec.Builder{ID: provA, Keys: f.kr}).Busta(ref, tx, orig)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("Received: from mx.pec-a.test by mx.pec-b.test (Postfix) with ESMTPS id 4XyZ12 for <x>; now\r\n"), m.Bytes()...)
}

// send plays Postfix's LMTP client: one transaction, the reply of each recipient ("" for 2xx).
func (f *fixture) send(t *testing.T, msg []byte, rcpts ...string) map[string]string {
	t.Helper()
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(conn)
	defer c.Close()
	if err := c.Hello("postfix.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@pec-a.test", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s refused: %v (the delivery point answers after DATA)", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(msg) //nolint:errcheck
	resp, err := w.CloseWithLMTPResponse()
	out := map[string]string{}
	for r := range resp {
		out[r] = ""
	}
	var le smtp.LMTPDataError
	if errors.As(err, &le) {
		for r, e := range le {
			out[r] = e.Error()
		}
	} else if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) outbox(t *testing.T) []store.OutboxItem {
	t.Helper()
	items, err := f.st.ListOutbox(context.Background(), store.OutboxPending, 100)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// One transaction with a stored recipient, one unknown to Dovecot and one over quota:
// Postfix gets 250 for all three (the sender is told through PEC, not a DSN); one copy in
// bruno's mailbox; one consegna and two avvisi in the outbox; the metrics count them.
func TestDeliveryPerRecipient(t *testing.T) {
	f := newFixture(t)
	m := f.busta(t, "To: bruno@pec-b.test, nessuno@pec-b.test, piena@pec-b.test")
	got := f.send(t, m, "bruno@pec-b.test", "nessuno@pec-b.test", "piena@pec-b.test")
	for r, reply := range got {
		if reply != "" {
			t.Errorf("%s: %s, want 250", r, reply)
		}
	}
	if n := len(f.dv.Messages("bruno@pec-b.test")); n != 1 {
		t.Errorf("bruno holds %d copies", n)
	}
	if n := len(f.dv.Messages("piena@pec-b.test")); n != 0 {
		t.Errorf("the full mailbox holds %d copies", n)
	}
	kinds := map[string]int{}
	for _, it := range f.outbox(t) {
		kinds[it.Kind]++
	}
	if kinds["consegna-completa"] != 1 || kinds["mancata-consegna"] != 2 || len(kinds) != 2 {
		t.Errorf("outbox kinds %v", kinds)
	}
	if v := value(f.srv.m.deliveries.WithLabelValues(pec.DeliveredFailed, "mancata-consegna")); v != 2 {
		t.Errorf("pec_deliveries_total{mancata-consegna} = %v", v)
	}
	if v := value(f.srv.m.deliveries.WithLabelValues(pec.DeliveredReceipt, "completa")); v != 1 {
		t.Errorf("pec_deliveries_total{consegna,completa} = %v", v)
	}
	// Postfix retries after a lost reply: acknowledged, nothing stored or emitted.
	f.send(t, m, "bruno@pec-b.test", "nessuno@pec-b.test")
	if n := len(f.dv.Messages("bruno@pec-b.test")); n != 1 {
		t.Errorf("after the retry bruno holds %d copies", n)
	}
	if n := len(f.outbox(t)); n != 3 {
		t.Errorf("after the retry the outbox has %d items", n)
	}
}

// Dovecot down or refusing for now: a 4xx for each recipient, nothing recorded.
func TestDeliveryDovecotUnavailable(t *testing.T) {
	f := newFixture(t)
	m := f.busta(t, "To: bruno@pec-b.test")
	f.dv.SetMode(dovecottest.TempFail)
	if got := f.send(t, m, "bruno@pec-b.test"); !strings.HasPrefix(got["bruno@pec-b.test"], "SMTP error 451") {
		t.Errorf("Dovecot 451: reply %q", got["bruno@pec-b.test"])
	}
	f.dv.Stop()
	if got := f.send(t, m, "bruno@pec-b.test"); !strings.HasPrefix(got["bruno@pec-b.test"], "SMTP error 451") {
		t.Errorf("Dovecot down: reply %q", got["bruno@pec-b.test"])
	}
	if n := len(f.outbox(t)); n != 0 {
		t.Errorf("%d receipts while Dovecot could not store", n)
	}
}

// Dovecot stored the message and the answer was lost: 4xx; Postfix's retry finds the copy
// through doveadm, stores nothing more and emits the one receipt.
func TestDeliveryAnswerLostAfterData(t *testing.T) {
	f := newFixture(t)
	m := f.busta(t, "To: bruno@pec-b.test")
	f.dv.SetMode(dovecottest.DropConn)
	if got := f.send(t, m, "bruno@pec-b.test"); !strings.HasPrefix(got["bruno@pec-b.test"], "SMTP error 4") {
		t.Fatalf("answer lost: reply %q", got["bruno@pec-b.test"])
	}
	f.dv.SetMode(dovecottest.Normal)
	if got := f.send(t, m, "bruno@pec-b.test"); got["bruno@pec-b.test"] != "" {
		t.Fatalf("retry: reply %q", got["bruno@pec-b.test"])
	}
	if n := len(f.dv.Messages("bruno@pec-b.test")); n != 1 {
		t.Errorf("bruno holds %d copies, want 1", n)
	}
	if items := f.outbox(t); len(items) != 1 || items[0].Kind != "consegna-completa" {
		t.Errorf("outbox %+v, want one consegna", items)
	}
	if v := value(f.srv.m.recovered); v != 1 {
		t.Errorf("pec_delivery_recovered_total = %v", v)
	}
}

// Dovecot shutting down after storing answers 421 in place of the first recipient's reply
// and closes: no recipient is answered, none is refused; the retry finds both copies through
// doveadm and stores neither again.
func TestDeliveryDovecotShutdownAfterData(t *testing.T) {
	f := newFixture(t)
	m := f.busta(t, "To: bruno@pec-b.test, bianca@pec-b.test")
	f.dv.SetMode(dovecottest.Shutdown)
	for r, reply := range f.send(t, m, "bruno@pec-b.test", "bianca@pec-b.test") {
		if !strings.HasPrefix(reply, "SMTP error 451") {
			t.Errorf("%s during Dovecot's shutdown: %q, want 451", r, reply)
		}
	}
	f.dv.SetMode(dovecottest.Normal)
	f.send(t, m, "bruno@pec-b.test", "bianca@pec-b.test")
	for _, u := range []string{"bruno@pec-b.test", "bianca@pec-b.test"} {
		if n := len(f.dv.Messages(u)); n != 1 {
			t.Errorf("%s holds %d copies, want 1", u, n)
		}
	}
	if n := len(f.outbox(t)); n != 2 {
		t.Errorf("%d receipts, want 2", n)
	}
}

// Ordinary mail (made on this host: a bounce of our own Postfix) reaches Dovecot inside a busta
// di anomalia signed by us; refused by Dovecot it keeps Dovecot's status with our own text
// (Postfix bounces it as plain mail, RFC 6109 §2.2.3); sent twice it is stored once (the
// busta keeps the original's Message-ID, which keys the mailbox's record).
func TestDeliveryOrdinaryMail(t *testing.T) {
	f := newFixture(t)
	plain := []byte("From: o@posta.test\r\nTo: bruno@pec-b.test\r\nSubject: x\r\nMessage-ID: <o1@posta.test>\r\n\r\nhi\r\n")
	got := f.send(t, plain, "nessuno@pec-b.test", "bruno@pec-b.test")
	if r := got["nessuno@pec-b.test"]; !strings.Contains(r, "550") || !strings.Contains(r, "Mailbox unknown") {
		t.Errorf("ordinary mail to an unknown user: %q", r)
	}
	f.send(t, plain, "bruno@pec-b.test")
	msgs := f.dv.Messages("bruno@pec-b.test")
	if len(msgs) != 1 {
		t.Fatalf("bruno holds %d copies of ordinary mail sent twice, want 1", len(msgs))
	}
	if c := pec.Classify(msgs[0], pec.ClassifyOptions{}); c.Kind != pec.KindAnomalia || c.Verified == nil || !bytes.Equal(c.Postacert, plain) {
		t.Errorf("bruno's copy is %v (signature %v), want a signed busta di anomalia around the message", c.Kind, c.SigErr)
	}
}

// The Dovecot client reuses its connection and dials again when Dovecot closed it.
func TestDovecotReuse(t *testing.T) {
	dv := dovecottest.New(t, "bruno@pec-b.test")
	c := dovecotClient(t, dv.Addr())
	msg := []byte("Message-ID: <r@x>\r\n\r\nhi\r\n")
	for range 3 {
		if res := c.Deliver(context.Background(), "a@x", []string{"bruno@pec-b.test"}, msg); res["bruno@pec-b.test"].Code != 250 {
			t.Fatalf("%+v", res)
		}
	}
	if len(c.idle) != 1 {
		t.Errorf("%d idle connections after 3 sequential deliveries, want 1 reused", len(c.idle))
	}
	c.idle[0].Close() // Dovecot dropped the idle connection
	if res := c.Deliver(context.Background(), "a@x", []string{"bruno@pec-b.test", "x@pec-b.test"}, msg); res["bruno@pec-b.test"].Code != 250 ||
		res["x@pec-b.test"].Code != 550 || res["x@pec-b.test"].Enhanced != "5.1.1" {
		t.Fatalf("after a dropped connection: %+v", res)
	}
	if n := len(dv.Messages("bruno@pec-b.test")); n != 4 {
		t.Errorf("%d copies, want 4", n)
	}
}

func TestDoveadmLookup(t *testing.T) {
	dv := dovecottest.New(t, "bruno@pec-b.test")
	look, err := NewDoveadm(DoveadmConfig{URL: dv.APIURL(), APIKey: dovecottest.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewDovecot(DovecotConfig{Addr: dv.Addr()}, nil)
	defer c.Close()
	c.Deliver(context.Background(), "a@x", []string{"bruno+pec@pec-b.test"}, []byte("Message-ID:  <id-1@pec-a.test>\r\n\r\nx\r\n"))
	for _, tc := range []struct {
		mailbox, id string
		want        bool
	}{
		{"bruno@pec-b.test", "<id-1@pec-a.test>", true},
		{"Bruno+pec@PEC-B.test", "<id-1@pec-a.test>", true}, // the extension is not part of the user
		{"bruno@pec-b.test", "<id-2@pec-a.test>", false},
		{"nessuno@pec-b.test", "<id-1@pec-a.test>", false}, // unknown user: exit code 67
	} {
		got, err := look.Holds(context.Background(), tc.mailbox, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("Holds(%s, %s) = %v, %v; want %v", tc.mailbox, tc.id, got, err, tc.want)
		}
	}
	bad, _ := NewDoveadm(DoveadmConfig{URL: dv.APIURL(), APIKey: "wrong"})
	if _, err := bad.Holds(context.Background(), "bruno@pec-b.test", "<id-1@pec-a.test>"); err == nil {
		t.Error("a refused API key gave an answer")
	}
	for _, b := range []string{`[["error",{"type":"exitCode","exitCode":75},"s"]]`, `{}`, `[["weird",1,"s"]]`} {
		if _, err := parseSearch([]byte(b)); err == nil {
			t.Errorf("parseSearch(%s): no error", b)
		}
	}
}

func TestQueueID(t *testing.T) {
	for msg, want := range map[string]string{
		"Received: from a by mx (Postfix) with ESMTPS id 4XyZ12ab\r\n\tfor <b>; Tue\r\nX: y\r\n\r\n": "4XyZ12ab",
		"Received: from a by mx (Postfix) with ESMTPS id 4XyZ;\r\n\r\n":                              "4XyZ",
		"From: a\r\nReceived: by x id nope\r\n\r\n":                                                  "",
	} {
		if got := queueID([]byte(msg)); got != want {
			t.Errorf("queueID(%q) = %q, want %q", msg, got, want)
		}
	}
}

// value reads a counter.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// With the memory budget spent by the transactions under way, a delivery gets 451 4.3.0 for
// each recipient and nothing is stored (Postfix retries); once memory is free again the
// same busta is delivered. The budget a large delivery reserves is given back after it.
func TestDeliveryMemoryBudget(t *testing.T) {
	f := newFixture(t)
	m := f.busta(t, "To: bruno@pec-b.test")
	spent := f.srv.cfg.MaxBuffered - int64(len(m))/2
	if !f.srv.reserve(spent) {
		t.Fatal("could not take the budget")
	}
	got := f.send(t, m, "bruno@pec-b.test", "bianca@pec-b.test")
	for _, r := range []string{"bruno@pec-b.test", "bianca@pec-b.test"} {
		if !strings.HasPrefix(got[r], "SMTP error 451") || !strings.Contains(got[r], "Too many messages in progress") {
			t.Errorf("%s with the budget spent: %q, want 451", r, got[r])
		}
	}
	if n := len(f.dv.Messages("bruno@pec-b.test")); n != 0 {
		t.Fatalf("%d copies stored without memory for the message", n)
	}
	f.srv.release(spent)
	if got := f.send(t, m, "bruno@pec-b.test"); got["bruno@pec-b.test"] != "" {
		t.Fatalf("after the budget came back: %q", got["bruno@pec-b.test"])
	}
	if n := len(f.dv.Messages("bruno@pec-b.test")); n != 1 {
		t.Errorf("%d copies, want 1", n)
	}
	f.srv.mu.Lock()
	left := f.srv.buffered
	f.srv.mu.Unlock()
	if left != 0 {
		t.Errorf("%d bytes of the budget still reserved after the deliveries", left)
	}
}
