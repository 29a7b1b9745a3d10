package reinject

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/sqlite"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

type clock = storetest.Clock

const (
	testTimeout = 400 * time.Millisecond
	testLease   = 2 * time.Second
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// forStores runs fn against each store, whose own clock (lease expiry, due items) is c, a
// clock starting at storetest.T0 that the test moves and gives its drainers too.
func forStores(t *testing.T, fn func(t *testing.T, st store.Store, c *clock)) {
	t.Run("sqlite", func(t *testing.T) {
		c := storetest.NewClock(storetest.T0)
		st, err := sqlite.Open(filepath.Join(t.TempDir(), "pec.db"), sqlite.Deps{Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st, c)
	})
	t.Run("memory", func(t *testing.T) {
		c := storetest.NewClock(storetest.T0)
		fn(t, storetest.NewMemoryClock(c.Now), c)
	})
}

func newDrainer(t *testing.T, addr string, st Outbox, owner string, c *clock) *Drainer {
	t.Helper()
	d, err := New(Config{Addr: addr, Timeout: testTimeout, Lease: testLease, MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Poll: 50 * time.Millisecond},
		Deps{Store: st, Owner: owner, Now: c.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func item(i int) store.OutboxItem {
	id := fmt.Sprintf("<opec.%d.acc@pec-a.test>", i)
	raw := "Message-ID: " + id + "\r\nFrom: posta-certificata@pec-a.test\r\nTo: alice@pec-a.test\r\nSubject: ACCETTAZIONE: prova\r\n\r\n" +
		".a line starting with a dot\r\nbody " + fmt.Sprint(i) + "\r\n"
	return store.OutboxItem{MessageID: id, Kind: "accettazione", Identificativo: fmt.Sprintf("opec.%d@pec-a.test", i),
		From: "posta-certificata@pec-a.test", Rcpts: []string{"alice@pec-a.test"}, Raw: []byte(raw)}
}

func queue(t *testing.T, st store.Store, items ...store.OutboxItem) {
	t.Helper()
	if err := st.Commit(context.Background(), &store.Batch{Outbox: items}); err != nil {
		t.Fatal(err)
	}
}

func list(t *testing.T, st store.Store, s store.OutboxState) []store.OutboxItem {
	t.Helper()
	out, err := st.ListOutbox(context.Background(), s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConfigValidation(t *testing.T) {
	st := storetest.NewMemory()
	for _, tc := range []struct {
		cfg Config
		key string
	}{
		{Config{}, "reinject.addr"},
		{Config{Addr: "x:1", Timeout: -1}, "reinject.timeout"},
		{Config{Addr: "x:1", Timeout: time.Minute, Lease: time.Minute}, "reinject.lease"},
		{Config{Addr: "x:1", MinBackoff: time.Hour, MaxBackoff: time.Minute}, "reinject.max_backoff"},
		{Config{Addr: "x:1", Timeout: time.Second, StopGrace: 2 * time.Second}, "reinject.stop_grace"},
		{Config{Addr: "x:1", StopGrace: -1}, "reinject.stop_grace"},
		{Config{Addr: "unix:relative/pec-reinject"}, "reinject.addr"},
		{Config{Addr: "10025"}, "reinject.addr"},
	} {
		_, err := New(tc.cfg, Deps{Store: st})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.key)) {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.key)
		}
	}
}

func TestDeliversAndMarks(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2), item(3))
		d := newDrainer(t, pf.addr, st, "A", c)
		if n, err := d.DrainOnce(context.Background()); n != 3 || err != nil {
			t.Fatalf("DrainOnce: %d %v", n, err)
		}
		for i := 1; i <= 3; i++ {
			it := item(i)
			b := pf.bodies(it.MessageID)
			if len(b) != 1 || !bytes.Equal(b[0], it.Raw) {
				t.Errorf("%s: %d copies, first equal: %v", it.MessageID, len(b), len(b) > 0 && bytes.Equal(b[0], it.Raw))
			}
		}
		if s := list(t, st, store.OutboxSent); len(s) != 3 {
			t.Errorf("%d sent", len(s))
		}
		if n, _ := d.DrainOnce(context.Background()); n != 0 {
			t.Errorf("second pass claimed %d", n)
		}
	})
}

