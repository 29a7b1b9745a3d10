package pec

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/gestore-pec/gestore/pec/daticert"
	"github.com/gestore-pec/gestore/pec/smime"
)

// Severity of a deviation.
type Severity int

// Severities. An Error makes a message non-conforming (the reception point treats it as an
// anomaly); a Warning is reported but tolerated, used for the deviations real providers
// show in their everyday traffic (pec-spec.md §13).
const (
	Warning Severity = iota + 1
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// MarshalText makes Severity a JSON string.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads "error" or "warning".
func (s *Severity) UnmarshalText(b []byte) error {
	switch string(b) {
	case "error":
		*s = Error
	case "warning":
		*s = Warning
	default:
		return fmt.Errorf("pec: unknown severity %q", b)
	}
	return nil
}

// Deviation is one way a message departs from the PEC rules.
type Deviation struct {
	Code     string   `json:"code"`     // stable identifier, e.g. "subject-prefix"
	Severity Severity `json:"severity"` // error or warning
	Rule     string   `json:"rule"`     // pec-spec.md section the rule comes from
	Where    string   `json:"where"`    // header field, MIME part or daticert path
	Message  string   `json:"message"`
}

// Classified is what Classify found out about a message.
type Classified struct {
	Kind        Kind
	Header      Header              // top-level header fields
	Signed      bool                // a signature structure is present
	Verified    *smime.Verified     // nil unless the signature verified (integrity)
	Signer      *x509.Certificate   // signer certificate when verified
	SigErr      error               // why the signature did not verify
	Entity      *Part               // the signed entity (or the body of an unsigned message)
	Daticert    *daticert.Postacert // parsed daticert.xml, nil if absent or invalid
	DaticertRaw []byte              // decoded daticert.xml
	Postacert   []byte              // postacert.eml as carried (the message/rfc822 body)
	Deviations  []Deviation
}

// Conforms reports whether no deviation is an Error.
func (c *Classified) Conforms() bool {
	for _, d := range c.Deviations {
		if d.Severity == Error {
			return false
		}
	}
	return true
}

func (c *Classified) add(sev Severity, code, rule, where, f string, a ...any) {
	c.Deviations = append(c.Deviations, Deviation{Code: code, Severity: sev, Rule: rule, Where: where, Message: fmt.Sprintf(f, a...)})
}

// ClassifyOptions tune Classify.
type ClassifyOptions struct {
	// SkipSignature skips the signature check. By default Classify verifies the
	// signature's integrity (smime.Verify without roots); the chain and the providers
	// index checks are the caller's (pec-spec.md §7.2.2–3; pecctl verify --ca does the chain).
	SkipSignature bool
}

// Classify recognises any incoming message: busta di trasporto, each receipt kind, busta di
// anomalia, or ordinary mail (pec-spec.md §3.1), and lists every deviation from the rules
// of its kind. Header names are matched case-insensitively (X-Tiporicevuta is real). It
// never fails: an unparsable message is ordinary mail with an Error deviation.
//
// The kind comes from the type header (X-Trasporto / X-Ricevuta); when that is absent but a
// signed daticert.xml is present, from daticert tipo (with an Error deviation). The three
// avvenuta consegna variants are told apart by content: no postacert.eml is sintetica, one
// with ".hash" parts is breve, else completa. The two timeout notices share all literals;
// errore-esteso mentioning "24" marks the final one.
func Classify(msg []byte, opts ClassifyOptions) *Classified {
	c := &Classified{}
	raw := ToCRLF(msg)
	h, _, err := SplitHeader(raw)
	if err != nil {
		c.add(Error, "malformed", "§7.1", "header", "message header cannot be parsed: %v", err)
		return c
	}
	c.Header = h
	trasporto, hasT := h.Get("X-Trasporto")
	ricevuta, hasR := h.Get("X-Ricevuta")
	trasporto, ricevuta = strings.TrimSpace(trasporto), strings.TrimSpace(ricevuta)

	ct, _ := h.Get("Content-Type")
	c.Signed = isSignedType(ct)
	if c.Signed && !opts.SkipSignature {
		v, err := smime.Verify(raw, smime.VerifyOptions{})
		if err != nil {
			c.SigErr = err
		} else {
			c.Verified, c.Signer = v, v.Signer
		}
	}
	// The entity: the signed first part when verified; otherwise parse what is there.
	switch {
	case c.Verified != nil:
		c.Entity, err = ParseEntity(c.Verified.Entity)
	default:
		var top *Part
		top, err = parseEntity(raw, "", 0)
		if err == nil {
			c.Entity = top
			if top.MediaType == "multipart/signed" && len(top.Children) > 0 {
				c.Entity = top.Children[0]
			}
		}
	}
	if err != nil {
		c.add(Error, "mime", "§4.1", "body", "MIME structure cannot be parsed: %v", err)
	}
	c.findParts()

	c.Kind = c.kindFrom(hasT, trasporto, hasR, ricevuta)
	if c.Kind == KindOrdinary {
		return c
	}
	c.check(hasT, hasR)
	return c
}

func isSignedType(ct string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(ct), ";")
	mt = strings.TrimSpace(mt)
	return mt == "multipart/signed" || mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime"
}

