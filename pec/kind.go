package pec

import (
	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/store"
)

// Kind is the kind of a PEC message (pec-spec.md §3.1), or KindOrdinary.
type Kind int

// The kinds. The three avvenuta consegna variants are one Kind each because their MIME
// content differs (pec-spec.md §4.2); the two timeout notices differ only in their text.
const (
	KindOrdinary Kind = iota // not a PEC message
	KindBusta
	KindAnomalia
	KindAccettazione
	KindNonAccettazione
	KindNonAccettazioneVirus
	KindPresaInCarico
	KindRilevazioneVirus
	KindMancataConsegnaVirus
	KindConsegnaCompleta
	KindConsegnaBreve
	KindConsegnaSintetica
	KindMancataConsegna
	KindPreavviso12h
	KindPreavviso24h
	numKinds
)

// Postacert says whether a kind carries postacert.eml (pec-spec.md §4.2).
type Postacert int

// Postacert rules.
const (
	PostacertNo       Postacert = iota // not carried (allowed but not expected)
	PostacertMustNot                   // MUST NOT be carried
	PostacertRequired                  // always carried
)

// KindInfo holds the literal values of a kind (pec-spec.md §3.1, §3.2).
type KindInfo struct {
	Name      string // stable name used by pecctl and logs
	Title     string // Italian name
	Header    string // "X-Trasporto" or "X-Ricevuta"
	Value     string // its value
	Prefix    string // subject prefix, including the trailing space
	Tipo      daticert.Tipo
	Errore    daticert.Errore // the errore value the builder writes
	Sicurezza bool            // X-VerificaSicurezza: errore
	XMittente bool            // X-Mittente: original sender
	Postacert Postacert
	Daticert  bool // carries daticert.xml (every kind but the anomaly)
	ToSender  bool // To: is the original sender (else the sending provider's mailReceipt, or the original To/Cc for buste)
	LogLabel  string
	// Event is the legal log event recorded when we emit a message of this kind.
	Event store.EventKind
	// Track is the tracking input a message of this kind moves at the sender's provider: a
	// receipt arriving from the recipient's provider, or a notice we emit ("" = none).
	Track store.Input
	// Own: issued by the sender's provider to its own user (the accettazione, the avvisi di
	// non accettazione, the avviso di mancata consegna per virus, the 12 h and 24 h notices;
	// pec-spec.md §3.2). It never leaves the provider, and our reception point has nothing
	// to record for it (its event and any tracking transition are committed with it), so the
	// outbox hands it to Postfix past the pec-loop listener (reinject.direct_addr): one Postfix
	// pass and one verification fewer per transaction. Every other receipt we emit for our own
	// users (a same-provider presa in carico or consegna) still goes through the reception
	// point, where the sender's side records it.
	Own bool
}

