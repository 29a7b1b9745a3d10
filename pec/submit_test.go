package pec_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/hsm"
	"github.com/gestore-pec/gestore/hsm/hsmtest"
	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/clamd"
	"github.com/gestore-pec/gestore/pec/clamd/clamdtest"
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/smime"
	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// fakeIndex: pec-a.test and pec-b.test are certified.
type fakeIndex map[string]bool

func (f fakeIndex) Certified(d string) bool { return f[strings.ToLower(d)] }

// breakableSigner fails with hsm.ErrUnavailable while broken.
type breakableSigner struct {
	pec.Signer
	mu     sync.Mutex
	broken bool
}

func (b *breakableSigner) SignerFor(d string) (crypto.Signer, []*x509.Certificate, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken {
		return nil, nil, fmt.Errorf("token removed: %w", hsm.ErrUnavailable)
	}
	return b.Signer.SignerFor(d)
}

// breakableStore fails Commit while broken (and counts commits).
type breakableStore struct {
	*storetest.Memory
	broken       bool
	commits      atomic.Int64 // concurrent Submits commit at once (TestSubmitPreparedOncePerSubmission)
	beforeCommit func()       // called once before the next Commit, when set
}

func (b *breakableStore) Commit(ctx context.Context, batch *store.Batch) error {
	if b.broken {
		return &store.Temporary{Err: errors.New("database is locked")}
	}
	if b.beforeCommit != nil {
		b.beforeCommit()
	}
	b.commits.Add(1)
	return b.Memory.Commit(ctx, batch)
}

type fixture struct {
	ap     *pec.Engine
	kr     *hsmtest.Keyring
	signer *breakableSigner
	st     *breakableStore
	clamd  *clamdtest.Server
	now    time.Time
}

var provider = pec.Identity{Name: "Provider A S.p.A.", Domain: "pec-a.test",
	ServiceAddress: "posta-certificata@pec-a.test", ReceiptAddress: "ricevute@pec-a.test"}

func newFixture(t testing.TB, lim pec.Limits) *fixture {
	t.Helper()
	return newFixtureOpts(t, lim, pec.Options{})
}

func newFixtureOpts(t testing.TB, lim pec.Limits, opts pec.Options) *fixture {
	t.Helper()
	return newFixtureWith(t, lim, opts, nil)
}

