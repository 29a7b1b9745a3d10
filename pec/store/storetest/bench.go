package storetest

import (
	"fmt"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// The benchmarks' data, shared by every store's benchmarks so that their numbers compare.

// BenchRaw is the size of a signed accettazione (about 6 KB), the outbox item of BenchBatch.
var BenchRaw = []byte(strings.Repeat("Received: from a by b; signed receipt body line of 76 characters.......\r\n", 80))

// BenchBatch is what the access point commits for one accepted message: the accettazione
// and busta events, one tracking row, and the signed accettazione in the outbox.
func BenchBatch(i int, raw []byte) *store.Batch {
	at := time.Now()
	id := fmt.Sprintf("opec01.%s.%07d.01@pec-a.test", at.Format("20060102150405"), i)
	e := BenchEvent(i, at)
	e.Identificativo = id
	b := &store.Batch{}
	b.Log(e)
	e.Kind = store.KindBustaTrasporto
	b.Log(e)
	b.Track(store.TrackInsert{Identificativo: id, Recipient: e.Recipients[0].Addr, SentAt: at, Sender: e.Sender, Subject: e.Subject, MessageID: e.MessageID})
	b.Send(store.OutboxItem{MessageID: "<" + id + ".acc>", Kind: "accettazione", Identificativo: id,
		From: "posta-certificata@pec-a.test", Rcpts: []string{e.Sender}, Raw: raw})
	return b
}

// BenchEvent is a realistic event: 10,000 senders, 50,000 certified recipients, one
// external recipient on every third message, subjects of 40 to 80 characters.
func BenchEvent(i int, at time.Time) store.Event {
	msg := i / 2
	e := store.Event{
		Time:           at,
		Identificativo: fmt.Sprintf("opec01.%07d.01@pec-a.test", msg),
		Kind:           store.KindAccettazione,
		Sender:         fmt.Sprintf("utente%d@pec-a.test", (msg*7919)%10000),
		Recipients:     []store.Recipient{{Addr: fmt.Sprintf("ufficio%d@pec-b.test", (msg*104729)%50000), Type: store.Certified}},
		Subject:        fmt.Sprintf("Trasmissione fattura elettronica n. %d/2026 - %s", msg, strings.Repeat("x", msg%40)),
		MessageID:      fmt.Sprintf("<%d.%d@mua.example>", msg, at.Unix()),
		Gestore:        "Provider A S.p.A.",
		QueueID:        fmt.Sprintf("4Q%09X", msg),
		Size:           int64(15000 + msg%200000),
		Generated:      []string{fmt.Sprintf("opec01.%07d.01.acc@pec-a.test", msg)},
	}
	if i%2 == 1 {
		e.Kind = store.KindBustaTrasporto
	}
	if msg%3 == 0 {
		e.Recipients = append(e.Recipients, store.Recipient{Addr: fmt.Sprintf("info%d@posta.test", msg%1000), Type: store.External})
	}
	return e
}

// BenchStart and BenchSpan place the search benchmarks' log: n events spread evenly over
// the 30 days of October 2026 (event i at BenchTime(i, n)).
var BenchStart = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

// BenchSpan is the time the search benchmarks' log covers.
const BenchSpan = 30 * 24 * time.Hour

// BenchTime is the time of event i of n in the search benchmarks' log.
func BenchTime(i, n int) time.Time {
	return BenchStart.Add(time.Duration(int64(BenchSpan) / int64(n) * int64(i)))
}