// The drainer reaches Postfix's reinjection service on its unix socket (unix:/path), the
// only way postfix-conf offers: nobody without access to the socket file can inject.
func TestDeliversOverUnixSocket(t *testing.T) {
	c := storetest.NewClock(storetest.T0)
	st := storetest.NewMemoryClock(c.Now)
	pf := newFakePostfixUnix(t)
	queue(t, st, item(1))
	d := newDrainer(t, pf.addr, st, "A", c)
	if n, err := d.DrainOnce(context.Background()); n != 1 || err != nil {
		t.Fatalf("DrainOnce: %d %v", n, err)
	}
	if b := pf.bodies(item(1).MessageID); len(b) != 1 || !bytes.Equal(b[0], item(1).Raw) {
		t.Fatalf("%d copies over %s", len(b), pf.addr)
	}
	if s := list(t, st, store.OutboxSent); len(s) != 1 {
		t.Errorf("%d sent", len(s))
	}
}

// TestTemporaryFaults: a 4xx, a hang or a dropped connection at each stage of the SMTP
// transaction leaves the item pending with a backoff; the retry sends it; Postfix accepts
// each message exactly once.
func TestTemporaryFaults(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		d := newDrainer(t, pf.addr, st, "A", c)
		i := 0
		for _, s := range []stage{atConnect, atMail, atRcpt, atData, atEndOfData} {
			for _, f := range []fault{temp, hang, drop} {
				i++
				it := item(i)
				queue(t, st, it)
				pf.failAt(s, f, 1)
				if _, err := d.DrainOnce(context.Background()); err != nil && s != atConnect {
					t.Fatalf("%s %s: %v", s, f, err)
				}
				if acc, _ := pf.counts(it.MessageID); acc != 0 {
					t.Fatalf("%s %s: accepted despite the fault", s, f)
				}
				p := list(t, st, store.OutboxPending)
				if len(p) != 1 || p[0].Attempts != 1 || p[0].LastError == "" || !p[0].NextAttempt.After(c.Now()) {
					t.Fatalf("%s %s: pending %+v", s, f, p)
				}
				if n, _ := d.DrainOnce(context.Background()); n != 0 {
					t.Fatalf("%s %s: retried before the backoff", s, f)
				}
				c.Add(10 * time.Second)
				if n, err := d.DrainOnce(context.Background()); n != 1 || err != nil {
					t.Fatalf("%s %s: retry: %d %v", s, f, n, err)
				}
				acc, recv := pf.counts(it.MessageID)
				// After a hang or drop at end of data the server had the body but never
				// answered 250, so the client cannot know and must resend; it was still
				// accepted exactly once.
				wantRecv := 1
				if s == atEndOfData {
					wantRecv = 2
				}
				if acc != 1 || recv != wantRecv {
					t.Errorf("%s %s: accepted %d, bodies received %d (want 1, %d)", s, f, acc, recv, wantRecv)
				}
			}
		}
	})
}

// TestPermanentFaultsPark: a 5xx keeps the item, parked with the reply, never resent.
func TestPermanentFaultsPark(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		d := newDrainer(t, pf.addr, st, "A", c)
		for i, s := range []stage{atMail, atRcpt, atEndOfData} {
			it := item(100 + i)
			queue(t, st, it)
			pf.failAt(s, perm, 1)
			d.DrainOnce(context.Background()) //nolint:errcheck
			c.Add(time.Hour)
			if n, _ := d.DrainOnce(context.Background()); n != 0 {
				t.Errorf("%s: parked item claimed again", s)
			}
			if acc, _ := pf.counts(it.MessageID); acc != 0 {
				t.Errorf("%s: accepted", s)
			}
		}
		parked := list(t, st, store.OutboxParked)
		if len(parked) != 3 {
			t.Fatalf("%d parked, want 3", len(parked))
		}
		for _, p := range parked {
			if !bytes.Contains([]byte(p.LastError), []byte("550")) {
				t.Errorf("parked without the reply: %q", p.LastError)
			}
		}
	})
}