func newFixtureWith(t testing.TB, lim pec.Limits, opts pec.Options, in pec.Inspector) *fixture {
	t.Helper()
	f := &fixture{kr: hsmtest.New(t, provider.Name, "pec-a.test"), clamd: clamdtest.New(t),
		st: &breakableStore{Memory: storetest.NewMemory()}, now: time.Date(2026, 11, 22, 10, 30, 15, 0, time.UTC)}
	f.signer = &breakableSigner{Signer: f.kr}
	sc, err := clamd.New(clamd.Config{Addr: f.clamd.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.ap, err = pec.New(pec.Config{Identities: []pec.Identity{provider}, Node: "test", Limits: lim, Options: opts},
		pec.Deps{Inspector: in, Keys: f.signer, Index: fakeIndex{"pec-a.test": true, "pec-b.test": true},
			Scanner: sc, Store: f.st, Clock: pec.ClockFunc(func() time.Time { return f.now })})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// confirm plays Postfix delivering the confirmation recipient of an accepted busta: the
// accettazione is released.
func (f *fixture) confirm(t testing.TB, res *pec.Submitted) {
	t.Helper()
	if _, err := f.ap.Confirm(context.Background(), res.Confirm); err != nil {
		t.Fatalf("confirm %s: %v", res.Confirm, err)
	}
}

func (f *fixture) outbox(t testing.TB) []store.OutboxItem {
	t.Helper()
	items, err := f.st.ClaimOutbox(context.Background(), store.Claim{Owner: "t", Lease: time.Minute, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func (f *fixture) events(t *testing.T) []*store.Event {
	t.Helper()
	var out []*store.Event
	if err := f.st.ScanLog(context.Background(), store.Query{}, func(e *store.Event) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func msg(hdr ...string) []byte {
	if !strings.Contains(strings.Join(hdr, "\n"), "Date:") {
		hdr = append(hdr, "Date: Sun, 22 Nov 2026 10:00:00 +0100")
	}
	return []byte(strings.Join(hdr, "\r\n") + "\r\n\r\nTesto con accenti: \xe0\xe8\xec\r\n")
}

var good = msg(
	"Received: from client by mx.pec-a.test with ESMTPSA id ABC",
	"From: Alice <alice@pec-a.test>",
	"To: bruno@pec-b.test",
	"Cc: oscar@posta.test",
	"Subject: =?UTF-8?Q?Prova_=C3=A8?= <xml> & \"special\"",
	"Message-ID: <client-1@pec-a.test>",
	"Date: Sun, 22 Nov 2026 11:30:00 +0100",
)

func submission(m []byte, rcpts ...string) *pec.Submission {
	if len(rcpts) == 0 {
		rcpts = []string{"bruno@pec-b.test", "oscar@posta.test"}
	}
	return &pec.Submission{QueueID: "Q1", Login: "alice@pec-a.test", MailFrom: "alice@pec-a.test", Rcpts: rcpts, Message: m}
}

func classify(t *testing.T, raw []byte, ca *hsmtest.CA) *pec.Classified {
	t.Helper()
	c := pec.Classify(raw, pec.ClassifyOptions{})
	if c.Verified == nil {
		t.Fatalf("signature does not verify: %v", c.SigErr)
	}
	if _, err := smime.Verify(raw, smime.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Fatalf("chain: %v", err)
	}
	if c.Daticert == nil {
		t.Fatal("no daticert")
	}
	return c
}

func TestSubmitAccepted(t *testing.T) {
	f := newFixture(t, pec.Limits{MaxRecipients: 10, MaxSizeTimesRecipients: 30_000_000})
	res, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatal(err)
	}
	f.confirm(t, res)
	if res.Timings.Scan <= 0 || res.Timings.Build <= 0 || res.Timings.Commit <= 0 {
		t.Errorf("timings not measured: %+v", res.Timings)
	}
	if !strings.HasSuffix(res.Identificativo, "@pec-a.test") || !res.Time.Equal(f.now) {
		t.Errorf("result = %+v", res)
	}
	if strings.Join(res.Certified, ",") != "bruno@pec-b.test" || strings.Join(res.External, ",") != "oscar@posta.test" {
		t.Errorf("certified %v external %v", res.Certified, res.External)
	}
	busta := classify(t, bytes.Join(res.Busta, nil), f.kr.CA)
	if busta.Kind != pec.KindBusta || !busta.Conforms() {
		t.Fatalf("busta kind %v deviations %+v", busta.Kind, busta.Deviations)
	}
	if busta.Daticert.Dati.Identificativo != res.Identificativo {
		t.Errorf("busta identificativo %q", busta.Daticert.Dati.Identificativo)
	}
	// The original rides in postacert.eml byte for byte but for the Message-ID swap and its
	// 8-bit body re-encoded to 7 bits (issue 12 item 12: quoted-printable, content unchanged).
	good7, changed := pec.SevenBit(good)
	if !changed || bytes.ContainsFunc(busta.Postacert, func(r rune) bool { return r >= 0x80 }) {
		t.Errorf("postacert.eml is not 7-bit")
	}
	want := strings.Replace(string(good7), "Message-ID: <client-1@pec-a.test>\r\n",
		"Message-ID: <"+res.Identificativo+">\r\nX-Riferimento-Message-ID: <client-1@pec-a.test>\r\n", 1)
	if string(busta.Postacert) != want {
		t.Errorf("postacert.eml:\n%q\nwant\n%q", busta.Postacert, want)
	}
	types := map[string]daticert.RecipientType{}
	for _, d := range busta.Daticert.Intestazione.Destinatari {
		types[d.Addr] = d.Tipo
	}
	if types["bruno@pec-b.test"] != daticert.Certificato || types["oscar@posta.test"] != daticert.Esterno {
		t.Errorf("destinatari = %+v", busta.Daticert.Intestazione.Destinatari)
	}

	items := f.outbox(t)
	if len(items) != 1 {
		t.Fatalf("outbox has %d items", len(items))
	}
	it := items[0]
	if it.Kind != "accettazione" || it.From != "posta-certificata@pec-a.test" || strings.Join(it.Rcpts, ",") != "alice@pec-a.test" || it.Identificativo != res.Identificativo {
		t.Errorf("outbox item = %+v", it)
	}
	acc := classify(t, it.Raw, f.kr.CA)
	if acc.Kind != pec.KindAccettazione || !acc.Conforms() {
		t.Fatalf("accettazione kind %v deviations %+v", acc.Kind, acc.Deviations)
	}
	// One time reference for the busta and the accettazione (pec-spec.md §6.2).
	if acc.Daticert.Dati.Data != busta.Daticert.Dati.Data || acc.Daticert.Dati.Identificativo != res.Identificativo {
		t.Errorf("accettazione data %+v, busta %+v", acc.Daticert.Dati, busta.Daticert.Dati)
	}
	bd, _ := busta.Header.Get("Date")
	ad, _ := acc.Header.Get("Date")
	if bd != ad {
		t.Errorf("Date: busta %q accettazione %q", bd, ad)
	}

	evs := f.events(t)
	kinds := []string{}
	for _, e := range evs {
		kinds = append(kinds, string(e.Kind))
		if !e.Time.Equal(f.now) || e.Identificativo != res.Identificativo || e.QueueID != "Q1" || e.Sender != "alice@pec-a.test" {
			t.Errorf("event %+v", e)
		}
	}
	if strings.Join(kinds, ",") != "accettazione,busta-trasporto" {
		t.Errorf("events %v", kinds)
	}
	rows, err := f.st.Tracking(context.Background(), res.Identificativo)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Recipient != "bruno@pec-b.test" || !rows[0].SentAt.Equal(f.now) {
		t.Fatalf("tracking = %+v", rows)
	}
	if d, err := daticert.Parse(rows[0].Data); err != nil || d.Dati.Identificativo != res.Identificativo {
		t.Errorf("tracking data: %v", err)
	}
}

func TestSubmitFormalErrors(t *testing.T) {
	lim := pec.Limits{MaxRecipients: 2, MaxSizeTimesRecipients: 2000}
	big := msg("From: alice@pec-a.test", "To: bruno@pec-b.test, bianca@pec-b.test", "Subject: big", "X-Pad: "+strings.Repeat("x", 900))
	for _, tc := range []struct {
		name   string
		sub    *pec.Submission
		reason pec.ReasonCode
	}{
		{"from differs from login", submission(msg("From: anna@pec-a.test", "To: bruno@pec-b.test", "Subject: s"), "bruno@pec-b.test"), pec.ReasonFromMismatch},
		{"mail from differs from login", &pec.Submission{Login: "alice@pec-a.test", MailFrom: "anna@pec-a.test",
			Rcpts: []string{"bruno@pec-b.test"}, Message: msg("From: anna@pec-a.test", "To: bruno@pec-b.test", "Subject: s")}, pec.ReasonLoginMismatch},
		{"rcpt not in to/cc", submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: s"), "bruno@pec-b.test", "bianca@pec-b.test"), pec.ReasonRcptNotInHeader},
		{"bcc", submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: bianca@pec-b.test", "Subject: s"), "bruno@pec-b.test"), pec.ReasonBcc},
		{"no to", submission(msg("From: alice@pec-a.test", "Subject: s"), "bruno@pec-b.test"), pec.ReasonNoTo},
		{"no from", submission(msg("To: bruno@pec-b.test", "Subject: s"), "bruno@pec-b.test"), pec.ReasonNoFrom},
		{"too many recipients", submission(msg("From: alice@pec-a.test", "To: a@pec-b.test, b@pec-b.test, c@pec-b.test", "Subject: s"),
			"a@pec-b.test", "b@pec-b.test", "c@pec-b.test"), pec.ReasonTooManyRcpts},
		{"size times recipients", submission(big, "bruno@pec-b.test", "bianca@pec-b.test"), pec.ReasonTooLarge},
		{"malformed header", submission([]byte("From: alice@pec-a.test\r\nTo bruno without colon\r\n\r\nbody\r\n"), "bruno@pec-b.test"), pec.ReasonMalformed},
		{"line too long", submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: "+strings.Repeat("y", 1200)), "bruno@pec-b.test"), pec.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, lim)
			res, err := f.ap.Submit(context.Background(), tc.sub)
			var ref *pec.Refused
			if !errors.As(err, &ref) {
				t.Fatalf("Submit = %+v, %v; want *Refused", res, err)
			}
			var fe *pec.FormalError
			if ref.Kind != pec.KindNonAccettazione || !errors.As(err, &fe) || fe.Reason != tc.reason {
				t.Fatalf("refused %+v (formal %+v), want reason %v", ref, fe, tc.reason)
			}
			code, enh, text := ref.SMTPStatus()
			if code != 550 || enh != "5.7.1" || !isASCIILine(text) || !strings.Contains(text, strings.ReplaceAll(strings.ReplaceAll(fe.Text(), "è", "e'"), "ù", "u'")) {
				t.Errorf("SMTP status %d %s %q", code, enh, text)
			}
			items := f.outbox(t)
			if len(items) != 1 || items[0].Kind != "non-accettazione" || strings.Join(items[0].Rcpts, ",") != "alice@pec-a.test" {
				t.Fatalf("outbox = %+v", items)
			}
			c := classify(t, items[0].Raw, f.kr.CA)
			if c.Kind != pec.KindNonAccettazione || c.Postacert != nil {
				t.Fatalf("avviso kind %v, postacert %d bytes", c.Kind, len(c.Postacert))
			}
			if c.Daticert.Errore != daticert.ErroreAltro || c.Daticert.Dati.ErroreEsteso != fe.Text() || c.Daticert.Dati.Identificativo != ref.Identificativo {
				t.Errorf("daticert errore %q esteso %q", c.Daticert.Errore, c.Daticert.Dati.ErroreEsteso)
			}
			evs := f.events(t)
			if len(evs) != 1 || evs[0].Kind != store.KindNonAccettazione || evs[0].ErrorDetail != fe.Text() || evs[0].Error != "altro" {
				t.Fatalf("events = %+v", evs)
			}
			if rows, _ := f.st.Tracking(context.Background(), ref.Identificativo); len(rows) != 0 {
				t.Errorf("tracking rows for a refused message: %+v", rows)
			}
		})
	}
}

func TestSubmitVirus(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	infected := msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: fattura",
		"MIME-Version: 1.0", "Content-Type: text/plain")
	infected = append(infected, []byte(clamdtest.EICAR+"\r\n")...)
	_, err := f.ap.Submit(context.Background(), submission(infected, "bruno@pec-b.test"))
	var ref *pec.Refused
	if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus || ref.Virus != clamdtest.EICARName {
		t.Fatalf("err = %v", err)
	}
	if code, _, text := ref.SMTPStatus(); code != 554 || !strings.Contains(text, clamdtest.EICARName) {
		t.Errorf("status %d %q", code, text)
	}
	items := f.outbox(t)
	if len(items) != 1 || items[0].Kind != "non-accettazione-virus" {
		t.Fatalf("outbox = %+v", items)
	}
	c := classify(t, items[0].Raw, f.kr.CA)
	if c.Kind != pec.KindNonAccettazioneVirus || c.Daticert.Errore != daticert.ErroreVirus || c.Postacert != nil {
		t.Errorf("avviso %v errore %q", c.Kind, c.Daticert.Errore)
	}
	if v, _ := c.Header.Get("X-VerificaSicurezza"); v != "errore" {
		t.Errorf("X-VerificaSicurezza = %q", v)
	}
	q, err := f.st.Quarantined(context.Background(), ref.Identificativo)
	if err != nil || len(q) != 1 || !bytes.Equal(q[0].Raw, infected) || q[0].Virus != clamdtest.EICARName {
		t.Fatalf("quarantine = %+v, %v", q, err)
	}
	evs := f.events(t)
	if len(evs) != 1 || evs[0].Kind != store.KindNonAccettazioneVirus || evs[0].Virus != clamdtest.EICARName {
		t.Fatalf("events = %+v", evs)
	}
}

func TestSubmitNotAuthenticated(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	sub := submission(good)
	sub.Login = ""
	if _, err := f.ap.Submit(context.Background(), sub); err != pec.ErrNotAuthenticated {
		t.Fatalf("err = %v", err)
	}
	if f.st.commits.Load() != 0 {
		t.Fatal("something committed for an unauthenticated submission")
	}
}

// Every internal failure is temporary and leaves nothing committed; once the dependency is
// back, the retry is accepted with exactly one accettazione.
func TestSubmitInternalFailures(t *testing.T) {
	for _, tc := range []struct {
		name          string
		breakIt, heal func(*fixture)
		sub           func() *pec.Submission
	}{
		{"signer", func(f *fixture) { f.signer.broken = true }, func(f *fixture) { f.signer.broken = false }, func() *pec.Submission { return submission(good) }},
		{"signer on a refusal", func(f *fixture) { f.signer.broken = true }, func(f *fixture) { f.signer.broken = false },
			func() *pec.Submission {
				return submission(msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: x@pec-b.test"), "bruno@pec-b.test")
			}},
		{"store", func(f *fixture) { f.st.broken = true }, func(f *fixture) { f.st.broken = false }, func() *pec.Submission { return submission(good) }},
		{"clamd error", func(f *fixture) { f.clamd.SetMode(clamdtest.Error) }, func(f *fixture) { f.clamd.SetMode(clamdtest.Normal) }, func() *pec.Submission { return submission(good) }},
		{"clamd size limit", func(f *fixture) { f.clamd.SetStreamMaxLength(100) }, func(f *fixture) { f.clamd.SetStreamMaxLength(0) }, func() *pec.Submission { return submission(good) }},
		{"clamd down", func(f *fixture) { f.clamd.Close() }, nil, func() *pec.Submission { return submission(good) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, pec.Limits{})
			tc.breakIt(f)
			_, err := f.ap.Submit(context.Background(), tc.sub())
			var tmp interface{ Temporary() bool }
			var ref *pec.Refused
			if err == nil || errors.As(err, &ref) || !errors.As(err, &tmp) || !tmp.Temporary() {
				t.Fatalf("err = %v, want a temporary error", err)
			}
			if f.st.commits.Load() != 0 || len(f.outbox(t)) != 0 || len(f.events(t)) != 0 {
				t.Fatal("something was committed on a temporary failure")
			}
			if tc.heal == nil {
				return
			}
			tc.heal(f)
			res, err := f.ap.Submit(context.Background(), tc.sub())
			if err != nil && !errors.As(err, &ref) {
				t.Fatalf("retry: %v", err)
			}
			if res != nil {
				f.confirm(t, res)
			}
			if n := len(f.outbox(t)); n != 1 {
				t.Fatalf("retry: %d outbox items, want 1", n)
			}
		})
	}
}

func TestSubmitCancelledContextCommitsNothing(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.ap.Submit(ctx, submission(good)); err == nil {
		t.Fatal("no error with a cancelled context")
	}
	if len(f.outbox(t)) != 0 {
		t.Fatal("committed with a cancelled context")
	}
}

func TestNewAccessPointValidates(t *testing.T) {
	if _, err := pec.New(pec.Config{Identities: []pec.Identity{provider}}, pec.Deps{}); err == nil {
		t.Fatal("missing dependencies accepted")
	}
	if _, err := pec.New(pec.Config{Identities: []pec.Identity{{}}}, pec.Deps{}); err == nil || !strings.Contains(err.Error(), "provider.") {
		t.Fatalf("missing provider: %v", err)
	}
}

// A header that cannot be parsed still gives an avviso the sender recognises: its subject.
func TestSubmitMalformedKeepsSubject(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	m := msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: riconoscibile", "X-Long: "+strings.Repeat("L", 1500))
	_, err := f.ap.Submit(context.Background(), submission(m, "bruno@pec-b.test"))
	var fe *pec.FormalError
	if !errors.As(err, &fe) || fe.Reason != pec.ReasonMalformed || !strings.Contains(fe.Text(), "998") {
		t.Fatalf("err = %v", err)
	}
	items := f.outbox(t)
	if len(items) != 1 {
		t.Fatalf("outbox: %d", len(items))
	}
	c := classify(t, items[0].Raw, f.kr.CA)
	if s, _ := c.Header.Get("Subject"); s != "AVVISO DI NON ACCETTAZIONE: riconoscibile" {
		t.Errorf("subject %q", s)
	}
}

// BenchmarkSubmit measures one accepted submission (engine only: in-memory keyring, store and
// fake clamd) for a 10 KB and a 10 MB message.
func BenchmarkSubmit(b *testing.B) {
	for _, size := range []int{10 << 10, 10 << 20} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			f := newFixture(b, pec.Limits{})
			line := strings.Repeat("QUJD", 19) + "\r\n"
			body := strings.Repeat(line, size/len(line))
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A new Message-ID each time: the same bytes again would be a client's retry.
				m := []byte(fmt.Sprintf("From: alice@pec-a.test\r\nTo: bruno@pec-b.test\r\nSubject: bench\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\nMessage-ID: <b%d@x>\r\n\r\n", i) + body)
				if _, err := f.ap.Submit(context.Background(), submission(m, "bruno@pec-b.test")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func isASCIILine(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// hangingSigner's keys never answer (a hung HSM).
type hangingSigner struct{ pec.Signer }

type hangingKey struct{ crypto.Signer }

func (h hangingSigner) SignerFor(d string) (crypto.Signer, []*x509.Certificate, error) {
	s, chain, err := h.Signer.SignerFor(d)
	return hangingKey{s}, chain, err
}

func (hangingKey) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	select {} // never returns
}

// A hung HSM does not hold the submission: the signature is bounded by SignTimeout and the
// failure is temporary, with nothing committed.
func TestSubmitSignTimeout(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	sc, err := clamd.New(clamd.Config{Addr: f.clamd.Addr(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := pec.New(pec.Config{Identities: []pec.Identity{provider}, Node: "test", SignTimeout: 200 * time.Millisecond},
		pec.Deps{Keys: hangingSigner{f.kr}, Index: fakeIndex{"pec-a.test": true, "pec-b.test": true}, Scanner: sc, Store: f.st})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = eng.Submit(context.Background(), submission(good))
	if d := time.Since(start); d > 10*time.Second { // the HSM never answers; room for a loaded machine
		t.Fatalf("Submit took %s with a hung HSM", d)
	}
	if !errors.Is(err, pec.ErrSignTimeout) || !pec.Reply(err).Temporary() {
		t.Fatalf("err = %v, want a temporary sign timeout", err)
	}
	if f.st.commits.Load() != 0 {
		t.Fatal("committed with a hung HSM")
	}
}

// TestSubmitPrepared: the busta is handed to Submission.Prepared before the verdict, once,
// with the confirmation recipient of the held step; an acceptance says so (Handed) and
// carries the same busta; an infected message's busta may have been handed out too, but the
// answer is the refusal.
func TestSubmitPrepared(t *testing.T) {
	f := newFixture(t, pec.Limits{MaxRecipients: 10, MaxSizeTimesRecipients: 30_000_000})
	var calls int
	var busta [][]byte
	var confirm string
	sub := submission(good)
	sub.Prepared = func(b [][]byte, c string) { calls++; busta, confirm = b, c }
	res, err := f.ap.Submit(context.Background(), sub)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !res.Handed || confirm != res.Confirm || !bytes.Equal(bytes.Join(busta, nil), bytes.Join(res.Busta, nil)) {
		t.Fatalf("Prepared called %d times with confirm %q; result Handed %v confirm %q, same busta %v", calls, confirm,
			res.Handed, res.Confirm, bytes.Equal(bytes.Join(busta, nil), bytes.Join(res.Busta, nil)))
	}
	f.confirm(t, res)

	infected := msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Subject: fattura",
		"MIME-Version: 1.0", "Content-Type: text/plain")
	infected = append(infected, []byte(clamdtest.EICAR+"\r\n")...)
	calls = 0
	sub = submission(infected, "bruno@pec-b.test")
	sub.Prepared = func([][]byte, string) { calls++ }
	_, err = f.ap.Submit(context.Background(), sub)
	var ref *pec.Refused
	if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazioneVirus {
		t.Fatalf("infected: err = %v, want the virus refusal (Prepared called %d times)", err, calls)
	}
}

// TestSubmitPreparedOncePerSubmission: concurrent attempts of one submission (a client
// retrying while its first attempt is still at end-of-message) race for the held step; the
// loser answers as the winner was answered (decided), rebuilding that busta. Each attempt's
// Prepared is called at most once, and an attempt that says Handed returns the busta it
// handed out.
func TestSubmitPreparedOncePerSubmission(t *testing.T) {
	f := newFixture(t, pec.Limits{MaxRecipients: 10, MaxSizeTimesRecipients: 30_000_000})
	const n = 8
	type attempt struct {
		calls  int
		handed []byte
		res    *pec.Submitted
		err    error
	}
	as := make([]attempt, n)
	var wg sync.WaitGroup
	for i := range as {
		sub := submission(good)
		sub.Prepared = func(b [][]byte, _ string) { as[i].calls++; as[i].handed = bytes.Join(b, nil) }
		wg.Go(func() { as[i].res, as[i].err = f.ap.Submit(context.Background(), sub) })
	}
	wg.Wait()
	for i, a := range as {
		if a.err != nil {
			t.Fatalf("attempt %d: %v", i, a.err)
		}
		if a.calls > 1 {
			t.Errorf("attempt %d: Prepared called %d times", i, a.calls)
		}
		if a.res.Handed && !bytes.Equal(a.handed, bytes.Join(a.res.Busta, nil)) {
			t.Errorf("attempt %d: Handed, but the busta returned is not the one handed out", i)
		}
		if a.res.Identificativo != as[0].res.Identificativo {
			t.Errorf("attempt %d: identificativo %s, attempt 0 %s", i, a.res.Identificativo, as[0].res.Identificativo)
		}
	}
}
