package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gestore-pec/gestore/pec"
)

// fakeEngine records submissions and answers with fn.
type fakeEngine struct {
	mu     sync.Mutex
	subs   []*pec.Submission
	ins    []*pec.Incoming
	issued []string
	fn     func(ctx context.Context, s *pec.Submission) (*pec.Submitted, error)
	rfn    func(ctx context.Context, in *pec.Incoming) (*pec.Received, error)
	calls  int
	// scanner, when set, scans the streams StreamScan starts; nil: no stream.
	scanner pec.Scanner
}

func (e *fakeEngine) StreamScan(string, []string) *pec.ScanStream {
	e.mu.Lock()
	sc := e.scanner
	e.mu.Unlock()
	if sc == nil {
		return nil
	}
	return pec.NewScanStream(sc, 0)
}

func (e *fakeEngine) Submit(ctx context.Context, s *pec.Submission) (*pec.Submitted, error) {
	e.mu.Lock()
	cp := *s
	cp.Message = append([]byte(nil), s.Message...)
	e.subs = append(e.subs, &cp)
	e.calls++
	fn := e.fn
	e.mu.Unlock()
	return fn(ctx, s)
}

func (e *fakeEngine) Receive(ctx context.Context, in *pec.Incoming) (*pec.Received, error) {
	e.mu.Lock()
	cp := *in
	cp.Message = append([]byte(nil), in.Message...)
	e.ins = append(e.ins, &cp)
	e.calls++
	fn := e.rfn
	e.mu.Unlock()
	return fn(ctx, in)
}

func (e *fakeEngine) Issued(c string) {
	e.mu.Lock()
	e.issued = append(e.issued, c)
	e.mu.Unlock()
}

func (e *fakeEngine) last(t *testing.T) *pec.Submission {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.subs) == 0 {
		t.Fatal("engine not called")
	}
	return e.subs[len(e.subs)-1]
}

type harness struct {
	srv  *Server
	eng  *fakeEngine
	reg  *prometheus.Registry
	addr string
	done chan error
}

func start(t *testing.T, cfg Config, fn func(context.Context, *pec.Submission) (*pec.Submitted, error)) *harness {
	t.Helper()
	if cfg.MaxSize == 0 {
		cfg.MaxSize = 1 << 20
	}
	eng := &fakeEngine{fn: fn}
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, Deps{Engine: eng, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, eng: eng, reg: reg, addr: sock, done: make(chan error, 1)}
	go func() { h.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-h.done
	})
	return h
}

// trx is one SMTP transaction as Postfix would send it.
type trx struct {
	login, from string
	rcpts       []string
	msg         []byte
	esmtp       string // MAIL FROM parameters
}

type result struct {
	mods []milter.ModifyAction
	act  *milter.Action
}

// session opens a milter connection for role; send runs transactions on it.
func (h *harness) session(t *testing.T, role string) (*milter.ClientSession, *milter.MacroBag) {
	t.Helper()
	c := milter.NewClient("unix", h.addr, milter.WithReadTimeout(30*time.Second))
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonName, role)
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	act, err := s.Conn("client.example", milter.FamilyInet, 40000, "127.0.0.1")
	if err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("Conn: %v %v", act, err)
	}
	if act, err := s.Helo("client.example"); err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("Helo: %v %v", act, err)
	}
	return s, macros
}

