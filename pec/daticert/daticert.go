// Package daticert is the model of daticert.xml, the certification data every PEC system
// message carries (pec-spec.md §5; RFC 6109 §4.4). Marshal writes it in DTD order with
// XML 1.0 escaping; Parse is strict: unknown elements, attributes or enumeration values,
// missing required elements and elements out of order are errors naming the element path.
package daticert

import "fmt"

// Tipo is postacert/@tipo, the kind of certified message (pec-spec.md §5.1).
type Tipo string

// The eight values the DTD allows for postacert/@tipo.
const (
	TipoAccettazione            Tipo = "accettazione"
	TipoNonAccettazione         Tipo = "non-accettazione"
	TipoPresaInCarico           Tipo = "presa-in-carico"
	TipoAvvenutaConsegna        Tipo = "avvenuta-consegna"
	TipoPostaCertificata        Tipo = "posta-certificata"
	TipoErroreConsegna          Tipo = "errore-consegna"
	TipoPreavvisoErroreConsegna Tipo = "preavviso-errore-consegna"
	TipoRilevazioneVirus        Tipo = "rilevazione-virus"
)

// Tipi lists every Tipo in DTD order.
var Tipi = []Tipo{TipoAccettazione, TipoNonAccettazione, TipoPresaInCarico, TipoAvvenutaConsegna,
	TipoPostaCertificata, TipoErroreConsegna, TipoPreavvisoErroreConsegna, TipoRilevazioneVirus}

// Valid reports whether t is one of the DTD values.
func (t Tipo) Valid() bool {
	for _, v := range Tipi {
		if t == v {
			return true
		}
	}
	return false
}

// Errore is postacert/@errore (pec-spec.md §5.2). The DTD default is ErroreNessuno.
type Errore string

// The five values the DTD allows for postacert/@errore.
const (
	ErroreNessuno   Errore = "nessuno"
	ErroreNoDest    Errore = "no-dest"
	ErroreNoDominio Errore = "no-dominio"
	ErroreVirus     Errore = "virus"
	ErroreAltro     Errore = "altro"
)

// Errori lists every Errore in DTD order.
var Errori = []Errore{ErroreNessuno, ErroreNoDest, ErroreNoDominio, ErroreVirus, ErroreAltro}

// Valid reports whether e is one of the DTD values.
func (e Errore) Valid() bool {
	for _, v := range Errori {
		if e == v {
			return true
		}
	}
	return false
}

// RecipientType is destinatari/@tipo: certificato when the recipient's domain is in the
// providers index, esterno otherwise (pec-spec.md §2.4, §9.3). The DTD default is certificato.
type RecipientType string

// The two values of destinatari/@tipo.
const (
	Certificato RecipientType = "certificato"
	Esterno     RecipientType = "esterno"
)

// Valid reports whether r is one of the DTD values.
func (r RecipientType) Valid() bool { return r == Certificato || r == Esterno }

// ReceiptType is ricevuta/@tipo, the avvenuta consegna the sender asked for (pec-spec.md §2.6).
type ReceiptType string

// The three values of ricevuta/@tipo.
const (
	Completa  ReceiptType = "completa"
	Breve     ReceiptType = "breve"
	Sintetica ReceiptType = "sintetica"
)

// Valid reports whether r is one of the DTD values.
func (r ReceiptType) Valid() bool { return r == Completa || r == Breve || r == Sintetica }

// Postacert is the root element.
type Postacert struct {
	Tipo   Tipo
	Errore Errore // "" marshals as nessuno (real providers always write it, pec-spec.md §5.2)

	Intestazione Intestazione
	Dati         Dati
}

// Intestazione holds the data of the original message.
type Intestazione struct {
	Mittente    string         // bare addr-spec of the sender
	Destinatari []Destinatario // one per To/Cc recipient, at least one
	Risposte    string         // Reply-To of the original, or the sender
	Oggetto     *string        // original subject, decoded; nil = element absent
}

// Destinatario is one intestazione/destinatari element.
type Destinatario struct {
	Tipo RecipientType // "" marshals as certificato
	Addr string
}

// Dati holds the certification data.
type Dati struct {
	GestoreEmittente string
	Data             Data
	Identificativo   string      // PEC msgid without angle brackets
	Msgid            string      // client's Message-ID with angle brackets; "" = absent
	Ricevuta         ReceiptType // "" = absent
	Consegna         string      // "" = absent
	Ricezione        []string
	ErroreEsteso     string // "" = absent
}

// Data is dati/data: local date and time of the event and the zone offset.
type Data struct {
	Zona   string // [+|-]hhmm
	Giorno string // dd/mm/yyyy
	Ora    string // hh:mm:ss
}

// Subject returns a pointer to s, for Intestazione.Oggetto.
func Subject(s string) *string { return &s }

// Error is a parse or validation error with the path of the offending element.
type Error struct {
	Path string // for example /postacert/dati/data/@zona
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("daticert: %s: %s", e.Path, e.Msg) }
