// Package heldcodec is the stored form of a held record's batches (store.Held OnConfirm and
// OnExpiry), shared by the SQL stores so that a record written by one reads back in the other
// (pecctl store migrate copies them as they are).
package heldcodec

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gestore-pec/gestore/pec/store"
)

// A held record's batches (OnConfirm, OnExpiry) are stored as JSON of the wire types below,
// not of the store types themselves: a field renamed in package store must not silently
// empty the batches of records written by an earlier version. The shape carries a version
// ("v"); a change of shape is a new version with its decoder, and records of every earlier
// version stay readable until PurgeHeld has removed them. Times are Unix nanoseconds (0:
// zero time), byte fields base64 (encoding/json's []byte).
//
// TestHeldCodecCoversEveryField fails when a field is added to a type carried here without
// adding it to the wire type.

const heldBatchVersion = 1

type wireBatchV1 struct {
	V           int              `json:"v"`
	Events      []wireEvent      `json:"events,omitempty"`
	Inserts     []wireInsert     `json:"inserts,omitempty"`
	Transitions []wireTransition `json:"transitions,omitempty"`
	Outbox      []wireOutbox     `json:"outbox,omitempty"`
	Quarantine  []wireQuarantine `json:"quarantine,omitempty"`
}

type wireEvent struct {
	Time           int64             `json:"time"`
	Identificativo string            `json:"identificativo,omitempty"`
	Kind           string            `json:"kind"`
	Sender         string            `json:"sender,omitempty"`
	Recipients     []store.Recipient `json:"recipients,omitempty"` // {"addr","type"}: tagged in package store
	Subject        string            `json:"subject,omitempty"`
	MessageID      string            `json:"message_id,omitempty"`
	Gestore        string            `json:"gestore,omitempty"`
	ReceiptType    string            `json:"receipt_type,omitempty"`
	About          []string          `json:"about,omitempty"`
	Error          string            `json:"error,omitempty"`
	ErrorDetail    string            `json:"error_detail,omitempty"`
	Virus          string            `json:"virus,omitempty"`
	QueueID        string            `json:"queue_id,omitempty"`
	Size           int64             `json:"size,omitempty"`
	Generated      []string          `json:"generated,omitempty"`
}

type wireInsert struct {
	Identificativo string `json:"identificativo"`
	Recipient      string `json:"recipient"`
	SentAt         int64  `json:"sent_at"`
	Sender         string `json:"sender,omitempty"`
	Subject        string `json:"subject,omitempty"`
	MessageID      string `json:"message_id,omitempty"`
	Data           []byte `json:"data,omitempty"`
	First          int64  `json:"first,omitempty"` // Deadlines, nanoseconds; all 0: defaults
	FinalFrom      int64  `json:"final_from,omitempty"`
	Final          int64  `json:"final,omitempty"`
}

type wireTransition struct {
	Identificativo string `json:"identificativo"`
	Recipient      string `json:"recipient"`
	Input          string `json:"input"`
	At             int64  `json:"at"`
	ProvesQueued   bool   `json:"await,omitempty"` // named Await until 2026-12: the tag stays
}

type wireOutbox struct {
	MessageID      string   `json:"message_id"`
	Kind           string   `json:"kind"`
	Identificativo string   `json:"identificativo,omitempty"`
	From           string   `json:"from"`
	Rcpts          []string `json:"rcpts"`
	Raw            []byte   `json:"raw"`
	Created        int64    `json:"created,omitempty"`
}

type wireQuarantine struct {
	Identificativo string   `json:"identificativo,omitempty"`
	Time           int64    `json:"time"`
	Virus          string   `json:"virus,omitempty"`
	Sender         string   `json:"sender,omitempty"`
	Recipients     []string `json:"recipients,omitempty"`
	QueueID        string   `json:"queue_id,omitempty"`
	Raw            []byte   `json:"raw"`
}