// parts found in the signed entity
type found struct {
	text, daticert, postacert *Part
	other                     []*Part
}

func (c *Classified) parts() *found {
	f := &found{}
	if c.Entity == nil {
		return f
	}
	var leaves []*Part
	if strings.HasPrefix(c.Entity.MediaType, "multipart/") {
		leaves = c.Entity.Children
	} else {
		leaves = []*Part{c.Entity}
	}
	for i, p := range leaves {
		name := strings.ToLower(p.Name())
		switch {
		case i == 0 && (p.MediaType == "text/plain" || p.MediaType == "multipart/alternative"):
			f.text = p
		case name == "daticert.xml" && f.daticert == nil:
			f.daticert = p
		case name == "postacert.eml" && p.MediaType == "message/rfc822" && f.postacert == nil:
			f.postacert = p
		default:
			f.other = append(f.other, p)
		}
	}
	return f
}

func (c *Classified) findParts() {
	f := c.parts()
	if f.daticert != nil {
		b, err := f.daticert.Decoded()
		if err != nil {
			c.add(Error, "daticert-encoding", "§4.1", "daticert.xml", "cannot decode: %v", err)
		} else {
			c.DaticertRaw = b
			d, err := daticert.Parse(b)
			if err != nil {
				var de *daticert.Error
				where := "daticert.xml"
				if errors.As(err, &de) {
					where += " " + de.Path
				}
				c.add(Error, "daticert-invalid", "§5.1", where, "%v", err)
			} else {
				c.Daticert = d
			}
		}
	}
	if f.postacert != nil {
		b, err := f.postacert.Decoded()
		if err == nil {
			c.Postacert = b
		}
	}
}

// trasportoKinds and ricevutaKinds map the complete value sets of X-Trasporto and X-Ricevuta
// (pec-spec.md §3.1, RFC 6109 Appendix A) to kinds. The values are literals: a value that
// differs only in case is recognised for the kind but is an Error (typeToken).
var trasportoKinds = map[string]Kind{"posta-certificata": KindBusta, "errore": KindAnomalia}

var ricevutaKinds = map[string]Kind{
	"accettazione": KindAccettazione, "non-accettazione": KindNonAccettazione, "presa-in-carico": KindPresaInCarico,
	"avvenuta-consegna": KindConsegnaCompleta, "errore-consegna": KindMancataConsegna,
	"preavviso-errore-consegna": KindPreavviso12h, "rilevazione-virus": KindRilevazioneVirus,
}

var tipoKinds = map[daticert.Tipo]Kind{
	daticert.TipoPostaCertificata: KindBusta, daticert.TipoAccettazione: KindAccettazione,
	daticert.TipoNonAccettazione: KindNonAccettazione, daticert.TipoPresaInCarico: KindPresaInCarico,
	daticert.TipoAvvenutaConsegna: KindConsegnaCompleta, daticert.TipoErroreConsegna: KindMancataConsegna,
	daticert.TipoPreavvisoErroreConsegna: KindPreavviso12h, daticert.TipoRilevazioneVirus: KindRilevazioneVirus,
}

