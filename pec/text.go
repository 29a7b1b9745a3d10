package pec

import (
	"fmt"
	"html"
	"strings"
	"unicode/utf8"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// textData is what the readable texts show (pec-spec.md §3.3). The wording is the project's
// own; parsers must read daticert.xml only (RFC 6109 §3), so the text is for people.
type textData struct {
	kind      Kind
	ref       TimeRef
	subject   string
	sender    string
	rcpts     []Recipient
	id        string
	rcpt      string   // the recipient the message is about (consegna)
	detail    string   // error, virus or anomaly reason
	ricezione []string // presa in carico
	provider  string
	notes     []string // courtesy notes for the recipient (busta: macros, files not checked)
}

func rcptLabel(r Recipient) string {
	if r.Type == daticert.Esterno {
		return r.Addr + ` ("posta ordinaria")`
	}
	return r.Addr + ` ("posta certificata")`
}

// readable returns the title and the paragraphs (each a list of lines) of a kind's text.
// (Long on purpose: one switch over the fourteen kinds, each case a few lines of its text; split per kind it would scatter the wording.)
func readable(d textData) (string, [][]string) {
	when := d.ref.Text()
	subj := fmt.Sprintf("con oggetto %q", d.subject)
	from := fmt.Sprintf("inviato da %q", d.sender)
	idLine := "Identificativo del messaggio: " + d.id
	datiLine := "I dati di certificazione della trasmissione sono nell'allegato daticert.xml."
	var list []string
	for _, r := range d.rcpts {
		if d.kind == KindAnomalia {
			list = append(list, r.Addr)
		} else {
			list = append(list, rcptLabel(r))
		}
	}
	switch d.kind {
	case KindBusta:
		paras := [][]string{
			{when + " il messaggio " + subj + " è stato spedito da " + fmt.Sprintf("%q", d.sender) + " ai destinatari:"},
			list,
			{"Il messaggio originale si trova nell'allegato postacert.eml.", datiLine, idLine},
		}
		if len(d.notes) > 0 {
			paras = append(paras, append([]string{"Avviso del gestore:"}, d.notes...))
		}
		return "Messaggio di posta elettronica certificata", paras
	case KindAnomalia:
		return "Anomalia nel messaggio", [][]string{
			{when + " è arrivato il messaggio " + subj + " " + fmt.Sprintf("proveniente da %q", d.sender) + ", indirizzato a:"},
			list,
			{"Questo messaggio non è stato certificato a causa del seguente errore:", d.detail},
			{"Il messaggio ricevuto si trova, così come è arrivato, nell'allegato postacert.eml."},
		}
	case KindAccettazione:
		return "Ricevuta di accettazione", [][]string{
			{when + " il messaggio " + subj + " " + from + " e indirizzato a:"},
			list,
			{"è stato accettato dal sistema di posta certificata e inoltrato ai destinatari."},
			{idLine, datiLine},
		}
	case KindNonAccettazione:
		return "Avviso di non accettazione", [][]string{
			{when + " il messaggio " + subj + " " + from + " non è stato accettato dal sistema di posta certificata per il seguente motivo:", d.detail},
			{"Il messaggio non è stato inoltrato ad alcun destinatario.", idLine, datiLine},
		}
	case KindNonAccettazioneVirus:
		return "Avviso di non accettazione per virus", [][]string{
			{when + " nel messaggio " + subj + " " + from + " è stato trovato un problema di sicurezza:", d.detail},
			{"Il messaggio non è stato accettato né inoltrato ad alcun destinatario.", idLine, datiLine},
		}
	case KindPresaInCarico:
		return "Ricevuta di presa in carico", [][]string{
			{when + " il messaggio " + subj + " " + from + " è stato preso in carico dal gestore " + fmt.Sprintf("%q", d.provider) + " per i destinatari:"},
			d.ricezione,
			{idLine, datiLine},
		}
	case KindRilevazioneVirus:
		return "Avviso di rilevazione virus", [][]string{
			{when + " nel messaggio " + subj + " " + from + " e destinato a " + fmt.Sprintf("%q", d.rcpt) + " è stato trovato un problema di sicurezza:", d.detail},
			{"Il messaggio non sarà consegnato al destinatario.", idLine, datiLine},
		}
	case KindMancataConsegnaVirus:
		return "Avviso di mancata consegna per virus", [][]string{
			{when + " il gestore del destinatario " + fmt.Sprintf("%q", d.rcpt) + " ha trovato un problema di sicurezza nel messaggio " + subj + " " + from + ":", d.detail},
			{"Il messaggio non è stato consegnato a quel destinatario.", idLine, datiLine},
		}
	case KindConsegnaCompleta, KindConsegnaBreve, KindConsegnaSintetica:
		p := [][]string{
			{when + " il messaggio " + subj + " " + from + " è stato consegnato nella casella di " + fmt.Sprintf("%q", d.rcpt) + "."},
			{idLine},
		}
		switch d.kind {
		case KindConsegnaCompleta:
			p = append(p, []string{"Il messaggio consegnato si trova nell'allegato postacert.eml."})
		case KindConsegnaBreve:
			p = append(p, []string{"Il messaggio consegnato si trova nell'allegato postacert.eml; al posto di ogni allegato",
				"c'è un file .hash con l'impronta SHA-1 del contenuto consegnato."})
		}
		p[len(p)-1] = append(p[len(p)-1], datiLine)
		return "Ricevuta di avvenuta consegna", p
	case KindMancataConsegna:
		return "Avviso di mancata consegna", [][]string{
			{when + " il messaggio " + subj + " " + from + " non è stato consegnato a " + fmt.Sprintf("%q", d.rcpt) + " per il seguente errore:", d.detail},
			{idLine, datiLine},
		}
	case KindPreavviso12h:
		return "Avviso di mancata consegna entro 12 ore", [][]string{
			{when + ": per il messaggio " + subj + " " + from + " e destinato a " + fmt.Sprintf("%q", d.rcpt) + " non è arrivata, nelle 12 ore dopo l'invio, alcuna ricevuta di presa in carico o di consegna dal gestore del destinatario."},
			{"La consegna è ancora possibile: se non arriverà entro 24 ore dall'invio riceverà un nuovo avviso.", idLine, datiLine},
		}
	case KindPreavviso24h:
		return "Avviso di mancata consegna entro 24 ore", [][]string{
			{when + ": per il messaggio " + subj + " " + from + " e destinato a " + fmt.Sprintf("%q", d.rcpt) + " non è arrivata, nelle 24 ore dopo l'invio, la ricevuta di avvenuta consegna."},
			{"La trasmissione verso questo destinatario si considera conclusa con esito negativo.", idLine, datiLine},
		}
	}
	return "", nil
}

func plainText(title string, paras [][]string) string {
	var b strings.Builder
	b.WriteString("-- " + title + " --\n")
	for _, p := range paras {
		if len(p) == 0 {
			continue
		}
		b.WriteString("\n")
		for _, l := range p {
			b.WriteString(wrap(l, 72))
		}
	}
	return b.String()
}

// wrap breaks s at spaces into lines whose quoted-printable form stays within width
// (longer words stay whole), so ordinary text needs no soft line breaks.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Split(s, " ") {
		l := qpLen(w)
		if i > 0 {
			if n+1+l > width {
				b.WriteString("\n")
				n = 0
			} else {
				b.WriteString(" ")
				n++
			}
		}
		b.WriteString(w)
		n += l
	}
	b.WriteString("\n")
	return b.String()
}

// htmlText carries the same information as plainText with no references to any other
// element and no active content (RFC 6109 §4.3.1).
func htmlText(title string, paras [][]string) string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><title>" + html.EscapeString(title) + "</title></head>\n<body>\n")
	b.WriteString("<h3>" + html.EscapeString(title) + "</h3>\n")
	for _, p := range paras {
		if len(p) == 0 {
			continue
		}
		b.WriteString("<p>")
		for i, l := range p {
			if i > 0 {
				b.WriteString("<br>\n")
			}
			b.WriteString(html.EscapeString(l))
		}
		b.WriteString("</p>\n")
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

// qpLen estimates the quoted-printable length of w: 3 octets per encoded byte.
func qpLen(w string) int {
	n := 0
	for _, r := range w {
		switch {
		case r == '=':
			n += 3
		case r < 128:
			n++
		default:
			n += 3 * utf8.RuneLen(r)
		}
	}
	return n
}
