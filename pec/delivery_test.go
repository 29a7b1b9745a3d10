package pec_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// The delivery point (pec/delivery.go) of provider B, fed with bustas built by provider A's
// identity, against the in-memory store and a fake mailbox.

var providerB = pec.Identity{Name: "Provider B S.p.A.", Domain: "pec-b.test",
	ServiceAddress: "posta-certificata@pec-b.test", ReceiptAddress: "ricevute@pec-b.test"}

// fakeMailboxes is the mailbox store seen by the crash recovery: which messages each
// mailbox holds.
type fakeMailboxes struct {
	mu      sync.Mutex
	held    map[string]bool // mailbox + " " + Message-ID
	err     error
	lookups int
}

func (f *fakeMailboxes) Holds(ctx context.Context, mailbox, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	return f.held[strings.ToLower(mailbox)+" "+id], f.err
}

func (f *fakeMailboxes) put(mailbox, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[strings.ToLower(mailbox)+" "+id] = true
}

type dpFixture struct {
	eng   *pec.Engine
	kr    *hsmtest.Keyring
	st    *breakableStore
	mb    *fakeMailboxes
	sc    pec.Scanner
	now   time.Time
	clock pec.Clock
}

func newDP(t *testing.T) *dpFixture {
	t.Helper()
	f := &dpFixture{kr: hsmtest.New(t, "Provider", "pec-a.test", "pec-b.test"), st: &breakableStore{Memory: storetest.NewMemory()},
		mb: &fakeMailboxes{held: map[string]bool{}}, now: time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)}
	f.clock = pec.ClockFunc(func() time.Time { return f.now })
	cd := clamdtest.New(t)
	sc, err := clamd.New(clamd.Config{Addr: cd.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.sc = sc
	f.eng = f.engine(t, "")
	return f
}

// engine is another process of provider B on the same store (a restart, or another node when
// owner is set).
func (f *dpFixture) engine(t *testing.T, owner string) *pec.Engine {
	t.Helper()
	e, err := pec.New(pec.Config{Identities: []pec.Identity{providerB}, Node: "mx1", Delivery: pec.DeliveryConfig{Owner: owner}},
		pec.Deps{Keys: f.kr, Index: fakeIndex{"pec-a.test": true, "pec-b.test": true}, Scanner: f.sc, Store: f.st,
			Clock: f.clock, Mailboxes: f.mb})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// busta is a busta di trasporto of provider A from alice, as Postfix hands it to the
// delivery point (a Received field prepended), with its identificativo.
func (f *dpFixture) busta(t *testing.T, receipt string, hdr ...string) ([]byte, string) {
	t.Helper()
	h := append([]string{"From: Alice <alice@pec-a.test>", "Subject: Contratto", "Message-ID: <c1@client.example>",
		"Date: Sun, 22 Nov 2026 11:00:00 +0100"}, hdr...)
	if receipt != "" {
		h = append(h, "X-TipoRicevuta: "+receipt)
	}
	h = append(h, "MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="b1"`)
	body := "--b1\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n--b1\r\nContent-Type: application/pdf; name=\"c.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
	orig, err := pec.ParseOriginal([]byte(strings.Join(h, "\r\n") + "\r\n\r\n" + body))
	if err != nil {
		t.Fatal(err)
	}
	ref := pec.NewTimeRef(f.now.Add(-time.Minute), nil)
	id, _ := pec.NewIdentificativo(ref.Time(), "ap", "pec-a.test", nil)
	tx := pec.NewSubmissionTransaction(id, orig, pec.Envelope{MailFrom: "alice@pec-a.test"}, func(string) daticert.RecipientType { return daticert.Certificato })
	a := pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test"}
	m, err := (&pec.Builder{ID: a, Keys: f.kr}).Busta(ref, tx, orig)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte("Received: from mx.pec-a.test by mx.pec-b.test with ESMTPS id 4XyZ\r\n"), m.Bytes()...), id
}

func (f *dpFixture) begin(t *testing.T, e *pec.Engine, m []byte, rcpts ...string) *pec.Delivery {
	t.Helper()
	d, err := e.BeginDelivery(context.Background(), &pec.DeliveryRequest{QueueID: "Q1", MailFrom: "alice@pec-a.test", Rcpts: rcpts, Message: m})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// deliver runs one transaction, the mailbox store answering res per forwarded recipient (a
// missing entry: stored), and returns the outcomes by recipient.
func (f *dpFixture) deliver(t *testing.T, e *pec.Engine, m []byte, res map[string]pec.MailboxResult, rcpts ...string) map[string]pec.RcptOutcome {
	t.Helper()
	d := f.begin(t, e, m, rcpts...)
	id := d.MessageID()
	for _, r := range d.Forward() {
		rr, ok := res[r]
		if !ok {
			rr = pec.Stored
		}
		if rr.Code >= 200 && rr.Code < 300 || rr.Unknown {
			f.mb.put(r, id)
		}
		d.SetResult(r, rr)
	}
	out := map[string]pec.RcptOutcome{}
	for _, o := range d.Commit(context.Background()) {
		out[o.Rcpt] = o
	}
	return out
}

// receipts returns the receipts queued since the last call, classified (and marks them sent).
func (f *dpFixture) receipts(t *testing.T) []*pec.Classified {
	t.Helper()
	items, err := f.st.ClaimOutbox(context.Background(), store.Claim{Owner: "t", Lease: time.Hour, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []*pec.Classified
	for _, it := range items {
		if err := f.st.MarkOutbox(context.Background(), it.ID, "t", store.Mark{State: store.OutboxSent, At: f.now}); err != nil {
			t.Fatal(err)
		}
		if len(it.Rcpts) != 1 || it.Rcpts[0] != "alice@pec-a.test" || it.From != "posta-certificata@pec-b.test" {
			t.Errorf("outbox item %s: from %s to %v, want from B's service address to the reverse path", it.MessageID, it.From, it.Rcpts)
		}
		c := pec.Classify(it.Raw, pec.ClassifyOptions{})
		if c.Verified == nil || c.Daticert == nil || !c.Conforms() {
			t.Fatalf("receipt %s: signature %v, deviations %+v", it.MessageID, c.SigErr, c.Deviations)
		}
		out = append(out, c)
	}
	return out
}

func (f *dpFixture) kinds(t *testing.T, evs ...store.EventKind) map[store.EventKind]int {
	t.Helper()
	n := map[store.EventKind]int{}
	_ = f.st.ScanLog(context.Background(), store.Query{Kinds: evs}, func(e *store.Event) error { n[e.Kind]++; return nil })
	return n
}

// A busta To bruno and Cc bianca asking for breve: one avvenuta consegna per recipient, breve
// for the To recipient and sintetica for the Cc one, to the reverse path, with the busta's
// identificativo and one log event each; a retry after a lost reply stores and emits nothing.
func TestDeliveryConsegnaPerRecipient(t *testing.T) {
	f := newDP(t)
	m, id := f.busta(t, "breve", "To: bruno@pec-b.test", "Cc: bianca@pec-b.test")
	out := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test", "bianca@pec-b.test")
	want := map[string]pec.Kind{"bruno@pec-b.test": pec.KindConsegnaBreve, "bianca@pec-b.test": pec.KindConsegnaSintetica}
	for r, k := range want {
		if o := out[r]; o.Err != nil || o.Outcome != pec.DeliveredReceipt || o.Receipt != k {
			t.Errorf("%s: %+v, want %v", r, o, k)
		}
	}
	rs := f.receipts(t)
	if len(rs) != 2 {
		t.Fatalf("%d receipts, want 2", len(rs))
	}
	for _, c := range rs {
		if c.Kind != want[c.Daticert.Dati.Consegna] || c.Daticert.Dati.Identificativo != id || c.Daticert.Dati.Ricevuta != daticert.Breve {
			t.Errorf("receipt %v for %s, identificativo %s, ricevuta %s", c.Kind, c.Daticert.Dati.Consegna, c.Daticert.Dati.Identificativo, c.Daticert.Dati.Ricevuta)
		}
		if got, _ := c.Header.Get("From"); got != "posta-certificata@pec-b.test" {
			t.Errorf("receipt From %q", got)
		}
	}
	if n := f.kinds(t, store.KindConsegna)[store.KindConsegna]; n != 2 {
		t.Errorf("%d consegna events, want 2", n)
	}
	again := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test", "bianca@pec-b.test")
	for r, o := range again {
		if o.Err != nil || o.Outcome != pec.DeliveredDuplicate {
			t.Errorf("retry %s: %+v, want an acknowledged duplicate", r, o)
		}
	}
	if rs := f.receipts(t); len(rs) != 0 {
		t.Errorf("the retry emitted %d receipts", len(rs))
	}
	if n := f.kinds(t, store.KindConsegna)[store.KindConsegna]; n != 2 {
		t.Errorf("%d consegna events after the retry, want 2", n)
	}
}

// Dovecot refuses for good: an avviso di mancata consegna with errore and errore-esteso
// "<status> - <gestore> - <description>", 250 to Postfix (no DSN), the record closed so a
// retry emits nothing more.
func TestDeliveryPermanentRefusal(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: nessuno@pec-b.test, piena@pec-b.test, spenta@pec-b.test")
	res := map[string]pec.MailboxResult{
		"nessuno@pec-b.test": {Code: 550, Enhanced: "5.1.1", Text: "User doesn't exist"},
		"piena@pec-b.test":   {Code: 552, Enhanced: "5.2.2", Text: "Quota exceeded (mailbox for user is full)"},
		"spenta@pec-b.test":  {Code: 550, Enhanced: "5.2.1", Text: "disabled"},
	}
	out := f.deliver(t, f.eng, m, res, "nessuno@pec-b.test", "piena@pec-b.test", "spenta@pec-b.test")
	want := map[string]struct {
		errore daticert.Errore
		esteso string
	}{
		"nessuno@pec-b.test": {daticert.ErroreNoDest, "5.1.1 - Provider B S.p.A. - indirizzo non valido"},
		"piena@pec-b.test":   {daticert.ErroreAltro, "5.2.2 - Provider B S.p.A. - casella piena"},
		"spenta@pec-b.test":  {daticert.ErroreAltro, "5.2.1 - Provider B S.p.A. - casella disattivata"},
	}
	for r := range want {
		if o := out[r]; o.Err != nil || o.Outcome != pec.DeliveredFailed || o.Receipt != pec.KindMancataConsegna {
			t.Errorf("%s: %+v", r, o)
		}
	}
	rs := f.receipts(t)
	if len(rs) != 3 {
		t.Fatalf("%d avvisi, want 3", len(rs))
	}
	for _, c := range rs {
		w := want[c.Daticert.Dati.Consegna]
		if c.Kind != pec.KindMancataConsegna || c.Daticert.Errore != w.errore || c.Daticert.Dati.ErroreEsteso != w.esteso {
			t.Errorf("%s: %v errore %s esteso %q, want %s %q", c.Daticert.Dati.Consegna, c.Kind, c.Daticert.Errore, c.Daticert.Dati.ErroreEsteso, w.errore, w.esteso)
		}
	}
	again := f.deliver(t, f.eng, m, nil, "nessuno@pec-b.test")
	if o := again["nessuno@pec-b.test"]; o.Outcome != pec.DeliveredDuplicate {
		t.Errorf("retry after the avviso: %+v", o)
	}
	if n := f.kinds(t, store.KindMancataConsegna)[store.KindMancataConsegna]; n != 3 {
		t.Errorf("%d mancata consegna events, want 3", n)
	}
}

// A temporary refusal or an unreachable Dovecot: 4xx to Postfix and nothing recorded; past
// Delivery.MaxDelay after the busta's time reference, the avviso instead.
func TestDeliveryTemporaryThenAged(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	for _, res := range []pec.MailboxResult{
		{Code: 452, Enhanced: "4.2.2", Text: "Mailbox is full"},
		{Err: errors.New("dial tcp: connection refused")},
	} {
		out := f.deliver(t, f.eng, m, map[string]pec.MailboxResult{"bruno@pec-b.test": res}, "bruno@pec-b.test")
		o := out["bruno@pec-b.test"]
		if r := pec.Reply(o.Err); o.Outcome != pec.DeliveredTempfail || !r.Temporary() {
			t.Errorf("%+v: outcome %+v reply %v, want a temporary failure", res, o, r)
		}
		if res.Code == 452 && pec.Reply(o.Err).Enhanced != "4.2.2" {
			t.Errorf("Dovecot's status not kept: %v", pec.Reply(o.Err))
		}
	}
	if rs := f.receipts(t); len(rs) != 0 {
		t.Fatalf("%d receipts for temporary failures", len(rs))
	}
	f.now = f.now.Add(24*time.Hour + time.Minute)
	out := f.deliver(t, f.eng, m, map[string]pec.MailboxResult{"bruno@pec-b.test": {Err: errors.New("connection refused")}}, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Err != nil || o.Outcome != pec.DeliveredFailed {
		t.Fatalf("aged busta: %+v, want the avviso and 250", o)
	}
	rs := f.receipts(t)
	if len(rs) != 1 || rs[0].Daticert.Errore != daticert.ErroreAltro ||
		rs[0].Daticert.Dati.ErroreEsteso != "5.4.7 - Provider B S.p.A. - tempo massimo di consegna superato (casella non raggiungibile)" {
		t.Fatalf("aged avviso: %d receipts %+v", len(rs), rs)
	}
}

// The crash window: Dovecot stored the message, the process died before its commit. After
// the restart the record is open under our owner: the mailbox is asked, the message is not
// stored again and the receipt is committed once. Another node waits for the lease.
func TestDeliveryCrashWindow(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test, bianca@pec-b.test")
	d := f.begin(t, f.eng, m, "bruno@pec-b.test", "bianca@pec-b.test")
	f.mb.put("bruno@pec-b.test", d.MessageID()) // Dovecot stored bruno's copy; then SIGKILL
	other := f.engine(t, "pec-lmtpd/mx2")
	busy := f.deliver(t, other, m, nil, "bruno@pec-b.test")
	if o := busy["bruno@pec-b.test"]; o.Outcome != pec.DeliveredTempfail || !errors.Is(o.Err, pec.ErrDeliveryBusy) {
		t.Errorf("another node during the lease: %+v", o)
	}
	restarted := f.engine(t, "")
	d2 := f.begin(t, restarted, m, "bruno@pec-b.test", "bianca@pec-b.test")
	if fw := d2.Forward(); len(fw) != 1 || fw[0] != "bianca@pec-b.test" {
		t.Fatalf("after restart Forward = %v, want only bianca (bruno's copy is in the mailbox)", fw)
	}
	d2.SetResult("bianca@pec-b.test", pec.Stored)
	for _, o := range d2.Commit(context.Background()) {
		if o.Outcome != pec.DeliveredReceipt || o.Found != (o.Rcpt == "bruno@pec-b.test") {
			t.Errorf("%+v", o)
		}
	}
	if rs := f.receipts(t); len(rs) != 2 {
		t.Errorf("%d receipts, want one per recipient", len(rs))
	}
	if f.mb.lookups != 2 {
		t.Errorf("%d mailbox lookups, want 2 (one per open record)", f.mb.lookups)
	}
}

// A failed lookup leaves the record open and answers 4xx; a store that cannot commit turns
// every claimed recipient into 4xx and the retry recovers through the mailbox.
func TestDeliveryRecoveryFailures(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	d := f.begin(t, f.eng, m, "bruno@pec-b.test")
	id := d.MessageID()
	f.mb.put("bruno@pec-b.test", id)
	d.SetResult("bruno@pec-b.test", pec.Stored)
	f.st.broken = true
	for _, o := range d.Commit(context.Background()) {
		if !pec.Reply(o.Err).Temporary() {
			t.Errorf("commit failed, outcome %+v", o)
		}
	}
	f.st.broken = false
	f.mb.err = errors.New("doveadm: connection refused")
	out := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredTempfail {
		t.Errorf("lookup failed: %+v", o)
	}
	f.mb.err = nil
	out = f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredReceipt || !o.Found {
		t.Errorf("recovered: %+v", o)
	}
	if rs := f.receipts(t); len(rs) != 1 {
		t.Errorf("%d receipts, want 1", len(rs))
	}
}

// An answer lost after the data was sent: 4xx, record left open; the retry asks the mailbox.
func TestDeliveryUnknownResult(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	out := f.deliver(t, f.eng, m, map[string]pec.MailboxResult{"bruno@pec-b.test": {Err: errors.New("read: connection reset"), Unknown: true}}, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredTempfail {
		t.Fatalf("%+v", o)
	}
	out = f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredReceipt || !o.Found || f.mb.lookups != 1 {
		t.Fatalf("%+v lookups %d", o, f.mb.lookups)
	}
}

// Two transactions of the same busta in one process at once (two queue files): the second
// is told to try later while the first delivers.
func TestDeliveryConcurrentSameMessage(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	d1 := f.begin(t, f.eng, m, "bruno@pec-b.test")
	out := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; !errors.Is(o.Err, pec.ErrDeliveryBusy) {
		t.Errorf("second transaction: %+v", o)
	}
	d1.SetResult("bruno@pec-b.test", pec.Stored)
	d1.Commit(context.Background())
	out = f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredDuplicate {
		t.Errorf("after the first committed: %+v", o)
	}
}

// Receipts, notices and anomalies are delivered with no receipt, once per mailbox; a receipt
// is logged as consegna-ricevuta. Ordinary mail (which reaches the delivery point only when
// made on this host: a bounce of our own Postfix) is handed to the mailbox inside a busta di
// anomalia signed by us, once per mailbox, with one busta-anomalia event.
func TestDeliverySystemMessages(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	c := pec.Classify(m, pec.ClassifyOptions{})
	tx := pec.TransactionFrom(c.Daticert)
	acc, err := (&pec.Builder{ID: providerB, Keys: f.kr}).Accettazione(pec.NewTimeRef(f.now, nil), tx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		out := f.deliver(t, f.eng, acc.Bytes(), nil, "alice@pec-b.test")
		want := []string{pec.DeliveredSilently, pec.DeliveredDuplicate}[i]
		if o := out["alice@pec-b.test"]; o.Outcome != want || o.Receipt != pec.KindOrdinary {
			t.Errorf("receipt delivery %d: %+v, want %s", i, o, want)
		}
	}
	if n := f.kinds(t, store.KindConsegnaRicevuta)[store.KindConsegnaRicevuta]; n != 1 {
		t.Errorf("%d consegna-ricevuta events, want 1", n)
	}
	plain := []byte("From: o@posta.test\r\nTo: bruno@pec-b.test\r\nMessage-ID: <p@posta.test>\r\nSubject: x\r\n\r\nhi\r\n")
	d := f.begin(t, f.eng, plain, "bruno@pec-b.test")
	c = pec.Classify(d.Message(), pec.ClassifyOptions{})
	if d.Kind() != pec.KindAnomalia || c.Kind != pec.KindAnomalia || c.Verified == nil || !bytes.Equal(c.Postacert, plain) {
		t.Errorf("ordinary mail handed to the mailbox as %v (classified %v, signature %v, original inside %v), want a signed busta di anomalia around it",
			d.Kind(), c.Kind, c.SigErr, bytes.Equal(c.Postacert, plain))
	}
	if d.MessageID() != "<p@posta.test>" {
		t.Errorf("busta di anomalia keyed by %q, want the original's Message-ID", d.MessageID())
	}
	d.Abort(context.Background())
	for i := range 2 {
		out := f.deliver(t, f.eng, plain, map[string]pec.MailboxResult{}, "bruno@pec-b.test")
		want := []string{pec.DeliveredSilently, pec.DeliveredDuplicate}[i]
		if o := out["bruno@pec-b.test"]; o.Outcome != want {
			t.Errorf("ordinary mail, delivery %d: %+v, want %s", i, o, want)
		}
	}
	if n := f.kinds(t, store.KindBustaAnomalia)[store.KindBustaAnomalia]; n != 1 {
		t.Errorf("%d busta-anomalia events, want 1", n)
	}
	out := f.deliver(t, f.eng, plain, map[string]pec.MailboxResult{"nobody@pec-b.test": {Code: 550, Enhanced: "5.1.1", Text: "User doesn't exist: nobody@pec-b.test"}}, "nobody@pec-b.test")
	r := pec.Reply(out["nobody@pec-b.test"].Err)
	if r.Code != 550 || r.Enhanced != "5.1.1" || strings.Contains(r.Text, "doesn't") {
		t.Errorf("ordinary mail refused: %v, want Dovecot's status with our own text", r)
	}
	if rs := f.receipts(t); len(rs) != 0 {
		t.Errorf("%d receipts for system or ordinary messages", len(rs))
	}
}

// A busta whose signature does not verify gets no receipt (RFC 6109 §3.3: only a valid busta).
func TestDeliveryInvalidBustaNoReceipt(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	m = bytes.Replace(m, []byte("In allegato."), []byte("In allegatO."), 1)
	out := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredSilently || !strings.Contains(o.Detail, "firma") {
		t.Errorf("%+v", o)
	}
	if rs := f.receipts(t); len(rs) != 0 {
		t.Errorf("%d receipts for a tampered busta", len(rs))
	}
}

// A busta for a domain we do not serve: avviso no-dominio, never handed to Dovecot; same
// provider: our own sender's tracking row moves at once.
func TestDeliveryNoDominioAndOwnTracking(t *testing.T) {
	f := newDP(t)
	m, id := f.busta(t, "", "To: bruno@pec-b.test, x@altro.test")
	commitBatch(t, f.st, &store.Batch{Inserts: []store.TrackInsert{{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: f.now}}})
	d := f.begin(t, f.eng, m, "bruno@pec-b.test", "x@altro.test")
	if fw := d.Forward(); len(fw) != 1 || fw[0] != "bruno@pec-b.test" {
		t.Fatalf("Forward = %v", fw)
	}
	d.SetResult("bruno@pec-b.test", pec.Stored)
	d.Commit(context.Background())
	var errore daticert.Errore
	for _, c := range f.receipts(t) {
		if c.Kind == pec.KindMancataConsegna {
			errore = c.Daticert.Errore
		}
	}
	if errore != daticert.ErroreNoDominio {
		t.Errorf("avviso for the unserved domain: errore %q", errore)
	}
	rows, _ := f.st.Tracking(context.Background(), id)
	if len(rows) != 1 || rows[0].State != store.StateDelivered {
		t.Errorf("tracking after our own consegna: %+v", rows)
	}
}

// Abort releases the records: the next attempt delivers.
func TestDeliveryAbort(t *testing.T) {
	f := newDP(t)
	m, _ := f.busta(t, "", "To: bruno@pec-b.test")
	d := f.begin(t, f.eng, m, "bruno@pec-b.test")
	d.Abort(context.Background())
	d.Abort(context.Background())
	out := f.deliver(t, f.eng, m, nil, "bruno@pec-b.test")
	if o := out["bruno@pec-b.test"]; o.Outcome != pec.DeliveredReceipt || o.Found || f.mb.lookups != 0 {
		t.Errorf("after abort: %+v (lookups %d)", o, f.mb.lookups)
	}
}

func commitBatch(t *testing.T, s store.Store, b *store.Batch) {
	t.Helper()
	if err := s.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// A busta of our own sender (both domains are ours) delivered before Postfix confirmed it at
// the access point, its tracking rows still held: the delivery itself proves that Postfix
// queued the busta, so its commit releases the held step (the rows) and moves the row with
// the consegna, once; the confirmation that comes later commits nothing more.
func TestDeliveryOwnBustaBeforeConfirm(t *testing.T) {
	f := newDP(t)
	a := pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test", ServiceAddress: "posta-certificata@pec-a.test"}
	e, err := pec.New(pec.Config{Identities: []pec.Identity{providerB, a}, Node: "mx1"},
		pec.Deps{Keys: f.kr, Index: fakeIndex{"pec-a.test": true, "pec-b.test": true}, Scanner: f.sc, Store: f.st, Clock: f.clock, Mailboxes: f.mb})
	if err != nil {
		t.Fatal(err)
	}
	m, id := f.busta(t, "", "To: bruno@pec-b.test")
	h := store.Held{Token: "tok-await", Key: "key-await", Identificativo: id, State: store.HeldWaiting, Created: f.now, Expires: f.now.Add(time.Hour)}
	h.OnConfirm.Track(store.TrackInsert{Identificativo: id, Recipient: "bruno@pec-b.test", SentAt: f.now})
	commitBatch(t, f.st, &store.Batch{Holds: []store.Held{h}})
	if o := f.deliver(t, e, m, nil, "bruno@pec-b.test")["bruno@pec-b.test"]; o.Outcome != pec.DeliveredReceipt {
		t.Fatalf("before the confirmation: %+v, want the consegna", o)
	}
	if rs := f.receipts(t); len(rs) != 1 || rs[0].Kind != pec.KindConsegnaCompleta {
		t.Fatalf("%d receipts, want one consegna", len(rs))
	}
	if rows, _ := f.st.Tracking(context.Background(), id); len(rows) != 1 || rows[0].State != store.StateDelivered {
		t.Errorf("tracking: %+v", rows)
	}
	c, err := f.st.Confirm(context.Background(), h.Token, f.now)
	if err != nil || c.State != store.HeldReleased {
		t.Fatalf("confirmation after the delivery: %+v %v", c, err)
	}
	if rs := f.receipts(t); len(rs) != 0 {
		t.Errorf("the confirmation queued %d more receipts", len(rs))
	}
	if rows, _ := f.st.Tracking(context.Background(), id); len(rows) != 1 || rows[0].State != store.StateDelivered {
		t.Errorf("tracking after the confirmation: %+v", rows)
	}
}