func (c *Classified) kindFrom(hasT bool, trasporto string, hasR bool, ricevuta string) Kind {
	var k Kind
	if hasT {
		k = c.typeToken("X-Trasporto", trasporto, trasportoKinds)
	}
	if hasR {
		if kr := c.typeToken("X-Ricevuta", ricevuta, ricevutaKinds); k == KindOrdinary {
			k = kr
		}
	}
	// An unknown or missing type header: the signed daticert says what the message is, and
	// the header's Error (above, or type-header-missing) keeps it from conforming.
	if k == KindOrdinary && c.Daticert != nil && c.Signed {
		k = tipoKinds[c.Daticert.Tipo]
	}
	if k == KindOrdinary {
		return k
	}
	virus := false
	if v, ok := c.Header.Get("X-VerificaSicurezza"); ok && strings.EqualFold(strings.TrimSpace(v), "errore") {
		virus = true
	}
	if c.Daticert != nil && c.Daticert.Errore == daticert.ErroreVirus {
		virus = true
	}
	switch k {
	case KindNonAccettazione:
		if virus {
			k = KindNonAccettazioneVirus
		}
	case KindMancataConsegna:
		if virus {
			k = KindMancataConsegnaVirus
		}
	case KindConsegnaCompleta:
		switch {
		case c.Postacert == nil:
			k = KindConsegnaSintetica
		case hasHashParts(c.Postacert), c.Daticert != nil && c.Daticert.Dati.Ricevuta == daticert.Breve && nothingToHash(c.Postacert):
			// RFC 6109 §3.3.2.2 (pec-spec.md §4.3): a breve replaces the attachments by their
			// hashes; of a message without attachments it is the message itself, as a completa
			// would be. Requested breve, and nothing a breve would replace: it is that breve.
			k = KindConsegnaBreve
		}
	case KindPreavviso12h:
		if c.Daticert != nil && strings.Contains(c.Daticert.Dati.ErroreEsteso, "24") {
			k = KindPreavviso24h
		}
	}
	return k
}

// typeToken looks a type header value up in its value set and records an Error unless it is
// the spec's literal exactly (pec-spec.md §3.1 value sets and "Warning": hobby values such as
// X-Ricevuta: mancata-consegna, or Avvenuta-Consegna, are not PEC). A value that differs
// only in case still gives its kind, so that the other rules of that kind are checked too.
func (c *Classified) typeToken(name, v string, set map[string]Kind) Kind {
	k, ok := set[strings.ToLower(v)]
	switch {
	case !ok:
		c.add(Error, "type-header-value", "§3.1", name, "%q is not a value of %s (pec-spec.md §3.1: %s)", trunc(v, 80), name, tokenList(set))
	case v != strings.ToLower(v):
		c.add(Error, "type-header-value", "§3.1", name, "%q is not the literal %q (the values are lower case)", trunc(v, 80), strings.ToLower(v))
	}
	return k
}

func tokenList(set map[string]Kind) string {
	var l []string
	for _, k := range Kinds() {
		for v, sk := range set {
			if sk == k {
				l = append(l, v)
			}
		}
	}
	return strings.Join(l, ", ")
}

// nothingToHash reports whether msg has no part a breve receipt replaces by its hash (Breve
// leaves it unchanged).
func nothingToHash(msg []byte) bool {
	m := ToCRLF(msg)
	return bytes.Equal(Breve(m), m)
}

func hasHashParts(msg []byte) bool {
	p, err := ParseEntity(msg)
	if err != nil {
		return false
	}
	var walk func(*Part) bool
	walk = func(p *Part) bool {
		if strings.HasSuffix(strings.ToLower(p.Name()), ".hash") {
			return true
		}
		for _, ch := range p.Children {
			if walk(ch) {
				return true
			}
		}
		return false
	}
	return walk(p)
}

// addrOf parses a single address header value.
func addrOf(v string) (*mail.Address, error) {
	p := mail.AddressParser{WordDecoder: wordDecoder}
	return p.Parse(v)
}

// SignedAt is the time to check certificates at: the CMS signingTime, else the Date
// header, else the zero time.
func (c *Classified) SignedAt() time.Time {
	if c.Verified != nil && !c.Verified.SigningTime.IsZero() {
		return c.Verified.SigningTime
	}
	if v, ok := c.Header.Get("Date"); ok {
		if t, err := mail.ParseDate(v); err == nil {
			return t
		}
	}
	return time.Time{}
}
