package pec

import (
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gestore-pec/gestore/pec/daticert"
)

// check runs the rules of c.Kind (pec-spec.md §3–§5) and records deviations.
func (c *Classified) check(hasT, hasR bool) {
	info := c.Kind.Info()
	switch {
	case !c.Signed:
		c.add(Error, "not-signed", "§3", "Content-Type", "a PEC message must be S/MIME multipart/signed by its provider")
	case c.SigErr != nil:
		c.add(Error, "signature", "§7.2", "smime.p7s", "%v", c.SigErr)
	}
	if hasT && hasR {
		c.add(Error, "type-header-both", "§3.1", "X-Trasporto, X-Ricevuta", "a message is either a busta (X-Trasporto) or a receipt (X-Ricevuta), not both")
	}
	if !hasT && !hasR {
		c.add(Error, "type-header-missing", "§3.1", info.Header, "missing; kind taken from daticert.xml tipo=%s", info.Tipo)
	}
	for _, name := range []string{"Date", "From", "Message-ID"} {
		if c.Header.Count(name) == 0 {
			c.add(Error, "header-missing", "§3.2", name, "required header field is missing")
		}
	}
	c.checkRepeated()
	prefixOK := c.checkSubject(info)
	c.checkFrom(info)
	c.checkTypeHeaders(info)
	f := c.parts()
	c.checkParts(info, f)
	if info.Daticert {
		c.checkDaticert(info)
	}
	if prefixOK {
		c.checkSubjectCopy(info)
	}
	c.checkRecipients(info)
}

// singletons are the fields a message carries at most once (RFC 5322 §3.6) and the PEC type
// fields (pec-spec.md §3.1). None is signed: a second Subject, From or X-Ricevuta added on the
// way is the one many mail clients show. Reply-To is not listed: the buste copy the original's
// Reply-To fields as they are (pec-spec.md §3.2 #1).
var singletons = []string{"Date", "From", "To", "Cc", "Message-ID", "Subject",
	"X-Trasporto", "X-Ricevuta", "X-TipoRicevuta", "X-VerificaSicurezza", "X-Mittente", "X-Riferimento-Message-ID"}

func (c *Classified) checkRepeated() {
	for _, name := range singletons {
		if n := c.Header.Count(name); n > 1 {
			c.add(Error, "header-repeated", "§3.2", name, "%d %s fields; a message has at most one (RFC 5322 §3.6)", n, name)
		}
	}
}

// checkSubject checks the subject prefix of the kind (pec-spec.md §3.1; the hobby prefixes of
// its "Warning", such as "AVVENUTA CONSEGNA: ", are not PEC) and reports whether it is there.
func (c *Classified) checkSubject(info KindInfo) bool {
	v, ok := c.Header.Get("Subject")
	if !ok {
		c.add(Error, "subject-prefix", "§3.1", "Subject", "missing; must start with %q", info.Prefix)
		return false
	}
	if strings.HasPrefix(v, info.Prefix) || strings.HasPrefix(DecodeHeader(v), info.Prefix) {
		return true
	}
	if strings.TrimSpace(v) == strings.TrimSpace(info.Prefix) {
		return true // empty original subject: the trailing space may be trimmed by MTAs
	}
	c.add(Error, "subject-prefix", "§3.1", "Subject", "%q does not start with %q", trunc(v, 80), info.Prefix)
	return false
}

// checkSubjectCopy: the Subject is the prefix followed by the original subject unchanged
// (pec-spec.md §3.1), and the original subject is signed: daticert oggetto, or for the busta
// di anomalia (and a daticert without oggetto) the Subject of postacert.eml. The comparison
// decodes RFC 2047 words and ignores white space runs and characters XML cannot carry; a
// peer that kept oggetto undecoded still agrees.
func (c *Classified) checkSubjectCopy(info KindInfo) {
	want, where, ok := c.signedSubject()
	if !ok {
		return
	}
	v, _ := c.Header.Get("Subject")
	dec := DecodeHeader(v)
	rest, _ := strings.CutPrefix(dec, info.Prefix)
	if strings.TrimSpace(dec) == strings.TrimSpace(info.Prefix) {
		rest = ""
	}
	if canonText(rest) == canonText(want) {
		return
	}
	if r, ok := strings.CutPrefix(v, info.Prefix); ok && canonText(r) == canonText(want) {
		return
	}
	c.add(Error, "subject-mismatch", "§3.1", "Subject", "%q is not %q followed by the original subject %q of the signed %s", trunc(dec, 80), info.Prefix, trunc(want, 80), where)
}