// killable wraps the store so that a test can make the drainer "die" at one point: after
// death, as for a killed process, nothing it does reaches the store any more.
type killable struct {
	store.Store
	cancel      context.CancelFunc
	dead        atomic.Bool
	afterClaim  bool // die right after claiming
	failMarkOut bool // die instead of marking sent
}

func (k *killable) kill() {
	k.dead.Store(true)
	k.cancel()
}

func (k *killable) ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error) {
	items, err := k.Store.ClaimOutbox(ctx, c)
	if k.afterClaim {
		k.kill()
	}
	return items, err
}

func (k *killable) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	if k.failMarkOut && m.State == store.OutboxSent {
		k.kill()
	}
	if k.dead.Load() {
		return errors.New("process is dead")
	}
	return k.Store.MarkOutbox(ctx, id, owner, m)
}

// TestKilledAtEveryPoint: a drainer dies at each point of its work; a new drainer
// instance resumes after the lease. Nothing is lost; the only resend is after a death
// between Postfix's 250 and the mark, and it is byte-identical with the same Message-ID.
func TestKilledAtEveryPoint(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		cases := []struct {
			name     string
			setup    func(k *killable, cancel context.CancelFunc)
			accepted int
		}{
			{"after claim", func(k *killable, _ context.CancelFunc) { k.afterClaim = true }, 1},
			{"during DATA", func(k *killable, cancel context.CancelFunc) {
				pf.failAt(atData, hang, 1)
				time.AfterFunc(100*time.Millisecond, k.kill)
			}, 1},
			{"between 250 and mark", func(k *killable, _ context.CancelFunc) { k.failMarkOut = true }, 2},
			{"after mark", func(k *killable, cancel context.CancelFunc) {}, 1},
		}
		for i, tc := range cases {
			it := item(200 + i)
			queue(t, st, it)
			ctx, cancel := context.WithCancel(context.Background())
			k := &killable{Store: st, cancel: cancel}
			tc.setup(k, cancel)
			dead := newDrainer(t, pf.addr, k, fmt.Sprintf("dead-%d", i), c)
			dead.DrainOnce(ctx) //nolint:errcheck
			cancel()

			next := newDrainer(t, pf.addr, st, fmt.Sprintf("next-%d", i), c)
			if tc.name != "after mark" {
				if n, _ := next.DrainOnce(context.Background()); n != 0 {
					t.Errorf("%s: item taken while the dead drainer's lease holds", tc.name)
				}
			}
			c.Add(testLease + time.Second)
			next.DrainOnce(context.Background()) //nolint:errcheck
			acc, _ := pf.counts(it.MessageID)
			if acc != tc.accepted {
				t.Errorf("%s: accepted %d times, want %d", tc.name, acc, tc.accepted)
			}
			for _, b := range pf.bodies(it.MessageID) {
				if !bytes.Equal(b, it.Raw) {
					t.Errorf("%s: a copy differs from the queued bytes", tc.name)
				}
			}
			if p := list(t, st, store.OutboxPending); len(p) != 0 {
				t.Errorf("%s: still pending: %+v", tc.name, p)
			}
		}
		if s := list(t, st, store.OutboxSent); len(s) != len(cases) {
			t.Errorf("%d sent, want %d", len(s), len(cases))
		}
	})
}

