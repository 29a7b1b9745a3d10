package daticert

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Marshal writes p as daticert.xml: the XML declaration, no DOCTYPE (as real providers,
// pec-spec.md §5.1), elements in DTD order, 4-space indent and LF line ends.
//
// Text that XML 1.0 cannot carry (§2.2 Char: the C0 controls other than TAB, LF and CR,
// U+FFFE, U+FFFF, and invalid UTF-8) is replaced by U+FFFD, so the replacement is visible
// instead of silently dropping characters of the subject. CR is written as &#xD; so a
// parser does not normalise it to LF. Marshal does not validate p; call Validate first when
// p comes from outside.
func Marshal(p *Postacert) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	errore := p.Errore
	if errore == "" {
		errore = ErroreNessuno
	}
	b.WriteString(`<postacert tipo="` + escape(string(p.Tipo), true) + `" errore="` + escape(string(errore), true) + `">` + "\n")
	in := &p.Intestazione
	b.WriteString("    <intestazione>\n")
	elem(&b, 2, "mittente", in.Mittente)
	for _, d := range in.Destinatari {
		t := d.Tipo
		if t == "" {
			t = Certificato
		}
		b.WriteString(`        <destinatari tipo="` + escape(string(t), true) + `">` + escape(d.Addr, false) + "</destinatari>\n")
	}
	elem(&b, 2, "risposte", in.Risposte)
	if in.Oggetto != nil {
		elem(&b, 2, "oggetto", *in.Oggetto)
	}
	b.WriteString("    </intestazione>\n")
	d := &p.Dati
	b.WriteString("    <dati>\n")
	elem(&b, 2, "gestore-emittente", d.GestoreEmittente)
	b.WriteString(`        <data zona="` + escape(d.Data.Zona, true) + "\">\n")
	elem(&b, 3, "giorno", d.Data.Giorno)
	elem(&b, 3, "ora", d.Data.Ora)
	b.WriteString("        </data>\n")
	elem(&b, 2, "identificativo", d.Identificativo)
	if d.Msgid != "" {
		elem(&b, 2, "msgid", d.Msgid)
	}
	if d.Ricevuta != "" {
		b.WriteString(`        <ricevuta tipo="` + escape(string(d.Ricevuta), true) + "\" />\n")
	}
	if d.Consegna != "" {
		elem(&b, 2, "consegna", d.Consegna)
	}
	for _, r := range d.Ricezione {
		elem(&b, 2, "ricezione", r)
	}
	if d.ErroreEsteso != "" {
		elem(&b, 2, "errore-esteso", d.ErroreEsteso)
	}
	b.WriteString("    </dati>\n</postacert>\n")
	return b.Bytes()
}

func elem(b *bytes.Buffer, depth int, name, text string) {
	b.WriteString(strings.Repeat("    ", depth))
	b.WriteString("<" + name + ">")
	b.WriteString(escape(text, false))
	b.WriteString("</" + name + ">\n")
}

// escape makes s safe as XML 1.0 character data (attr=false) or as a double-quoted
// attribute value (attr=true).
func escape(s string, attr bool) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			b.WriteRune('\uFFFD')
			i++
			continue
		}
		i += n
		switch {
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '&':
			b.WriteString("&amp;")
		case r == '"' && attr:
			b.WriteString("&quot;")
		case r == '\r':
			b.WriteString("&#xD;")
		case (r == '\n' || r == '\t') && attr:
			// Attribute-value normalisation (XML 1.0 §3.3.3) would turn them into spaces.
			if r == '\n' {
				b.WriteString("&#xA;")
			} else {
				b.WriteString("&#x9;")
			}
		case !xmlChar(r):
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// xmlChar is the Char production of XML 1.0 §2.2.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) ||
		(r >= 0x10000 && r <= 0x10FFFF)
}
