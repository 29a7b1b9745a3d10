package store

import (
	"fmt"
	"strings"
	"time"
)

// EventKind is the type of a legal log event. The string values are stable: they are stored
// in the database and in sealed exports, so never change one. They follow the X-Ricevuta /
// X-Trasporto values of pec-spec §3.1 where one exists, with a suffix where the header
// value is shared by several events (the labels of a real provider's log, [ULIB] in
// pec-spec §6.4, are given next to each constant).
type EventKind string

// Events a provider logs, one per row of pec-spec §3.1 and §7.4, plus the receptions.
const (
	KindBustaTrasporto       EventKind = "busta-trasporto"                // BustaTrasporto: busta sent by the access point
	KindBustaAnomalia        EventKind = "busta-anomalia"                 // BustaAnomalia: ordinary or faulty mail wrapped at the reception point
	KindAccettazione         EventKind = "accettazione"                   // Accettazione
	KindNonAccettazione      EventKind = "non-accettazione"               // NonAccettazione: formal exception, reason in ErrorDetail
	KindNonAccettazioneVirus EventKind = "non-accettazione-virus"         // NonAccettazioneVirus
	KindPresaInCarico        EventKind = "presa-in-carico"                // PresaInCarico: issued by our reception point
	KindConsegna             EventKind = "avvenuta-consegna"              // Consegna: issued by our delivery point
	KindMancataConsegna      EventKind = "mancata-consegna"               // MancataConsegna: issued by our delivery point
	KindMancataConsegnaVirus EventKind = "mancata-consegna-virus"         // MancataConsegnaVirus: issued on a rilevazione virus
	KindRilevazioneVirus     EventKind = "rilevazione-virus"              // RilevazioneVirus: virus found inside a valid busta
	KindPreavviso12h         EventKind = "preavviso-mancata-consegna-12h" // MancataConsegna12h
	KindMancataConsegna24h   EventKind = "mancata-consegna-24h"           // MancataConsegna24h
	KindAnomalia             EventKind = "anomalia"                       // a message refused or dropped at the reception point (policy reject, infected ordinary mail)
	KindRicezioneRicevuta    EventKind = "ricezione-ricevuta"             // a receipt or notice from another provider arrived for one of our transactions
	KindRicezioneBusta       EventKind = "ricezione-busta"                // a valid busta arrived at our reception point
	KindConsegnaRicevuta     EventKind = "consegna-ricevuta"              // a receipt or notice was delivered to our user's mailbox
	KindNonAccodato          EventKind = "non-accodato"                   // a prepared busta or presa in carico Postfix never queued (held step expired): nothing attested
	KindContenuto            EventKind = "contenuto-segnalato"            // the content inspection flagged the message (macros, files not checked): ErrorDetail says what
)

// Kinds lists every EventKind, in a stable order.
var Kinds = []EventKind{
	KindBustaTrasporto, KindBustaAnomalia, KindAccettazione, KindNonAccettazione,
	KindNonAccettazioneVirus, KindPresaInCarico, KindConsegna, KindMancataConsegna,
	KindMancataConsegnaVirus, KindRilevazioneVirus, KindPreavviso12h, KindMancataConsegna24h,
	KindAnomalia, KindRicezioneRicevuta, KindRicezioneBusta, KindConsegnaRicevuta, KindNonAccodato, KindContenuto,
}

// Valid reports whether k is one of the defined kinds.
func (k EventKind) Valid() bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// RecipientType tells a certified (PEC) recipient from an external (ordinary mail) one, as
// daticert's destinatari tipo attribute (pec-spec §5.2).
type RecipientType string

const (
	Certified RecipientType = "certificato"
	External  RecipientType = "esterno"
)

// Recipient is one recipient of the original message.
type Recipient struct {
	Addr string        `json:"addr"`
	Type RecipientType `json:"type"`
}