// TestRunWakesOnCommit: with a long poll interval, a Commit in this process wakes the drainer.
func TestRunWakesOnCommit(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		d, err := New(Config{Addr: pf.addr, Poll: time.Hour}, Deps{Store: st, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		time.Sleep(50 * time.Millisecond) // Run is now waiting
		queue(t, st, item(1))
		waitAccepted(t, pf, item(1).MessageID)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func waitAccepted(t *testing.T, pf *fakePostfix, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if acc, _ := pf.counts(id); acc > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never accepted", id)
}

// TestTwoProcessesShareTheOutbox: two Store instances on one SQLite file stand for two
// processes, each with its drainer. Items committed by one are found by polling; every
// item is accepted exactly once.
func TestTwoProcessesShareTheOutbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pec.db")
	var stores []*sqlite.Store
	for i := 0; i < 2; i++ {
		st, err := sqlite.Open(path, sqlite.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		stores = append(stores, st)
	}
	pf := newFakePostfix(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, st := range stores {
		d, err := New(Config{Addr: pf.addr, Poll: 20 * time.Millisecond, Batch: 3}, Deps{Store: st, Logger: quiet, Owner: fmt.Sprint("p", i)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }() //nolint:errcheck
	}
	const n = 60
	for i := 0; i < n; i++ {
		queue(t, stores[i%2], item(1000+i))
	}
	for i := 0; i < n; i++ {
		waitAccepted(t, pf, item(1000+i).MessageID)
	}
	cancel()
	wg.Wait()
	for i := 0; i < n; i++ {
		if acc, recv := pf.counts(item(1000 + i).MessageID); acc != 1 || recv != 1 {
			t.Errorf("item %d: accepted %d, received %d", i, acc, recv)
		}
	}
}

// TestShutdownReleasesClaims: a drainer stopped gracefully hands back the items it claimed
// but did not attempt, so that the next one does not wait for the lease.
func TestShutdownReleasesClaims(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2))
		ctx, cancel := context.WithCancel(context.Background())
		k := &killable{Store: st, cancel: cancel}
		k.afterClaim = true
		stopping := newDrainer(t, pf.addr, &shutdown{k}, "stopping", c)
		stopping.DrainOnce(ctx) //nolint:errcheck
		next := newDrainer(t, pf.addr, st, "next", c)
		if n, err := next.DrainOnce(context.Background()); n != 2 || err != nil {
			t.Fatalf("next drainer claimed %d (%v), want both items at once", n, err)
		}
		for _, i := range []int{1, 2} {
			if acc, _ := pf.counts(item(i).MessageID); acc != 1 {
				t.Errorf("item %d accepted %d times", i, acc)
			}
		}
	})
}

// shutdown cancels like killable but stays alive: a graceful stop.
type shutdown struct{ k *killable }

func (s *shutdown) ClaimOutbox(ctx context.Context, c store.Claim) ([]store.OutboxItem, error) {
	items, err := s.k.Store.ClaimOutbox(ctx, c)
	s.k.cancel()
	return items, err
}
func (s *shutdown) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	return s.k.Store.MarkOutbox(ctx, id, owner, m)
}
func (s *shutdown) OutboxWait() <-chan struct{} { return s.k.Store.OutboxWait() }

// slowClock advances the clock at every mark, as a slow Postfix would.
type slowClock struct {
	store.Store
	c *clock
}

func (s *slowClock) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	if m.State == store.OutboxSent {
		s.c.Add(time.Second)
	}
	return s.Store.MarkOutbox(ctx, id, owner, m)
}

// TestLeaseGuard: a drainer whose batch takes too long stops before its lease could run out
// during a transaction, and hands the rest back.
func TestLeaseGuard(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2), item(3))
		d := newDrainer(t, pf.addr, &slowClock{st, c}, "slow", c)
		if _, err := d.DrainOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if acc, _ := pf.counts(item(1).MessageID); acc != 1 {
			t.Fatal("first item not sent")
		}
		if acc, _ := pf.counts(item(2).MessageID); acc != 0 {
			t.Fatal("second item sent with the lease running short")
		}
		other := newDrainer(t, pf.addr, st, "other", c)
		if n, _ := other.DrainOnce(context.Background()); n != 2 {
			t.Errorf("released items: other drainer claimed %d, want 2", n)
		}
	})
}

// flakyMark fails the first fails marks of a sent item as a database failing over does
// (store.Temporary), then lets them through.
type flakyMark struct {
	store.Store
	fails atomic.Int32
}

