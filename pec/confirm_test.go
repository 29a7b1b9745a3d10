package pec_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/store"
)

// Nothing attested before Postfix holds the busta: after Submit the accettazione and the
// busta-trasporto event are held; the confirmation releases them once, however often it comes.
func TestSubmitHeldUntilConfirmed(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	res, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(res.Confirm, "@"+pec.DefaultConfirmDomain) || len(res.Confirm) < 26 {
		t.Fatalf("confirmation recipient %q", res.Confirm)
	}
	if n, e := len(f.outbox(t)), len(f.events(t)); n != 0 || e != 0 {
		t.Fatalf("before confirmation: %d outbox items, %d events; want none", n, e)
	}
	for i := range 3 {
		f.now = f.now.Add(time.Second) // Postfix redelivering later
		c, err := f.ap.Confirm(context.Background(), res.Confirm)
		if err != nil || c.Identificativo != res.Identificativo || c.Now != (i == 0) {
			t.Fatalf("confirmation %d: %+v %v", i, c, err)
		}
	}
	items := f.outbox(t)
	kinds := map[store.EventKind]int{}
	for _, e := range f.events(t) {
		kinds[e.Kind]++
	}
	if len(items) != 1 || items[0].Kind != "accettazione" || kinds[store.KindAccettazione] != 1 || kinds[store.KindBustaTrasporto] != 1 {
		t.Fatalf("after confirmation: outbox %d, events %v", len(items), kinds)
	}
	if _, err := f.ap.Confirm(context.Background(), "nosuchtoken@"+pec.DefaultConfirmDomain); !errors.Is(err, pec.ErrUnknownConfirmation) {
		t.Fatalf("unknown token: %v", err)
	}
}

// A client that retries after a lost reply gets the first outcome: the same busta identity and
// confirmation while the first is unconfirmed, a discard once it is queued; never a second
// accettazione. A new Received field (Postfix's trace of the new attempt) does not make it a
// new message.
func TestSubmitRetryIsIdempotent(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	first, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatal(err)
	}
	retry := append([]byte("Received: from client by mx.pec-a.test with ESMTPSA id XYZ2\r\n"), good...)
	second, err := f.ap.Submit(context.Background(), submission(retry))
	if err != nil {
		t.Fatal(err)
	}
	if second.Identificativo != first.Identificativo || second.Confirm != first.Confirm || !second.Retry || len(second.Busta) == 0 {
		t.Fatalf("retry before confirmation: %+v, first %s %s", second, first.Identificativo, first.Confirm)
	}
	c := classify(t, bytes.Join(second.Busta, nil), f.kr.CA)
	if c.Daticert.Dati.Identificativo != first.Identificativo {
		t.Fatalf("rebuilt busta identificativo %s", c.Daticert.Dati.Identificativo)
	}
	f.confirm(t, second)
	third, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil || !third.Discard || third.Identificativo != first.Identificativo {
		t.Fatalf("retry after the busta was queued: %+v %v", third, err)
	}
	if n := len(f.outbox(t)); n != 1 {
		t.Fatalf("%d outbox items, want one accettazione", n)
	}
	// Another message (another Message-ID) of the same user is a new transaction.
	other := bytes.Replace(good, []byte("client-1@"), []byte("client-2@"), 1)
	fourth, err := f.ap.Submit(context.Background(), submission(other))
	if err != nil || fourth.Identificativo == first.Identificativo || fourth.Discard {
		t.Fatalf("a different message: %+v %v", fourth, err)
	}
}

// A refused submission retried gets the same refusal and no second avviso.
func TestSubmitRefusalRetried(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	bad := msg("From: alice@pec-a.test", "To: bruno@pec-b.test", "Bcc: carla@pec-b.test", "Subject: x", "Message-ID: <r@x>")
	var ids []string
	for range 3 {
		_, err := f.ap.Submit(context.Background(), submission(bad, "bruno@pec-b.test"))
		var ref *pec.Refused
		if !errors.As(err, &ref) || ref.Kind != pec.KindNonAccettazione {
			t.Fatalf("err = %v", err)
		}
		ids = append(ids, ref.Identificativo)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("identificativi %v", ids)
	}
	if n := len(f.outbox(t)); n != 1 {
		t.Fatalf("%d avvisi in the outbox, want 1", n)
	}
}