// Encode returns the stored form of b, nil for an empty batch. b has been validated;
// its own Holds are refused by validation, and store-maintained fields (IDs, outbox
// delivery state) are not kept: Commit ignores them.
func Encode(b *store.Batch) ([]byte, error) {
	if b.Empty() {
		return nil, nil
	}
	w := wireBatchV1{V: heldBatchVersion}
	for _, e := range b.Events {
		w.Events = append(w.Events, wireEvent{Time: ns(e.Time), Identificativo: e.Identificativo, Kind: string(e.Kind),
			Sender: e.Sender, Recipients: e.Recipients, Subject: e.Subject, MessageID: e.MessageID, Gestore: e.Gestore,
			ReceiptType: e.ReceiptType, About: e.About, Error: e.Error, ErrorDetail: e.ErrorDetail, Virus: e.Virus,
			QueueID: e.QueueID, Size: e.Size, Generated: e.Generated})
	}
	for _, t := range b.Inserts {
		w.Inserts = append(w.Inserts, wireInsert{Identificativo: t.Identificativo, Recipient: t.Recipient,
			SentAt: ns(t.SentAt), Sender: t.Sender, Subject: t.Subject, MessageID: t.MessageID, Data: t.Data,
			First: int64(t.Deadlines.First), FinalFrom: int64(t.Deadlines.FinalFrom), Final: int64(t.Deadlines.Final)})
	}
	for _, t := range b.Transitions {
		w.Transitions = append(w.Transitions, wireTransition{Identificativo: t.Identificativo, Recipient: t.Recipient,
			Input: string(t.Input), At: ns(t.At), ProvesQueued: t.ProvesQueued})
	}
	for _, o := range b.Outbox {
		w.Outbox = append(w.Outbox, wireOutbox{MessageID: o.MessageID, Kind: o.Kind, Identificativo: o.Identificativo,
			From: o.From, Rcpts: o.Rcpts, Raw: o.Raw, Created: ns(o.Created)})
	}
	for _, q := range b.Quarantine {
		w.Quarantine = append(w.Quarantine, wireQuarantine{Identificativo: q.Identificativo, Time: ns(q.Time),
			Virus: q.Virus, Sender: q.Sender, Recipients: q.Recipients, QueueID: q.QueueID, Raw: q.Raw})
	}
	return json.Marshal(w)
}

// Decode reads what Encode wrote, in any version this program knows.
func Decode(data []byte) (store.Batch, error) {
	var b store.Batch
	if len(data) == 0 {
		return b, nil
	}
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return b, fmt.Errorf("held batch: %w", err)
	}
	if v.V != 1 {
		return b, fmt.Errorf("held batch: version %d is unknown to this program (newest %d)", v.V, heldBatchVersion)
	}
	var w wireBatchV1
	if err := json.Unmarshal(data, &w); err != nil {
		return b, fmt.Errorf("held batch v1: %w", err)
	}
	for _, e := range w.Events {
		b.Events = append(b.Events, store.Event{Time: fromNS(e.Time), Identificativo: e.Identificativo,
			Kind: store.EventKind(e.Kind), Sender: e.Sender, Recipients: e.Recipients, Subject: e.Subject,
			MessageID: e.MessageID, Gestore: e.Gestore, ReceiptType: e.ReceiptType, About: e.About, Error: e.Error,
			ErrorDetail: e.ErrorDetail, Virus: e.Virus, QueueID: e.QueueID, Size: e.Size, Generated: e.Generated})
	}
	for _, t := range w.Inserts {
		b.Inserts = append(b.Inserts, store.TrackInsert{Identificativo: t.Identificativo, Recipient: t.Recipient,
			SentAt: fromNS(t.SentAt), Sender: t.Sender, Subject: t.Subject, MessageID: t.MessageID, Data: t.Data,
			Deadlines: store.Deadlines{First: time.Duration(t.First), FinalFrom: time.Duration(t.FinalFrom),
				Final: time.Duration(t.Final)}})
	}
	for _, t := range w.Transitions {
		b.Transitions = append(b.Transitions, store.Transition{Identificativo: t.Identificativo, Recipient: t.Recipient,
			Input: store.Input(t.Input), At: fromNS(t.At), ProvesQueued: t.ProvesQueued})
	}
	for _, o := range w.Outbox {
		b.Outbox = append(b.Outbox, store.OutboxItem{MessageID: o.MessageID, Kind: o.Kind, Identificativo: o.Identificativo,
			From: o.From, Rcpts: o.Rcpts, Raw: o.Raw, Created: fromNS(o.Created)})
	}
	for _, q := range w.Quarantine {
		b.Quarantine = append(b.Quarantine, store.QuarantineItem{Identificativo: q.Identificativo, Time: fromNS(q.Time),
			Virus: q.Virus, Sender: q.Sender, Recipients: q.Recipients, QueueID: q.QueueID, Raw: q.Raw})
	}
	return b, nil
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