func (f *flakyMark) MarkOutbox(ctx context.Context, id int64, owner string, m store.Mark) error {
	if m.State == store.OutboxSent && f.fails.Add(-1) >= 0 {
		return &store.Temporary{Err: errors.New("no primary")}
	}
	return f.Store.MarkOutbox(ctx, id, owner, m)
}

// TestMarkRetriedWhileTheStoreFailsOver: Postfix accepts the item while the store cannot
// record it (three temporary failures, 1.5 s): the drainer keeps marking while its claim
// lasts, so the item is marked sent and never sent again, by this drainer or another.
func TestMarkRetriedWhileTheStoreFailsOver(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		it := item(500)
		queue(t, st, it)
		f := &flakyMark{Store: st}
		f.fails.Store(3)
		d := newDrainer(t, pf.addr, f, "A", c)
		if n, err := d.DrainOnce(context.Background()); n != 1 || err != nil {
			t.Fatalf("DrainOnce: %d %v", n, err)
		}
		if s := list(t, st, store.OutboxSent); len(s) != 1 {
			t.Fatalf("%d sent, want 1", len(s))
		}
		c.Add(testLease + time.Second)
		other := newDrainer(t, pf.addr, st, "B", c)
		other.DrainOnce(context.Background()) //nolint:errcheck
		d.DrainOnce(context.Background())     //nolint:errcheck
		if acc, _ := pf.counts(it.MessageID); acc != 1 {
			t.Errorf("accepted %d times, want 1", acc)
		}
	})
}

// TestDirectKinds: the kinds Deps.Direct names go to Config.DirectAddr (Postfix's pec-deliver,
// past the pec-loop filter), the others to Addr, each once. When the direct listener cannot be
// reached (its master.cf entry missing, say) its items go to Addr in the same pass: the direct
// path only saves a Postfix pass and must not hold back an accettazione.
func TestDirectKinds(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		loop, direct := newFakePostfix(t), newFakePostfix(t)
		consegna := func(i int) store.OutboxItem {
			it := item(i)
			it.MessageID = fmt.Sprintf("<opec.%d.consegna@pec-a.test>", i)
			it.Kind = "consegna-completa"
			it.Raw = bytes.Replace(it.Raw, []byte(item(i).MessageID), []byte(it.MessageID), 1)
			return it
		}
		cfg := Config{Addr: loop.addr, DirectAddr: direct.addr, Timeout: testTimeout, Lease: testLease,
			MinBackoff: time.Second, MaxBackoff: 8 * time.Second, Poll: 50 * time.Millisecond}
		d, err := New(cfg, Deps{Store: st, Owner: "A", Now: c.Now, Logger: quiet,
			Direct: func(kind string) bool { return kind == "accettazione" }})
		if err != nil {
			t.Fatal(err)
		}
		check := func(it store.OutboxItem, want, other *fakePostfix) {
			t.Helper()
			if b := want.bodies(it.MessageID); len(b) != 1 || !bytes.Equal(b[0], it.Raw) {
				t.Errorf("%s (%s): %d copies at its listener", it.MessageID, it.Kind, len(b))
			}
			if b := other.bodies(it.MessageID); len(b) != 0 {
				t.Errorf("%s (%s): %d copies at the other listener", it.MessageID, it.Kind, len(b))
			}
		}
		queue(t, st, item(1), consegna(2), item(3), consegna(4))
		if n, err := d.DrainOnce(context.Background()); n != 4 || err != nil {
			t.Fatalf("DrainOnce: %d %v", n, err)
		}
		check(item(1), direct, loop)
		check(consegna(2), loop, direct)
		check(item(3), direct, loop)
		check(consegna(4), loop, direct)

		direct.failAt(atConnect, temp, 1)
		queue(t, st, item(5), consegna(6))
		if n, err := d.DrainOnce(context.Background()); n != 2 || err != nil {
			t.Fatalf("DrainOnce with the direct listener refusing: %d %v", n, err)
		}
		check(item(5), loop, direct)
		check(consegna(6), loop, direct)
		if s := list(t, st, store.OutboxSent); len(s) != 6 {
			t.Errorf("%d sent, want 6", len(s))
		}
	})
}