// A held step never confirmed expires with a non-accodato event and no accettazione. A retry
// afterwards gets the same busta and confirmation: the first copy may still be in a Postfix
// that was down past the expiry, and whichever copy is confirmed first (late) releases the one
// accettazione; the other confirmation changes nothing.
func TestSubmitUnconfirmedExpires(t *testing.T) {
	f := newFixture(t, pec.Limits{})
	first, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(2 * time.Hour) // past the default 1h expiry
	if n, err := f.ap.ExpireHeld(context.Background()); n != 1 || err != nil {
		t.Fatalf("ExpireHeld = %d, %v", n, err)
	}
	evs := f.events(t)
	if len(evs) != 1 || evs[0].Kind != store.KindNonAccodato || evs[0].Identificativo != first.Identificativo {
		t.Fatalf("events %+v", evs)
	}
	if n := len(f.outbox(t)); n != 0 {
		t.Fatalf("%d outbox items after expiry", n)
	}
	again, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil {
		t.Fatalf("retry after expiry: %v", err)
	}
	if again.Identificativo != first.Identificativo || again.Confirm != first.Confirm || again.Discard || !again.Retry {
		t.Fatalf("retry after expiry: identificativo %s confirm %s retry %v discard %v; first %s %s",
			again.Identificativo, again.Confirm, again.Retry, again.Discard, first.Identificativo, first.Confirm)
	}
	f.confirm(t, again) // the retry's copy
	f.confirm(t, first) // the first copy, from the Postfix that came back
	items := f.outbox(t)
	if len(items) != 1 || items[0].Kind != "accettazione" || items[0].Identificativo != first.Identificativo {
		t.Fatalf("outbox after both confirmations: %+v, want one accettazione", items)
	}
	n := map[store.EventKind]int{}
	for _, e := range f.events(t) {
		n[e.Kind]++
	}
	if n[store.KindNonAccodato] != 1 || n[store.KindAccettazione] != 1 || n[store.KindBustaTrasporto] != 1 {
		t.Fatalf("events %v", n)
	}
	third, err := f.ap.Submit(context.Background(), submission(good))
	if err != nil || !third.Discard || third.Identificativo != first.Identificativo {
		t.Fatalf("retry once released: %+v %v", third, err)
	}
}

// A busta that would exceed what Postfix queues (header recipients are repeated in daticert
// and text) gets the avviso di non accettazione before signing, never a busta cleanup refuses.
func TestSubmitBustaTooLarge(t *testing.T) {
	f := newFixtureOpts(t, pec.Limits{}, pec.Options{MaxSize: 64 << 10})
	var to []string
	for i := range 800 {
		to = append(to, "destinatario"+strings.Repeat("x", 10)+strconv.Itoa(i)+"@posta.test")
	}
	m := msg("From: alice@pec-a.test", "To: "+strings.Join(to, ",\r\n "), "Subject: tanti", "Message-ID: <big@x>")
	if len(m) > 64<<10 {
		t.Fatalf("the original (%d bytes) must fit the limit; only its busta must not", len(m))
	}
	_, err := f.ap.Submit(context.Background(), submission(m, to...))
	var ref *pec.Refused
	if !errors.As(err, &ref) || !strings.Contains(ref.Reason, "busta di trasporto supererebbe") {
		t.Fatalf("err = %v", err)
	}
	items := f.outbox(t)
	if len(items) != 1 || items[0].Kind != "non-accettazione" {
		t.Fatalf("outbox %+v", items)
	}
	for _, e := range f.events(t) {
		if e.Kind == store.KindAccettazione || e.Kind == store.KindBustaTrasporto {
			t.Fatalf("event %s for a busta that was never built", e.Kind)
		}
	}
}