// Event is one entry of the legal log (pec-spec §6.4). Fields that do not apply stay empty.
type Event struct {
	// Seq is assigned by the store at Commit: strictly increasing, never reused.
	Seq int64
	// Time is the time reference of the processing step (pec-spec §6.2), the same for
	// every event of one transaction.
	Time           time.Time
	Identificativo string // the PEC msgid of the transaction (pec-spec §6.1)
	Kind           EventKind
	Sender         string      // original sender (daticert mittente)
	Recipients     []Recipient // original recipients with their type
	Subject        string      // original subject
	MessageID      string      // the client's original Message-ID (X-Riferimento-Message-ID)
	Gestore        string      // issuing provider (gestore-emittente)
	ReceiptType    string      // completa, breve, sintetica
	About          []string    // the recipient(s) a receipt or notice is about (consegna= / ricezione=)
	Error          string      // daticert errore: nessuno, no-dest, no-dominio, virus, altro
	ErrorDetail    string      // errore-esteso, or the reason of a non-accettazione
	Virus          string      // virus name
	QueueID        string      // Postfix queue id
	Size           int64       // message size in bytes
	Generated      []string    // Message-IDs of the messages generated by this event
}

func (e *Event) validate() error {
	if e.Time.IsZero() {
		return fmt.Errorf("%w: event without time", ErrInvalid)
	}
	if !e.Kind.Valid() {
		return fmt.Errorf("%w: event kind %q", ErrInvalid, e.Kind)
	}
	if e.Identificativo == "" && e.Kind != KindAnomalia && e.Kind != KindBustaAnomalia {
		return fmt.Errorf("%w: %s event without identificativo", ErrInvalid, e.Kind)
	}
	return nil
}

// Query selects log events. Empty fields match everything; set fields are ANDed. Address
// comparisons ignore ASCII case.
type Query struct {
	From, To       time.Time // Time in [From, To); zero: unbounded
	Identificativo string
	Sender         string
	Recipient      string // among Recipients or About
	Mailbox        string // Sender, a recipient, or About: one user's extract
	Subject        string // substring, ASCII case-insensitive
	Kinds          []EventKind
	AfterSeq       int64 // Seq > AfterSeq (paging)
	Limit          int   // 0: no limit
}

// Match reports whether e matches q. Implementations without indexes (the in-memory store)
// filter with it; others must give the same answers.
func (q *Query) Match(e *Event) bool {
	if !q.From.IsZero() && e.Time.Before(q.From) || !q.To.IsZero() && !e.Time.Before(q.To) {
		return false
	}
	if e.Seq <= q.AfterSeq {
		return false
	}
	if q.Identificativo != "" && e.Identificativo != q.Identificativo {
		return false
	}
	if q.Sender != "" && !strings.EqualFold(e.Sender, q.Sender) {
		return false
	}
	if q.Recipient != "" && !e.hasRecipient(q.Recipient) {
		return false
	}
	if q.Mailbox != "" && !strings.EqualFold(e.Sender, q.Mailbox) && !e.hasRecipient(q.Mailbox) {
		return false
	}
	if q.Subject != "" && !strings.Contains(asciiLower(e.Subject), asciiLower(q.Subject)) {
		return false
	}
	if len(q.Kinds) > 0 {
		ok := false
		for _, k := range q.Kinds {
			ok = ok || k == e.Kind
		}
		if !ok {
			return false
		}
	}
	return true
}

// Addresses returns the lower-cased addresses an event concerns besides its sender:
// recipients and About, without duplicates. Stores index them for Recipient and Mailbox
// queries.
func (e *Event) Addresses() []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		a = strings.ToLower(strings.TrimSpace(a))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, r := range e.Recipients {
		add(r.Addr)
	}
	for _, a := range e.About {
		add(a)
	}
	return out
}

func (e *Event) hasRecipient(addr string) bool {
	for _, a := range e.Addresses() {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// asciiLower folds A-Z only, as SQLite's lower() does, so that every store answers Subject
// queries alike.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
