package daticert

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

var (
	zonaRE   = regexp.MustCompile(`^[+-]([01][0-9]|2[0-3])[0-5][0-9]$`)
	giornoRE = regexp.MustCompile(`^[0-9]{2}/[0-9]{2}/[0-9]{4}$`)
	oraRE    = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$`)
)

// Problem is one rule a syntactically valid daticert breaks beyond the DTD (formats and
// which optional elements each tipo needs, pec-spec.md §5.2).
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string { return p.Path + ": " + p.Msg }

// Validate checks the value formats (zona [+|-]hhmm, giorno dd/mm/yyyy, ora hh:mm:ss,
// non-empty addresses and identificativo) and the per-tipo rules of pec-spec.md §5.2–5.3:
// consegna on avvenuta-consegna, errore-consegna, rilevazione-virus and preavviso; ricezione
// only on presa-in-carico; ricevuta on posta-certificata and avvenuta-consegna.
// Every problem is reported; an empty result means the document is valid.
// (Long on purpose: one check per element and attribute of the DTD, in DTD order.)
func (p *Postacert) Validate() []Problem {
	var out []Problem
	add := func(path, f string, a ...any) { out = append(out, Problem{path, fmt.Sprintf(f, a...)}) }
	if !p.Tipo.Valid() {
		add("/postacert/@tipo", "unknown value %q", p.Tipo)
	}
	if p.Errore != "" && !p.Errore.Valid() {
		add("/postacert/@errore", "unknown value %q", p.Errore)
	}
	in, d := &p.Intestazione, &p.Dati
	if strings.TrimSpace(in.Mittente) == "" {
		add("/postacert/intestazione/mittente", "empty")
	}
	if len(in.Destinatari) == 0 {
		add("/postacert/intestazione/destinatari", "at least one recipient is required")
	}
	for i, r := range in.Destinatari {
		if strings.TrimSpace(r.Addr) == "" {
			add(fmt.Sprintf("/postacert/intestazione/destinatari[%d]", i+1), "empty")
		}
		if r.Tipo != "" && !r.Tipo.Valid() {
			add(fmt.Sprintf("/postacert/intestazione/destinatari[%d]/@tipo", i+1), "unknown value %q", r.Tipo)
		}
	}
	if strings.TrimSpace(in.Risposte) == "" {
		add("/postacert/intestazione/risposte", "empty")
	}
	if strings.TrimSpace(d.GestoreEmittente) == "" {
		add("/postacert/dati/gestore-emittente", "empty")
	}
	if !zonaRE.MatchString(d.Data.Zona) {
		add("/postacert/dati/data/@zona", "%q is not [+|-]hhmm", d.Data.Zona)
	}
	if !giornoRE.MatchString(d.Data.Giorno) {
		add("/postacert/dati/data/giorno", "%q is not dd/mm/yyyy", d.Data.Giorno)
	} else if _, err := time.Parse("02/01/2006", d.Data.Giorno); err != nil {
		add("/postacert/dati/data/giorno", "%q is not a valid date", d.Data.Giorno)
	}
	if !oraRE.MatchString(d.Data.Ora) {
		add("/postacert/dati/data/ora", "%q is not hh:mm:ss", d.Data.Ora)
	}
	if strings.TrimSpace(d.Identificativo) == "" {
		add("/postacert/dati/identificativo", "empty")
	} else if strings.ContainsAny(d.Identificativo, "<> \t") {
		add("/postacert/dati/identificativo", "must be the msgid without angle brackets")
	}
	if d.Msgid != "" && !(strings.HasPrefix(d.Msgid, "<") && strings.HasSuffix(d.Msgid, ">")) {
		add("/postacert/dati/msgid", "must be the original Message-ID with angle brackets")
	}
	if d.Ricevuta != "" && !d.Ricevuta.Valid() {
		add("/postacert/dati/ricevuta/@tipo", "unknown value %q", d.Ricevuta)
	}
	switch p.Tipo {
	case TipoAvvenutaConsegna, TipoErroreConsegna, TipoRilevazioneVirus, TipoPreavvisoErroreConsegna:
		if d.Consegna == "" {
			add("/postacert/dati/consegna", "required for tipo=%s", p.Tipo)
		}
	}
	if strings.Contains(d.Consegna, ",") {
		add("/postacert/dati/consegna", "must hold exactly one address")
	}
	if p.Tipo == TipoPresaInCarico && len(d.Ricezione) == 0 {
		add("/postacert/dati/ricezione", "required for tipo=presa-in-carico")
	}
	if p.Tipo != TipoPresaInCarico && len(d.Ricezione) > 0 {
		add("/postacert/dati/ricezione", "only allowed for tipo=presa-in-carico")
	}
	return out
}