func send(t *testing.T, s *milter.ClientSession, macros *milter.MacroBag, x trx) result {
	t.Helper()
	r, err := trySend(s, macros, x)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// trySend runs one transaction and returns what went wrong instead of failing the test, so a
// goroutine can report it to the test's goroutine (t.Fatal must not be called from another
// goroutine: it would end that goroutine only, and the test would wait for ever).
func trySend(s *milter.ClientSession, macros *milter.MacroBag, x trx) (result, error) {
	macros.Set(milter.MacroAuthAuthen, x.login)
	macros.Set(milter.MacroQueueId, "4XyZ12AbC")
	act, err := s.Mail("<"+x.from+">", x.esmtp)
	if err != nil {
		return result{}, fmt.Errorf("Mail: %w", err)
	}
	if act.Type != milter.ActionContinue {
		return result{act: act}, nil
	}
	for _, r := range x.rcpts {
		if act, err := s.Rcpt("<"+r+">", ""); err != nil || act.Type != milter.ActionContinue {
			return result{}, fmt.Errorf("Rcpt: %v %v", act, err)
		}
	}
	if act, err := s.DataStart(); err != nil || act.Type != milter.ActionContinue {
		return result{}, fmt.Errorf("Data: %v %v", act, err)
	}
	hdr, body, err := pec.SplitHeader(x.msg)
	if err != nil {
		return result{}, err
	}
	for _, f := range hdr {
		// Postfix sends the value after the colon, folded lines separated by LF.
		v := strings.ReplaceAll(strings.TrimSuffix(string(f.Raw[len(f.Name)+1:]), "\r\n"), "\r\n", "\n")
		if _, err := s.HeaderField(f.Name, v, nil); err != nil {
			return result{}, fmt.Errorf("header %s: %w", f.Name, err)
		}
	}
	if act, err := s.HeaderEnd(); err != nil || act.Type != milter.ActionContinue {
		return result{}, fmt.Errorf("EOH: %v %v", act, err)
	}
	mods, act, err := s.BodyReadFrom(bytes.NewReader(body))
	if err != nil {
		return result{}, fmt.Errorf("body: %w", err)
	}
	return result{mods: mods, act: act}, nil
}

const original = "Received: from client.example by mx.pec-a.test\r\n" +
	"\twith ESMTPSA id 4XyZ12AbC; Sun, 22 Nov 2026 10:00:00 +0100\r\n" +
	"Received: from laptop by client.example\r\n" +
	"From: alice@pec-a.test\r\n" +
	"To: bruno@pec-b.test\r\n" +
	"Subject:  =?UTF-8?B?Q2lhbyDDqA==?= <&>\r\n" +
	"Message-ID: <orig-1@client.example>\r\n" +
	"received: lower-case third one\r\n" +
	"\r\n" +
	"Corpo con \xe8 8-bit\r\nseconda riga\r\n"

const busta = "Received: from client.example by mx.pec-a.test\r\n" +
	"\twith ESMTPSA id 4XyZ12AbC; Sun, 22 Nov 2026 10:00:00 +0100\r\n" +
	"Subject: POSTA CERTIFICATA:  =?UTF-8?B?Q2lhbyDDqA==?= <&>\r\n" +
	"Message-ID: <id-1@pec-a.test>\r\n" +
	"From: \"Per conto di: alice@pec-a.test\" <posta-certificata@pec-a.test>\r\n" +
	"X-Trasporto: posta-certificata\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\";\r\n" +
	" micalg=sha-256; boundary=\"b1\"\r\n" +
	"\r\n" +
	"--b1\r\nsigned part\r\n--b1--\r\n"

// accepted returns the busta in three parts, as the builder does (the original message in
// the middle): the body Postfix gets is their concatenation.
func accepted(_ context.Context, s *pec.Submission) (*pec.Submitted, error) {
	cut := strings.Index(busta, "signed") + 3
	parts := [][]byte{[]byte(busta[:cut]), []byte(busta[cut : cut+8]), []byte(busta[cut+8:])}
	return &pec.Submitted{Identificativo: "id-1@pec-a.test", Busta: parts, Confirm: "tok1@confirm.pec.invalid"}, nil
}

func TestAcceptedReplacesMessage(t *testing.T) {
	h := start(t, Config{}, accepted)
	s, macros := h.session(t, RoleAccess)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test",
		rcpts: []string{"bruno@pec-b.test", "oscar@posta.test"}, msg: []byte(original)})
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("action = %v", r.act)
	}
	sub := h.eng.last(t)
	if string(sub.Message) != original {
		t.Errorf("engine got\n%q\nwant\n%q", sub.Message, original)
	}
	if sub.Login != "alice@pec-a.test" || sub.MailFrom != "alice@pec-a.test" || sub.QueueID != "4XyZ12AbC" ||
		strings.Join(sub.Rcpts, ",") != "bruno@pec-b.test,oscar@posta.test" {
		t.Errorf("submission = %+v", sub)
	}
	var got []string
	var body []byte
	for _, m := range r.mods {
		if m.Type == milter.ActionReplaceBody {
			body = append(body, m.Body...)
			continue
		}
		got = append(got, m.String())
	}
	want := []string{
		// every original field deleted, last first, indexes per name (case-insensitive)
		`ChangeHeader 3 "received" ""`,
		`ChangeHeader 1 "Message-ID" ""`,
		`ChangeHeader 1 "Subject" ""`,
		`ChangeHeader 1 "To" ""`,
		`ChangeHeader 1 "From" ""`,
		`ChangeHeader 2 "Received" ""`,
		`ChangeHeader 1 "Received" ""`,
		// the busta's fields in order, values as written (leading space, LF folding)
		`AddHeader "Received" " from client.example by mx.pec-a.test\n\twith ESMTPSA id 4XyZ12AbC; Sun, 22 Nov 2026 10:00:00 +0100"`,
		`AddHeader "Subject" " POSTA CERTIFICATA:  =?UTF-8?B?Q2lhbyDDqA==?= <&>"`,
		`AddHeader "Message-ID" " <id-1@pec-a.test>"`,
		`AddHeader "From" " \"Per conto di: alice@pec-a.test\" <posta-certificata@pec-a.test>"`,
		`AddHeader "X-Trasporto" " posta-certificata"`,
		`AddHeader "MIME-Version" " 1.0"`,
		`AddHeader "Content-Type" " multipart/signed; protocol=\"application/x-pkcs7-signature\";\n micalg=sha-256; boundary=\"b1\""`,
		// the confirmation recipient, without DSN (pec/confirm.go)
		`AddRcpt "<tok1@confirm.pec.invalid>" "NOTIFY=NEVER"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("modifications:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if string(body) != "--b1\r\nsigned part\r\n--b1--\r\n" {
		t.Errorf("body = %q", body)
	}
	if v := counter(t, h.reg, RoleAccess, outcomeAccepted); v != 1 {
		t.Errorf("accepted counter = %v", v)
	}
	if n := histogramCount(t, h.reg); n != 1 {
		t.Errorf("latency histogram count = %d", n)
	}
}

func TestRepliesFromTheOneMapping(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		code    uint16
		want    string
		outcome string
	}{
		{"formal", &pec.Refused{Kind: pec.KindNonAccettazione, Identificativo: "x@pec-a.test", Reason: "il mittente differisce dall'utente autenticato"},
			550, "550 5.7.1 PEC non accettata: il mittente differisce dall'utente autenticato", outcomeRefused},
		{"virus", &pec.Refused{Kind: pec.KindNonAccettazioneVirus, Identificativo: "x@pec-a.test", Virus: "Eicar-Test"},
			554, "554 5.7.1 PEC non accettata: virus rilevato (Eicar-Test)", outcomeVirus},
		{"unauthenticated", pec.ErrNotAuthenticated, 530, "530 5.7.0 Authentication required", outcomeRejected},
		{"temporary", &pec.Temporary{Op: "sign", Err: errors.New("pkcs11 /usr/lib/softhsm/libsofthsm2.so token provider-a key provider-a: CKR_DEVICE_REMOVED")},
			451, "451 4.3.0 Temporary failure", outcomeTempfail},
		{"unknown", fmt.Errorf("open /var/lib/gestore/pec.db: disk I/O error"), 451, "451 4.3.0 Temporary failure", outcomeTempfail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, Config{}, func(context.Context, *pec.Submission) (*pec.Submitted, error) { return nil, tc.err })
			s, macros := h.session(t, RoleAccess)
			r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
			if r.act.Type != milter.ActionRejectWithCode || r.act.SMTPCode != tc.code || !strings.HasPrefix(r.act.SMTPReply, tc.want) {
				t.Fatalf("action = %v, want %d %q", r.act, tc.code, tc.want)
			}
			if len(r.mods) != 0 {
				t.Errorf("modifications on a refusal: %v", r.mods)
			}
			for _, secret := range []string{"/usr/lib", "provider-a", "pec.db", "pkcs11", "CKR_"} {
				if strings.Contains(r.act.SMTPReply, secret) {
					t.Errorf("reply %q reveals %q", r.act.SMTPReply, secret)
				}
			}
			if strings.ContainsAny(r.act.SMTPReply, "\r\n") {
				t.Errorf("reply is not one line: %q", r.act.SMTPReply)
			}
			if v := counter(t, h.reg, RoleAccess, tc.outcome); v != 1 {
				t.Errorf("counter %s = %v", tc.outcome, v)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	h := start(t, Config{MaxSize: 2048}, accepted)
	s, macros := h.session(t, RoleAccess)
	big := original + strings.Repeat("0123456789abcdef\r\n", 200)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(big)})
	if r.act == nil || r.act.SMTPCode != 552 || !strings.HasPrefix(r.act.SMTPReply, "552 5.3.4 ") {
		t.Fatalf("action = %v", r.act)
	}
	if h.eng.calls != 0 {
		t.Fatal("engine called for a message over the hard limit")
	}
	// The connection stays usable for the next transaction.
	if err := s.Abort(nil); err != nil {
		t.Fatal(err)
	}
	r = send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("second transaction: %v", r.act)
	}
	if string(h.eng.last(t).Message) != original {
		t.Fatal("state leaked from the refused transaction")
	}
}

func TestSeveralTransactionsOneConnection(t *testing.T) {
	h := start(t, Config{}, accepted)
	s, macros := h.session(t, RoleAccess)
	for i := 0; i < 3; i++ {
		msg := strings.Replace(original, "seconda riga", fmt.Sprintf("riga %d", i), 1)
		r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{fmt.Sprintf("r%d@pec-b.test", i)}, msg: []byte(msg)})
		if r.act.Type != milter.ActionAccept {
			t.Fatalf("%d: %v", i, r.act)
		}
		sub := h.eng.last(t)
		if string(sub.Message) != msg || len(sub.Rcpts) != 1 {
			t.Fatalf("%d: state leaked: %q %v", i, sub.Message, sub.Rcpts)
		}
	}
}

func TestUnknownRoleTempFails(t *testing.T) {
	h := start(t, Config{}, accepted)
	for _, role := range []string{"", "smtpd", "submission"} {
		s, macros := h.session(t, role)
		r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
		if r.act.SMTPCode != 451 || !strings.HasPrefix(r.act.SMTPReply, "451 4.3.0") {
			t.Fatalf("role %q: %v", role, r.act)
		}
	}
	if h.eng.calls != 0 {
		t.Fatal("engine called for an unknown role")
	}
}

func TestProgressDuringSlowEngine(t *testing.T) {
	h := start(t, Config{ProgressInterval: 20 * time.Millisecond}, func(ctx context.Context, s *pec.Submission) (*pec.Submitted, error) {
		time.Sleep(150 * time.Millisecond)
		return accepted(ctx, s)
	})
	s, macros := h.session(t, RoleAccess)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.Type != milter.ActionAccept {
		t.Fatal(r.act)
	}
}

func TestEngineTimeoutIsTemporary(t *testing.T) {
	h := start(t, Config{Timeout: 100 * time.Millisecond}, func(ctx context.Context, _ *pec.Submission) (*pec.Submitted, error) {
		<-ctx.Done()
		return nil, &pec.Temporary{Op: "scan", Err: ctx.Err()}
	})
	s, macros := h.session(t, RoleAccess)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.SMTPCode != 451 {
		t.Fatal(r.act)
	}
}

func TestEnginePanicIsTemporary(t *testing.T) {
	h := start(t, Config{}, func(context.Context, *pec.Submission) (*pec.Submitted, error) { panic("boom") })
	s, macros := h.session(t, RoleAccess)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.SMTPCode != 451 {
		t.Fatal(r.act)
	}
}

// A SIGTERM while a transaction is at end-of-message lets it finish and answer; a
// transaction that reaches end-of-message after the grace period is temp-failed.
func TestShutdownFinishesInflight(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	entered := make(chan struct{}, 2)
	h := start(t, Config{}, func(ctx context.Context, s *pec.Submission) (*pec.Submitted, error) {
		entered <- struct{}{}
		<-release
		return accepted(ctx, s)
	})
	s1, m1 := h.session(t, RoleAccess)
	s2, m2 := h.session(t, RoleAccess)
	type sent struct {
		r   result
		err error
	}
	res := make(chan sent, 1)
	go func() {
		r, err := trySend(s1, m1, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
		res <- sent{r, err}
	}()
	select {
	case <-entered:
	case x := <-res:
		t.Fatalf("the first transaction ended before reaching the engine: %v, %v", x.r.act, x.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the first transaction never reached the engine")
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		shut <- h.srv.Shutdown(ctx)
	}()
	time.Sleep(150 * time.Millisecond) // grace over: new end-of-message calls are refused
	r2 := send(t, s2, m2, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r2.act.SMTPCode != 451 {
		t.Fatalf("transaction after the grace period: %v", r2.act)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the in-flight transaction finished", err)
	default:
	}
	unblock()
	if x := <-res; x.err != nil || x.r.act.Type != milter.ActionAccept {
		t.Fatalf("in-flight transaction: %v, %v", x.r.act, x.err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{MaxSize: 1}, Deps{}); err == nil {
		t.Error("no engine accepted")
	}
	if _, err := New(Config{}, Deps{Engine: &fakeEngine{}}); err == nil || !strings.Contains(err.Error(), "hard_max_size") {
		t.Errorf("zero MaxSize: %v", err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, role, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pec_milter_transactions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["role"] == role && l["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pec_milter_end_of_message_seconds" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// Buffered bytes of all transactions together stay under MaxBuffered: a transaction that
// would pass it is temp-failed, and the budget comes back when transactions end.
// The memory budget counts what a transaction really holds: its buffer's capacity while the
// message arrives, and the engine's work (engineWork × the size) at end-of-message. A second
// transaction that would pass it is temp-failed; once the first ends its bytes are released.
func TestMemoryBudget(t *testing.T) {
	msg := []byte(original + strings.Repeat("x", 2800) + "\r\n")
	// One message in flight, buffer and engine work, fits; two do not.
	budget := int64(len(msg))*(1+engineWork) + 4096 + 200
	h := start(t, Config{MaxSize: 4096, MaxBuffered: budget}, accepted)

	// Session 1 holds its message (body sent, end-of-message not yet).
	s1, m1 := h.session(t, RoleAccess)
	m1.Set(milter.MacroAuthAuthen, "alice@pec-a.test")
	if _, err := s1.Mail("<alice@pec-a.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Rcpt("<bruno@pec-b.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.DataStart(); err != nil {
		t.Fatal(err)
	}
	hdr, body, _ := pec.SplitHeader(msg)
	for _, f := range hdr {
		if _, err := s1.HeaderField(f.Name, strings.TrimSuffix(string(f.Raw[len(f.Name)+1:]), "\r\n"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s1.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if act, err := s1.BodyChunk(body); err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("body 1: %v %v", act, err)
	}

	// Body chunks get no reply (OptNoBodyReply): the chunk is taken when the server gets to
	// it, so wait for it to be accounted.
	var held int64
	for deadline := time.Now().Add(10 * time.Second); held < int64(len(msg)) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		h.srv.mu.Lock()
		held = h.srv.buffered
		h.srv.mu.Unlock()
	}
	if held < int64(len(msg)) || held > int64(len(msg))+4096+int64(len(msg))/4 {
		t.Errorf("session 1 accounts %d bytes for a %d-byte message", held, len(msg))
	}

	// Session 2 does not fit beside it.
	s2, m2 := h.session(t, RoleAccess)
	r := send(t, s2, m2, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: msg})
	if r.act.SMTPCode != 451 || !strings.HasPrefix(r.act.SMTPReply, "451 4.3.0") {
		t.Fatalf("over budget: %v", r.act)
	}

	// Session 1 completes; its bytes are released and session 2's retry fits.
	if _, act, err := s1.End(); err != nil || act.Type != milter.ActionAccept {
		t.Fatalf("end 1: %v %v", act, err)
	}
	if err := s2.Abort(nil); err != nil {
		t.Fatal(err)
	}
	r = send(t, s2, m2, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: msg})
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("retry: %v", r.act)
	}
	h.srv.mu.Lock()
	left := h.srv.buffered
	h.srv.mu.Unlock()
	if left != 0 {
		t.Errorf("%d bytes still accounted after every transaction ended", left)
	}
}

// An engine that ignores its context (a hung HSM, a stuck store) does not hold Postfix past
// milter.timeout: the reply is 451 at the deadline, the late result is dropped (no busta is
// handed back), and no progress packet is sent after it.
func TestDeadlineDoesNotWaitForEngine(t *testing.T) {
	release := make(chan struct{})
	h := start(t, Config{Timeout: 300 * time.Millisecond, ProgressInterval: 50 * time.Millisecond},
		func(context.Context, *pec.Submission) (*pec.Submitted, error) {
			<-release
			return accepted(context.Background(), nil)
		})
	defer close(release)
	s, macros := h.session(t, RoleAccess)
	start := time.Now()
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	took := time.Since(start)
	if r.act.SMTPCode != 451 || len(r.mods) != 0 {
		t.Fatalf("action %v mods %v, want 451 and no modification", r.act, r.mods)
	}
	if took > 10*time.Second { // the engine never returns: any bound tells; this one leaves room for a loaded machine
		t.Fatalf("reply after %s, want it at the 300ms deadline", took)
	}
}

// startWith is start with client options (the MTA's side of the negotiation).
func (h *harness) sessionWith(t *testing.T, role string, opts ...milter.Option) (*milter.ClientSession, *milter.MacroBag) {
	t.Helper()
	c := milter.NewClient("unix", h.addr, append([]milter.Option{milter.WithReadTimeout(30 * time.Second)}, opts...)...)
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroDaemonName, role)
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if act, err := s.Conn("client.example", milter.FamilyInet, 40000, "127.0.0.1"); err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("Conn: %v %v", act, err)
	}
	if act, err := s.Helo("client.example"); err != nil || act.Type != milter.ActionContinue {
		t.Fatalf("Helo: %v %v", act, err)
	}
	return s, macros
}

// An MTA that does not let the milter add the confirmation recipient (issue 20 item 5: Postfix
// refusing the modifications) cannot use it at all: the negotiation fails, and Postfix's
// milter_default_action = tempfail answers 4xx. A busta is never queued without its
// confirmation.
func TestModificationRefusedAtNegotiation(t *testing.T) {
	h := start(t, Config{}, accepted)
	c := milter.NewClient("unix", h.addr, milter.WithReadTimeout(5*time.Second),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptChangeBody))
	s, err := c.Session(milter.NewMacroBag())
	if err == nil {
		s.Close()
		t.Fatal("negotiated with an MTA that cannot add recipients")
	}
}

// An engine that accepts without a busta (a bug) is a temporary failure, never an accept of
// the original.
func TestEngineWithoutBustaIsTemporary(t *testing.T) {
	h := start(t, Config{}, func(context.Context, *pec.Submission) (*pec.Submitted, error) {
		return &pec.Submitted{Identificativo: "x@pec-a.test"}, nil
	})
	s, macros := h.session(t, RoleAccess)
	r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if r.act.SMTPCode != 451 || len(r.mods) != 0 {
		t.Fatalf("action %v mods %v, want 451 and nothing changed", r.act, r.mods)
	}
}

// Postfix going away during a slow end-of-message cancels the engine's work (its context),
// so nothing keeps running for a transaction nobody waits for.
func TestPostfixGoneCancelsEngine(t *testing.T) {
	cancelled := make(chan struct{})
	h := start(t, Config{ProgressInterval: 20 * time.Millisecond}, func(ctx context.Context, _ *pec.Submission) (*pec.Submitted, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	d := &recordingDialer{}
	s, macros := h.sessionWith(t, RoleAccess, milter.WithDialer(d))
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_, _ = trySend(s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	}()
	called := func() bool { h.eng.mu.Lock(); defer h.eng.mu.Unlock(); return h.eng.calls > 0 }
	for deadline := time.Now().Add(10 * time.Second); !called(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("engine never called")
		}
	}
	d.conn.Close() // Postfix dies
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the engine's context was not cancelled after Postfix went away")
	}
	<-sent
}

type recordingDialer struct{ conn net.Conn }

func (d *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	d.conn = c
	return c, err
}

// The login the engine gets is the {auth_authen} macro, not MAIL FROM (issue 20 item 5: every
// other test uses login = MAIL FROM, so passing MAIL FROM as the login would go unnoticed).
func TestLoginComesFromAuthAuthen(t *testing.T) {
	h := start(t, Config{}, accepted)
	s, macros := h.session(t, RoleAccess)
	send(t, s, macros, trx{login: "alice", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)})
	if sub := h.eng.last(t); sub.Login != "alice" || sub.MailFrom != "alice@pec-a.test" {
		t.Fatalf("login %q mail from %q", sub.Login, sub.MailFrom)
	}
}

// Postfix waits for a reply only where the milter decides something: MAIL FROM (an unknown
// role) and end-of-message. Every other event is sent without a reply, or not at all (issue
// 19: each reply is a round trip, one per 64 KiB body chunk).
func TestOnlyMailAndEndOfMessageReplies(t *testing.T) {
	h := start(t, Config{}, accepted)
	s, _ := h.session(t, RoleAccess)
	for _, o := range []milter.OptProtocol{milter.OptNoConnReply, milter.OptNoRcptReply, milter.OptNoHeaderReply,
		milter.OptNoEOHReply, milter.OptNoBodyReply, milter.OptNoData, milter.OptNoHelo, milter.OptNoUnknown} {
		if !s.ProtocolOption(o) {
			t.Errorf("%v not negotiated", o)
		}
	}
	if s.ProtocolOption(milter.OptNoMailReply) {
		t.Error("MAIL FROM without a reply: an unknown role could not be refused there")
	}
}

// A message that passes limits.hard_max_size is refused only at end-of-message (body chunks
// get no reply), but its bytes leave the memory budget as soon as it passes the limit.
func TestTooLargeReleasesBudgetBeforeEnd(t *testing.T) {
	h := start(t, Config{MaxSize: 2048}, accepted)
	s, macros := h.session(t, RoleAccess)
	macros.Set(milter.MacroAuthAuthen, "alice@pec-a.test")
	if _, err := s.Mail("<alice@pec-a.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt("<bruno@pec-b.test>", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DataStart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderField("Subject", " x", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.BodyChunk([]byte(strings.Repeat("0123456789abcdef\r\n", 60))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.BodyChunk([]byte("x\r\n")); err != nil { // the last chunk before the check below
		t.Fatal(err)
	}
	var held int64 = -1
	for deadline := time.Now().Add(10 * time.Second); held != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		h.srv.mu.Lock()
		held = h.srv.buffered
		h.srv.mu.Unlock()
	}
	if held != 0 {
		t.Fatalf("%d bytes still held by a message over the limit", held)
	}
	if _, act, err := s.End(); err != nil || act.SMTPCode != 552 {
		t.Fatalf("end: %v %v", act, err)
	}
}

// TestDeclaredSize: with the SIZE a client declared (RFC 1870) the body is written into one
// buffer as it comes; declared too small, too large or not at all, the engine gets the same
// message, and the budget comes back to zero.
func TestDeclaredSize(t *testing.T) {
	msg := []byte(original + strings.Repeat(strings.Repeat("y", 76)+"\r\n", 4000))
	h := start(t, Config{MaxSize: 1 << 20}, accepted)
	for _, esmtp := range []string{
		"",
		fmt.Sprintf("SIZE=%d", len(msg)),
		fmt.Sprintf("BODY=8BITMIME size=%d", len(msg)),
		fmt.Sprintf("SIZE=%d", len(msg)/3),
		fmt.Sprintf("SIZE=%d", 2<<20),
		"SIZE=-5 SIZE=x",
	} {
		s, macros := h.session(t, RoleAccess)
		r := send(t, s, macros, trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: msg, esmtp: esmtp})
		if r.act.Type != milter.ActionAccept {
			t.Fatalf("%q: %v", esmtp, r.act)
		}
		if got := h.eng.last(t).Message; !bytes.Equal(got, msg) {
			t.Errorf("%q: the engine got %d bytes, want the %d-byte message", esmtp, len(got), len(msg))
		}
		h.srv.mu.Lock()
		left := h.srv.buffered
		h.srv.mu.Unlock()
		if left != 0 {
			t.Errorf("%q: %d bytes still accounted", esmtp, left)
		}
	}
	for args, want := range map[string]int64{"": 0, "SIZE=123": 123, "BODY=8BITMIME SIZE=9": 9, "SIZE=0": 0, "SIZE=abc": 0, "SIZE": 0} {
		if got := declaredSize(args); got != want {
			t.Errorf("declaredSize(%q) = %d, want %d", args, got, want)
		}
	}
}

// TestEarlyHandBack: a busta the engine hands out before its verdict (pec.Submission.Prepared)
// goes to Postfix while the engine finishes, once: an acceptance of that busta adds nothing;
// a refusal after it is still a refusal (Postfix drops the message with its modifications);
// an acceptance of another busta after it is a temporary failure, never a message with both.
func TestEarlyHandBack(t *testing.T) {
	mods := func(r result) string {
		var b strings.Builder
		for _, m := range r.mods {
			b.WriteString(m.String())
			b.Write(m.Body)
			b.WriteString("\n")
		}
		return b.String()
	}
	trxn := trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)}
	plain := start(t, Config{}, accepted)
	s, macros := plain.session(t, RoleAccess)
	want := send(t, s, macros, trxn)

	// early hands the accepted busta out, lets the milter send it, then answers with then.
	early := func(then func(res *pec.Submitted) (*pec.Submitted, error)) func(context.Context, *pec.Submission) (*pec.Submitted, error) {
		return func(ctx context.Context, sub *pec.Submission) (*pec.Submitted, error) {
			res, _ := accepted(ctx, sub)
			if sub.Prepared == nil {
				return nil, errors.New("no Prepared hook")
			}
			sub.Prepared(res.Busta, res.Confirm)
			time.Sleep(300 * time.Millisecond) // the clamd scan, meanwhile
			return then(res)
		}
	}
	for _, tc := range []struct {
		name    string
		then    func(res *pec.Submitted) (*pec.Submitted, error)
		act     milter.ActionType
		code    uint16
		outcome string
	}{
		{"accepted", func(res *pec.Submitted) (*pec.Submitted, error) { res.Handed = true; return res, nil },
			milter.ActionAccept, 0, outcomeAccepted},
		{"virus", func(*pec.Submitted) (*pec.Submitted, error) {
			return nil, &pec.Refused{Kind: pec.KindNonAccettazioneVirus, Identificativo: "x@pec-a.test", Virus: "Eicar-Test"}
		}, milter.ActionRejectWithCode, 554, outcomeVirus},
		{"commit failed", func(*pec.Submitted) (*pec.Submitted, error) {
			return nil, &pec.Temporary{Op: "commit", Err: errors.New("disk full")}
		}, milter.ActionRejectWithCode, 451, outcomeTempfail},
		{"another busta", func(res *pec.Submitted) (*pec.Submitted, error) {
			other := *res
			other.Busta, other.Confirm = [][]byte{[]byte("Subject: other\r\n\r\nother\r\n")}, "tok2@confirm.pec.invalid"
			return &other, nil
		}, milter.ActionRejectWithCode, 451, outcomeTempfail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, Config{}, early(tc.then))
			s, macros := h.session(t, RoleAccess)
			r := send(t, s, macros, trxn)
			if r.act.Type != tc.act || (tc.code != 0 && r.act.SMTPCode != tc.code) {
				t.Fatalf("action = %v, want %v %d", r.act, tc.act, tc.code)
			}
			// The modifications went once, before the verdict, whatever the verdict.
			if got := mods(r); got != mods(want) {
				t.Errorf("modifications:\n%s\nwant:\n%s", got, mods(want))
			}
			if v := counter(t, h.reg, RoleAccess, tc.outcome); v != 1 {
				t.Errorf("counter %s = %v", tc.outcome, v)
			}
		})
	}
}

// TestEarlyHandBackOnce: a second busta handed out in the same end-of-message (the engine
// promises there is none) is not sent: Postfix never gets two bodies for one message.
func TestEarlyHandBackOnce(t *testing.T) {
	trxn := trx{login: "alice@pec-a.test", from: "alice@pec-a.test", rcpts: []string{"bruno@pec-b.test"}, msg: []byte(original)}
	plain := start(t, Config{}, accepted)
	s, macros := plain.session(t, RoleAccess)
	want := send(t, s, macros, trxn)
	h := start(t, Config{}, func(ctx context.Context, sub *pec.Submission) (*pec.Submitted, error) {
		res, _ := accepted(ctx, sub)
		sub.Prepared(res.Busta, res.Confirm)
		time.Sleep(200 * time.Millisecond)
		sub.Prepared([][]byte{[]byte("Subject: other\r\n\r\nother\r\n")}, "tok2@confirm.pec.invalid")
		time.Sleep(200 * time.Millisecond)
		res.Handed = true
		return res, nil
	})
	s, macros = h.session(t, RoleAccess)
	r := send(t, s, macros, trxn)
	if r.act.Type != milter.ActionAccept {
		t.Fatalf("action = %v", r.act)
	}
	if len(r.mods) != len(want.mods) {
		t.Fatalf("%d modifications, want %d (one hand-back)", len(r.mods), len(want.mods))
	}
}