var kinds = [numKinds]KindInfo{
	KindOrdinary: {Name: "ordinaria", Title: "posta ordinaria"},
	KindBusta: {Name: "busta", Title: "busta di trasporto", Header: "X-Trasporto", Value: "posta-certificata",
		Prefix: "POSTA CERTIFICATA: ", Tipo: daticert.TipoPostaCertificata, Errore: daticert.ErroreNessuno,
		Postacert: PostacertRequired, Daticert: true, LogLabel: "BustaTrasporto", Event: store.KindBustaTrasporto},
	KindAnomalia: {Name: "anomalia", Title: "busta di anomalia", Header: "X-Trasporto", Value: "errore",
		Prefix: "ANOMALIA MESSAGGIO: ", Postacert: PostacertRequired, LogLabel: "BustaAnomalia", Event: store.KindBustaAnomalia},
	KindAccettazione: {Name: "accettazione", Title: "ricevuta di accettazione", Header: "X-Ricevuta", Value: "accettazione",
		Prefix: "ACCETTAZIONE: ", Tipo: daticert.TipoAccettazione, Errore: daticert.ErroreNessuno,
		Daticert: true, ToSender: true, LogLabel: "Accettazione", Event: store.KindAccettazione, Own: true},
	KindNonAccettazione: {Name: "non-accettazione", Title: "avviso di non accettazione", Header: "X-Ricevuta", Value: "non-accettazione",
		Prefix: "AVVISO DI NON ACCETTAZIONE: ", Tipo: daticert.TipoNonAccettazione, Errore: daticert.ErroreAltro,
		Postacert: PostacertMustNot, Daticert: true, ToSender: true, LogLabel: "NonAccettazione", Event: store.KindNonAccettazione, Own: true},
	KindNonAccettazioneVirus: {Name: "non-accettazione-virus", Title: "avviso di non accettazione per virus", Header: "X-Ricevuta", Value: "non-accettazione",
		Prefix: "AVVISO DI NON ACCETTAZIONE PER VIRUS: ", Tipo: daticert.TipoNonAccettazione, Errore: daticert.ErroreVirus,
		Sicurezza: true, Postacert: PostacertMustNot, Daticert: true, ToSender: true, LogLabel: "NonAccettazioneVirus", Event: store.KindNonAccettazioneVirus, Own: true},
	KindPresaInCarico: {Name: "presa-in-carico", Title: "ricevuta di presa in carico", Header: "X-Ricevuta", Value: "presa-in-carico",
		Prefix: "PRESA IN CARICO: ", Tipo: daticert.TipoPresaInCarico, Errore: daticert.ErroreNessuno,
		Daticert: true, LogLabel: "PresaInCarico", Event: store.KindPresaInCarico, Track: store.InputPresaInCarico},
	KindRilevazioneVirus: {Name: "rilevazione-virus", Title: "avviso di rilevazione virus", Header: "X-Ricevuta", Value: "rilevazione-virus",
		Prefix: "PROBLEMA DI SICUREZZA: ", Tipo: daticert.TipoRilevazioneVirus, Errore: daticert.ErroreVirus,
		XMittente: true, Postacert: PostacertMustNot, Daticert: true, LogLabel: "RilevazioneVirus", Event: store.KindRilevazioneVirus, Track: store.InputMancataConsegna},
	KindMancataConsegnaVirus: {Name: "mancata-consegna-virus", Title: "avviso di mancata consegna per virus", Header: "X-Ricevuta", Value: "errore-consegna",
		Prefix: "AVVISO DI MANCATA CONSEGNA PER VIRUS: ", Tipo: daticert.TipoErroreConsegna, Errore: daticert.ErroreVirus,
		Sicurezza: true, Daticert: true, ToSender: true, LogLabel: "MancataConsegnaVirus", Event: store.KindMancataConsegnaVirus, Track: store.InputMancataConsegna, Own: true},
	KindConsegnaCompleta: {Name: "consegna-completa", Title: "ricevuta di avvenuta consegna (completa)", Header: "X-Ricevuta", Value: "avvenuta-consegna",
		Prefix: "CONSEGNA: ", Tipo: daticert.TipoAvvenutaConsegna, Errore: daticert.ErroreNessuno,
		Postacert: PostacertRequired, Daticert: true, ToSender: true, LogLabel: "Consegna", Event: store.KindConsegna, Track: store.InputConsegna},
	KindConsegnaBreve: {Name: "consegna-breve", Title: "ricevuta di avvenuta consegna (breve)", Header: "X-Ricevuta", Value: "avvenuta-consegna",
		Prefix: "CONSEGNA: ", Tipo: daticert.TipoAvvenutaConsegna, Errore: daticert.ErroreNessuno,
		Postacert: PostacertRequired, Daticert: true, ToSender: true, LogLabel: "Consegna", Event: store.KindConsegna, Track: store.InputConsegna},
	KindConsegnaSintetica: {Name: "consegna-sintetica", Title: "ricevuta di avvenuta consegna (sintetica)", Header: "X-Ricevuta", Value: "avvenuta-consegna",
		Prefix: "CONSEGNA: ", Tipo: daticert.TipoAvvenutaConsegna, Errore: daticert.ErroreNessuno,
		Daticert: true, ToSender: true, LogLabel: "Consegna", Event: store.KindConsegna, Track: store.InputConsegna},
	KindMancataConsegna: {Name: "mancata-consegna", Title: "avviso di mancata consegna", Header: "X-Ricevuta", Value: "errore-consegna",
		Prefix: "AVVISO DI MANCATA CONSEGNA: ", Tipo: daticert.TipoErroreConsegna, Errore: daticert.ErroreNoDest,
		Daticert: true, ToSender: true, LogLabel: "MancataConsegna", Event: store.KindMancataConsegna, Track: store.InputMancataConsegna},
	KindPreavviso12h: {Name: "preavviso-12h", Title: "avviso di mancata consegna per superamento dei tempi massimi (12 ore)", Header: "X-Ricevuta", Value: "preavviso-errore-consegna",
		Prefix: "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", Tipo: daticert.TipoPreavvisoErroreConsegna, Errore: daticert.ErroreNessuno,
		Postacert: PostacertMustNot, Daticert: true, ToSender: true, LogLabel: "MancataConsegna12h", Event: store.KindPreavviso12h, Track: store.InputNotice12h, Own: true},
	KindPreavviso24h: {Name: "preavviso-24h", Title: "avviso di mancata consegna per superamento dei tempi massimi (24 ore)", Header: "X-Ricevuta", Value: "preavviso-errore-consegna",
		Prefix: "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ", Tipo: daticert.TipoPreavvisoErroreConsegna, Errore: daticert.ErroreNessuno,
		Postacert: PostacertMustNot, Daticert: true, ToSender: true, LogLabel: "MancataConsegna24h", Event: store.KindMancataConsegna24h, Track: store.InputNotice24h, Own: true},
}

// Info returns the literal values of k.
func (k Kind) Info() KindInfo {
	if k < 0 || k >= numKinds {
		return KindInfo{Name: "sconosciuto"}
	}
	return kinds[k]
}

func (k Kind) String() string { return k.Info().Name }

// Kinds lists every PEC kind (without KindOrdinary) in pec-spec.md §3.1 order.
func Kinds() []Kind {
	out := make([]Kind, 0, numKinds-1)
	for k := KindBusta; k < numKinds; k++ {
		out = append(out, k)
	}
	return out
}

// OwnKind reports whether the outbox kind name (KindInfo.Name) is one of the Own kinds.
func OwnKind(name string) bool {
	k, ok := KindByName(name)
	return ok && k.Info().Own
}

// KindByName finds a kind by its Name.
func KindByName(name string) (Kind, bool) {
	for k := KindOrdinary; k < numKinds; k++ {
		if kinds[k].Name == name {
			return k, true
		}
	}
	return KindOrdinary, false
}

// IsReceipt reports whether k is a ricevuta or avviso (it has X-Ricevuta).
func (k Kind) IsReceipt() bool { return k.Info().Header == "X-Ricevuta" }

// IsConsegna reports whether k is one of the three avvenuta consegna variants.
func (k Kind) IsConsegna() bool {
	return k == KindConsegnaCompleta || k == KindConsegnaBreve || k == KindConsegnaSintetica
}
