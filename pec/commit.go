package pec

import (
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// The one commit path: every processing step fills one store.Batch and commits it once
// (pec/store's package documentation), and every message the engine emits enters that Batch
// through emit, which takes the log-event kind and the tracking input from the kind table
// (kind.go), so no call site maps kinds by hand.

// txEvent is the part of a log event every event of one transaction repeats (pec-spec.md
// §6.4): time reference, identificativo, sender, recipients, subject, the client's
// Message-ID, receipt type and the issuing gestore.
func txEvent(ref TimeRef, tx *Transaction, gestore string) store.Event {
	var recips []store.Recipient
	for _, r := range tx.Recipients {
		recips = append(recips, store.Recipient{Addr: r.Addr, Type: store.RecipientType(r.Type)})
	}
	return store.Event{Time: ref.Time(), Identificativo: tx.ID, Sender: tx.Sender, Recipients: recips,
		Subject: tx.Subject, MessageID: tx.MsgID, Gestore: gestore, ReceiptType: string(tx.Receipt)}
}

// emit records a built message in b: its log event (ev with the kind's event, the daticert
// errore and errore-esteso, the recipient it is about, and its Message-ID as generated) and,
// for a message that goes through the outbox (one with envelope recipients), its outbox item;
// a notice also moves the tracking of the recipient it is about.
func emit(b *store.Batch, m *Message, ev store.Event, created time.Time) {
	info := m.Kind.Info()
	ev.Kind = info.Event
	ev.Generated = []string{m.MessageID}
	if m.Daticert != nil {
		ev.Error = string(m.Daticert.Errore)
		if m.Daticert.Dati.ErroreEsteso != "" {
			ev.ErrorDetail = m.Daticert.Dati.ErroreEsteso
		}
	}
	if m.Rcpt != "" {
		ev.About = []string{m.Rcpt}
	}
	b.Log(ev)
	if len(m.To) > 0 {
		b.Send(store.OutboxItem{MessageID: m.MessageID, Kind: info.Name, Identificativo: ev.Identificativo,
			From: m.From, Rcpts: m.To, Raw: m.Bytes(), Created: created})
	}
	if info.Track.IsNotice() && m.Rcpt != "" {
		b.Apply(store.Transition{Identificativo: ev.Identificativo, Recipient: m.Rcpt, Input: info.Track, At: created})
	}
}

// track starts the tracking of the certified envelope recipients of a busta for the 12 h /
// 24 h notices (pec-spec.md §6.3). No receipt can come back for an esterno recipient, so
// only certified ones are tracked (INFERENCE, pec-spec.md §2.4). Data is the busta's
// daticert, from which TransactionFrom rebuilds the transaction for the notices.
func track(b *store.Batch, busta *Message, ref TimeRef, tx *Transaction, rcpts []string, certified func(string) bool, dl store.Deadlines) {
	dc := *busta.Daticert
	dc.Dati.Ricevuta = tx.Receipt
	data := daticert.Marshal(&dc)
	seen := map[string]bool{}
	for _, r := range rcpts {
		key := CanonAddr(r)
		if seen[key] || !certified(r) {
			continue
		}
		seen[key] = true
		b.Track(store.TrackInsert{Identificativo: tx.ID, Recipient: r, SentAt: ref.Time(),
			Sender: tx.Sender, Subject: tx.Subject, MessageID: tx.MsgID, Data: data, Deadlines: dl})
	}
}