func (c *Classified) signedSubject() (subject, where string, ok bool) {
	if c.Daticert != nil && c.Daticert.Intestazione.Oggetto != nil {
		return *c.Daticert.Intestazione.Oggetto, "daticert.xml oggetto", true
	}
	if ph := c.postacertHeader(); ph != nil && (c.Kind == KindBusta || c.Kind == KindAnomalia) {
		v, _ := ph.Get("Subject")
		return DecodeHeader(v), "postacert.eml Subject", true
	}
	return "", "", false
}

// postacertHeader is the header of postacert.eml, nil when absent or unparsable.
func (c *Classified) postacertHeader() Header {
	if c.Postacert == nil {
		return nil
	}
	h, _, err := SplitHeader(ToCRLF(c.Postacert))
	if err != nil {
		return nil
	}
	return h
}

// canonText is s with white space runs made one space, trimmed, and without control
// characters and U+FFFD (which daticert.xml writes for what XML cannot carry).
func canonText(s string) string {
	var words []string
	for _, w := range strings.Fields(s) {
		w = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) || r == utf8.RuneError {
				return -1
			}
			return r
		}, w)
		if w != "" {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (c *Classified) checkFrom(info KindInfo) {
	v, ok := c.Header.Get("From")
	if !ok {
		return
	}
	a, err := addrOf(v)
	if err != nil {
		c.add(Error, "from-invalid", "§3.1", "From", "cannot parse %q: %v", trunc(v, 80), err)
		return
	}
	if c.Kind == KindBusta || c.Kind == KindAnomalia {
		c.checkPerContoDi(a.Name)
	}
	if c.Signer == nil {
		return
	}
	for _, e := range c.Signer.EmailAddresses {
		if strings.EqualFold(e, a.Address) {
			return
		}
	}
	c.add(Error, "from-not-signer", "§3.1", "From", "%s is not the rfc822Name of the signing certificate %v (RFC 6109 §2.1)", a.Address, c.Signer.EmailAddresses)
}

// checkPerContoDi: the display name of the buste's From names the original sender,
// "Per conto di: <sender>" (pec-spec.md §3.1; the RFC's English "On behalf of:" is
// tolerated), and that sender is the signed one: daticert mittente, or the From of the
// received message in the busta di anomalia. Mail clients show the display name, which the
// signature does not cover; one naming anybody else is an Error.
func (c *Classified) checkPerContoDi(name string) {
	name = strings.TrimSpace(name)
	if name == "" {
		c.add(Warning, "from-per-conto-di", "§3.1", "From", "no display name; it should be \"Per conto di: <original sender>\"")
		return
	}
	rest, ok := cutPrefixFold(name, "Per conto di:")
	if !ok {
		rest, ok = cutPrefixFold(name, "On behalf of:")
	}
	if !ok {
		c.add(Error, "from-sender-mismatch", "§3.1", "From", "display name %q is not \"Per conto di: <original sender>\"", trunc(name, 80))
		return
	}
	rest = strings.TrimSpace(rest)
	sender, where := c.signedSender()
	if sender == "" {
		return
	}
	if !strings.EqualFold(rest, sender) {
		if a, err := addrOf(rest); err != nil || !strings.EqualFold(a.Address, sender) {
			c.add(Error, "from-sender-mismatch", "§3.1", "From", "on behalf of %q but the signed %s is %q", trunc(rest, 80), where, sender)
			return
		}
	}
	if !strings.HasPrefix(name, "Per conto di: ") {
		c.add(Warning, "from-per-conto-di", "§3.1", "From", "display name %q should be \"Per conto di: %s\"", trunc(name, 80), sender)
	}
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// signedSender is the original sender as signed: daticert mittente, or for the busta di
// anomalia the single From address of the received message (postacert.eml).
func (c *Classified) signedSender() (sender, where string) {
	if c.Daticert != nil {
		return c.Daticert.Intestazione.Mittente, "daticert.xml mittente"
	}
	if c.Kind != KindAnomalia {
		return "", ""
	}
	if v, ok := c.postacertHeader().Get("From"); ok {
		if a, err := addrOf(v); err == nil {
			return a.Address, "postacert.eml From"
		}
	}
	return "", ""
}

// checkRecipients: To and Cc of the buste are the original's unchanged (pec-spec.md §3.2 #1,
// #2), so they name the same addresses as the signed postacert.eml; the To of a receipt to the
// sender is the signed daticert mittente (§3.1 "To (header)").
func (c *Classified) checkRecipients(info KindInfo) {
	switch {
	case c.Kind == KindBusta || c.Kind == KindAnomalia:
		ph := c.postacertHeader()
		if ph == nil {
			return
		}
		for _, name := range []string{"To", "Cc"} {
			outer, _ := c.Header.Get(name)
			signed, _ := ph.Get(name)
			if addrKey(outer) != addrKey(signed) {
				c.add(Error, "recipients-mismatch", "§3.2", name, "%q differs from the %s of the signed postacert.eml %q", trunc(outer, 80), name, trunc(signed, 80))
			}
		}
	case info.ToSender && c.Daticert != nil:
		to, ok := c.Header.Get("To")
		m := c.Daticert.Intestazione.Mittente
		if l, err := parseAddrs(to); !ok || err != nil || len(l) != 1 || !strings.EqualFold(l[0].Address, m) {
			c.add(Error, "to-not-sender", "§3.1", "To", "%q is not the original sender %q (daticert mittente)", trunc(to, 80), m)
		}
	}
}

// addrKey is the set of addresses of an address list, lower case and sorted; an unparsable
// list is compared as its decoded text.
func addrKey(v string) string {
	l, err := parseAddrs(v)
	if err != nil {
		return "text:" + canonText(DecodeHeader(v))
	}
	set := make([]string, 0, len(l))
	for _, a := range l {
		set = append(set, strings.ToLower(a.Address))
	}
	slices.Sort(set)
	return strings.Join(slices.Compact(set), ",")
}

func (c *Classified) checkTypeHeaders(info KindInfo) {
	sicV, sic := c.Header.Get("X-VerificaSicurezza")
	if sic && strings.TrimSpace(sicV) != "errore" {
		c.add(Error, "verifica-sicurezza-value", "§3.1", "X-VerificaSicurezza", "%q is not the only value, \"errore\"", trunc(sicV, 80))
	}
	switch {
	case info.Sicurezza && !sic:
		c.add(Error, "verifica-sicurezza-missing", "§3.2", "X-VerificaSicurezza", "required (value errore) on %s", info.Title)
	case !info.Sicurezza && sic:
		c.add(Warning, "verifica-sicurezza-unexpected", "§3.1", "X-VerificaSicurezza", "only used on the two virus notices")
	}
	mitt, hasM := c.Header.Get("X-Mittente")
	if info.XMittente && !hasM {
		c.add(Error, "x-mittente-missing", "§3.2", "X-Mittente", "required on the avviso di rilevazione virus")
	}
	if hasM && c.Daticert != nil && !strings.EqualFold(strings.TrimSpace(mitt), c.Daticert.Intestazione.Mittente) {
		c.add(Error, "x-mittente-mismatch", "§3.2", "X-Mittente", "%q differs from the signed daticert mittente %q", mitt, c.Daticert.Intestazione.Mittente)
	}
	if c.Kind == KindBusta {
		tr, ok := c.Header.Get("X-TipoRicevuta")
		switch {
		case !ok:
			c.add(Warning, "tiporicevuta-missing", "§3.1", "X-TipoRicevuta", "RFC 6109 §3.1.5 sets it on the busta (real providers omit it when the original had none)")
		case !daticert.ReceiptType(strings.TrimSpace(tr)).Valid():
			c.add(Error, "tiporicevuta-value", "§3.1", "X-TipoRicevuta", "%q is not completa, breve or sintetica", trunc(tr, 80))
		case c.Daticert != nil && c.Daticert.Dati.Ricevuta != "" && !strings.EqualFold(strings.TrimSpace(tr), string(c.Daticert.Dati.Ricevuta)):
			c.add(Warning, "tiporicevuta-mismatch", "§3.1", "X-TipoRicevuta", "%q but daticert ricevuta is %q", tr, c.Daticert.Dati.Ricevuta)
		}
	}
	if c.Daticert == nil {
		return
	}
	ref, ok := c.Header.Get("X-Riferimento-Message-ID")
	if msgid := c.Daticert.Dati.Msgid; msgid != "" {
		switch {
		case !ok:
			c.add(Warning, "riferimento-missing", "§3.1", "X-Riferimento-Message-ID", "missing although daticert msgid is %s", msgid)
		case strings.TrimSpace(ref) != msgid:
			c.add(Error, "riferimento-mismatch", "§3.1", "X-Riferimento-Message-ID", "%q differs from daticert msgid %q", ref, msgid)
		}
	}
	if c.Kind == KindBusta {
		if mid, _ := c.Header.Get("Message-ID"); strings.TrimSpace(mid) != "<"+c.Daticert.Dati.Identificativo+">" {
			c.add(Error, "message-id-identificativo", "§6.1", "Message-ID", "the busta's Message-ID %q must be <identificativo> %q", mid, c.Daticert.Dati.Identificativo)
		}
	}
}

func (c *Classified) checkParts(info KindInfo, f *found) {
	if c.Entity == nil {
		return
	}
	if c.Entity.MediaType != "multipart/mixed" {
		c.add(Warning, "layout", "§4.1", "signed entity", "is %s, expected multipart/mixed", c.Entity.MediaType)
	}
	if f.text == nil {
		c.add(Error, "text-missing", "§4.1", "part 1", "the readable text (text/plain or multipart/alternative) must be the first part")
	}
	switch {
	case f.postacert == nil && info.Postacert == PostacertRequired:
		c.add(Error, "postacert-missing", "§4.2", "postacert.eml", "%s must carry the original message", info.Title)
	case f.postacert != nil && info.Postacert == PostacertMustNot:
		c.add(Error, "postacert-forbidden", "§4.2", "part "+f.postacert.Path, "%s must not carry the original message", info.Title)
	}
	if f.postacert != nil {
		switch f.postacert.Encoding() {
		case "7bit", "8bit", "binary":
		default:
			c.add(Warning, "postacert-encoding", "§4.1", "part "+f.postacert.Path, "Content-Transfer-Encoding %s is not allowed for message/rfc822 (RFC 2046 §5.2.1)", f.postacert.Encoding())
		}
	}
	if f.daticert != nil && !info.Daticert {
		c.add(Error, "daticert-forbidden", "§3.2", "part "+f.daticert.Path, "the busta di anomalia carries no daticert.xml")
	}
	if c.Kind == KindAnomalia {
		for _, p := range f.other {
			c.add(Error, "anomalia-extra-part", "§3.2", "part "+p.Path, "the busta di anomalia carries only the text and the received message (found %s)", p.MediaType)
		}
	}
	if f.daticert != nil && f.daticert.MediaType != "application/xml" {
		c.add(Warning, "daticert-type", "§4.1", "part "+f.daticert.Path, "daticert.xml is %s, expected application/xml", f.daticert.MediaType)
	}
	if c.Kind == KindBusta && c.Daticert != nil && c.Postacert != nil {
		h, _, err := SplitHeader(ToCRLF(c.Postacert))
		if err == nil {
			if mid, _ := h.Get("Message-ID"); strings.TrimSpace(mid) != "<"+c.Daticert.Dati.Identificativo+">" {
				c.add(Error, "postacert-message-id", "§3.2", "postacert.eml Message-ID", "%q must be the identificativo <%s>", mid, c.Daticert.Dati.Identificativo)
			}
			if ref, ok := h.Get("X-Riferimento-Message-ID"); c.Daticert.Dati.Msgid != "" && (!ok || strings.TrimSpace(ref) != c.Daticert.Dati.Msgid) {
				c.add(Warning, "postacert-riferimento", "§3.2", "postacert.eml X-Riferimento-Message-ID", "%q should be the original Message-ID %q", ref, c.Daticert.Dati.Msgid)
			}
		}
	}
}

// erroreAllowed lists the errore values each kind may carry.
var erroreAllowed = map[Kind][]daticert.Errore{
	KindNonAccettazione:      {daticert.ErroreAltro, daticert.ErroreNessuno},
	KindNonAccettazioneVirus: {daticert.ErroreVirus},
	KindRilevazioneVirus:     {daticert.ErroreVirus},
	KindMancataConsegnaVirus: {daticert.ErroreVirus},
	KindMancataConsegna:      {daticert.ErroreNoDest, daticert.ErroreNoDominio, daticert.ErroreAltro},
}

func (c *Classified) checkDaticert(info KindInfo) {
	d := c.Daticert
	if d == nil {
		for _, dv := range c.Deviations {
			if dv.Code == "daticert-invalid" || dv.Code == "daticert-encoding" {
				return
			}
		}
		c.add(Error, "daticert-missing", "§4.2", "daticert.xml", "%s must carry daticert.xml", info.Title)
		return
	}
	if d.Tipo != info.Tipo {
		c.add(Error, "daticert-tipo-mismatch", "§5.2", "daticert.xml /postacert/@tipo", "tipo=%s but the header says %s: %s", d.Tipo, info.Header, info.Value)
	}
	allowed, ok := erroreAllowed[c.Kind]
	if !ok {
		allowed = []daticert.Errore{daticert.ErroreNessuno}
		if c.Kind == KindPreavviso12h || c.Kind == KindPreavviso24h {
			allowed = append(allowed, daticert.ErroreAltro) // UNVERIFIED value, pec-spec.md §5.3
		}
	}
	okE := false
	for _, e := range allowed {
		okE = okE || d.Errore == e
	}
	if !okE {
		c.add(Error, "daticert-errore", "§5.2", "daticert.xml /postacert/@errore", "errore=%s is not valid for %s (want one of %v)", d.Errore, info.Title, allowed)
	}
	for _, p := range d.Validate() {
		c.add(Error, "daticert-rule", "§5.2", "daticert.xml "+p.Path, "%s", p.Msg)
	}
	if (c.Kind == KindBusta || c.Kind.IsConsegna()) && d.Dati.Ricevuta == "" {
		c.add(Warning, "daticert-ricevuta-missing", "§5.2", "daticert.xml /postacert/dati/ricevuta", "the busta and the avvenuta consegna state the receipt type")
	}
	if c.Kind.IsConsegna() && d.Dati.Ricevuta != "" {
		// The content may be less than requested (Cc recipients get sintetica), never more.
		rank := map[daticert.ReceiptType]int{daticert.Sintetica: 0, daticert.Breve: 1, daticert.Completa: 2}
		got := map[Kind]daticert.ReceiptType{KindConsegnaCompleta: daticert.Completa, KindConsegnaBreve: daticert.Breve, KindConsegnaSintetica: daticert.Sintetica}[c.Kind]
		if rank[got] > rank[d.Dati.Ricevuta] {
			c.add(Error, "consegna-content", "§4.2", "postacert.eml", "content is %s but %s was requested", got, d.Dati.Ricevuta)
		}
	}
	if dv, ok := c.Header.Get("Date"); ok {
		hd, err1 := mail.ParseDate(dv)
		dd, err2 := time.Parse("02/01/2006 15:04:05 -0700", d.Dati.Data.Giorno+" "+d.Dati.Data.Ora+" "+d.Dati.Data.Zona)
		if err1 == nil && err2 == nil && (hd.Sub(dd) > time.Second || dd.Sub(hd) > time.Second) {
			c.add(Warning, "date-mismatch", "§6.2", "Date", "%q is not the daticert time %s %s (%s): one time reference per message", dv, d.Dati.Data.Giorno, d.Dati.Data.Ora, d.Dati.Data.Zona)
		}
	}
	if c.Signer != nil && d.Dati.GestoreEmittente != "" {
		names := append(append([]string{}, c.Signer.Subject.Organization...), c.Signer.Subject.CommonName)
		match := false
		for _, n := range names {
			a, b := letters(n), letters(d.Dati.GestoreEmittente)
			match = match || (a != "" && b != "" && (strings.Contains(a, b) || strings.Contains(b, a)))
		}
		if !match {
			c.add(Warning, "gestore-emittente", "§5.2", "daticert.xml /postacert/dati/gestore-emittente", "%q does not match the signer certificate subject %q", d.Dati.GestoreEmittente, c.Signer.Subject.String())
		}
	}
}

// letters keeps only lower-case letters and digits: "Sogei S.p.A." and "Sogei SpA" agree.
func letters(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127 {
			b.WriteRune(r)
		}
	}
	return b.String()
}
