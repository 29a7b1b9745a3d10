package reinject

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
	"github.com/gestore-pec/gestore/pec/store/storetest"
)

// Restarts send nothing twice (issue 11 item 4): a graceful stop finishes the message being
// sent and records it; a restarted drainer (same node, same owner) resumes its own claims
// at once; after a kill only the message in flight may go again, byte for byte.

// TestGracefulStopDuringData: the drainer is stopped while Postfix is reading the DATA of an
// item it then accepts. The stop waits for Postfix's 250 and records the item sent: the
// restarted drainer, now or after any lease, does not send it again.
func TestGracefulStopDuringData(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2))
		pf.failAt(atEndOfData, slow, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-pf.reached; cancel() }() // SIGTERM while Postfix holds the body
		d := newDrainer(t, pf.addr, st, "node-a", c)
		d.DrainOnce(ctx) //nolint:errcheck
		// Postfix queued it, whatever the drainer saw.
		waitAccepted(t, pf, item(1).MessageID)
		if acc, _ := pf.counts(item(2).MessageID); acc != 0 {
			t.Errorf("the stopping drainer started another item")
		}
		if s := list(t, st, store.OutboxSent); len(s) != 1 || s[0].MessageID != item(1).MessageID {
			t.Errorf("sent after the stop: %+v", s)
		}
		restarted := newDrainer(t, pf.addr, st, "node-a", c)
		if n, err := restarted.DrainOnce(context.Background()); n != 1 || err != nil {
			t.Errorf("restarted drainer claimed %d (%v), want the one left", n, err)
		}
		c.Add(testLease + time.Second)
		restarted.DrainOnce(context.Background()) //nolint:errcheck
		for _, i := range []int{1, 2} {
			if acc, recv := pf.counts(item(i).MessageID); acc != 1 || recv != 1 {
				t.Errorf("item %d: accepted %d, received %d; want 1, 1", i, acc, recv)
			}
		}
	})
}

// TestRestartResumesOwnClaimsAtOnce: a drainer dies holding claims; the same node's drainer,
// started again with the default owner, sends them at once, not after the lease. Another
// node's drainer still waits for the lease.
func TestRestartResumesOwnClaimsAtOnce(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2), item(3))
		cfg := Config{Addr: pf.addr, Timeout: testTimeout, Lease: testLease, Poll: 50 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		k := &killable{Store: st, cancel: cancel, afterClaim: true}
		dead, err := New(cfg, Deps{Store: k, Now: c.Now, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		dead.DrainOnce(ctx) //nolint:errcheck
		if p := list(t, st, store.OutboxPending); len(p) != 3 || p[0].ClaimedBy != dead.Owner() {
			t.Fatalf("the dead drainer's claims: %+v", p)
		}
		other := newDrainer(t, pf.addr, st, "another-node", c)
		if n, _ := other.DrainOnce(context.Background()); n != 0 {
			t.Fatalf("another node took %d items under a live lease", n)
		}
		restarted, err := New(cfg, Deps{Store: st, Now: c.Now, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		if restarted.Owner() != dead.Owner() {
			t.Fatalf("owner changed across a restart: %q, then %q", dead.Owner(), restarted.Owner())
		}
		if n, err := restarted.DrainOnce(context.Background()); n != 3 || err != nil {
			t.Fatalf("restarted drainer claimed %d (%v), want its 3 at once", n, err)
		}
		for i := 1; i <= 3; i++ {
			if acc, _ := pf.counts(item(i).MessageID); acc != 1 {
				t.Errorf("item %d accepted %d times", i, acc)
			}
		}
	})
}

// TestKilledDuringDataRestartsAtOnce: SIGKILL while Postfix has the DATA of the first of
// three claimed items. The same node restarted sends at once; only the item in flight may go
// a second time, with the same bytes (and so the same Message-ID).
func TestKilledDuringDataRestartsAtOnce(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1), item(2), item(3))
		pf.failAt(atEndOfData, slow, 1)
		ctx, cancel := context.WithCancel(context.Background())
		k := &killable{Store: st, cancel: cancel}
		go func() { <-pf.reached; k.kill() }()
		newDrainer(t, pf.addr, k, "node-a", c).DrainOnce(ctx) //nolint:errcheck
		restarted := newDrainer(t, pf.addr, st, "node-a", c)
		if n, err := restarted.DrainOnce(context.Background()); n != 3 || err != nil {
			t.Fatalf("restarted drainer claimed %d (%v), want 3 at once", n, err)
		}
		for i := 1; i <= 3; i++ {
			it := item(i)
			acc, _ := pf.counts(it.MessageID)
			if want := 1; acc != want && !(i == 1 && acc == 2) {
				t.Errorf("item %d accepted %d times", i, acc)
			}
			if i > 1 && acc != 1 {
				t.Errorf("item %d, not in flight at the kill, accepted %d times", i, acc)
			}
			for _, b := range pf.bodies(it.MessageID) {
				if !bytes.Equal(b, it.Raw) {
					t.Errorf("item %d: a copy differs from the queued bytes", i)
				}
			}
		}
		if s := list(t, st, store.OutboxSent); len(s) != 3 {
			t.Errorf("%d sent, want 3", len(s))
		}
	})
}

// TestGracefulStopIsBounded: stopped while Postfix hangs on the DATA, the drainer gives the
// message StopGrace, then hands it back: the stop does not wait for the whole SMTP timeout,
// and the restarted drainer sends the item at once.
func TestGracefulStopIsBounded(t *testing.T) {
	forStores(t, func(t *testing.T, st store.Store, c *clock) {
		pf := newFakePostfix(t)
		queue(t, st, item(1))
		pf.failAt(atEndOfData, hang, 1)
		d, err := New(Config{Addr: pf.addr, Timeout: 5 * time.Second, Lease: time.Minute, StopGrace: 200 * time.Millisecond},
			Deps{Store: st, Owner: "node-a", Now: c.Now, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		d.DrainOnce(ctx) //nolint:errcheck
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the stop took %v with StopGrace 200ms", took)
		}
		p := list(t, st, store.OutboxPending)
		if len(p) != 1 || p[0].ClaimedBy != "" || p[0].NextAttempt.After(c.Now()) {
			t.Fatalf("after a bounded stop: %+v, want pending, unclaimed, due", p)
		}
		restarted := newDrainer(t, pf.addr, st, "node-a", c)
		if n, err := restarted.DrainOnce(context.Background()); n != 1 || err != nil {
			t.Fatalf("restart: %d %v", n, err)
		}
		if acc, _ := pf.counts(item(1).MessageID); acc != 1 {
			t.Errorf("accepted %d times", acc)
		}
	})
}

func TestDefaultOwnerIsStable(t *testing.T) {
	st := storetest.NewMemory()
	a, err := New(Config{Addr: "127.0.0.1:1"}, Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(Config{Addr: "127.0.0.1:1"}, Deps{Store: st})
	if a.Owner() == "" || a.Owner() != b.Owner() {
		t.Errorf("default owners %q and %q", a.Owner(), b.Owner())
	}
	if c, _ := New(Config{Addr: "127.0.0.1:1"}, Deps{Store: st, Owner: "pec-milter/node-2"}); c.Owner() != "pec-milter/node-2" {
		t.Errorf("explicit owner: %q", c.Owner())
	}
}
