package inspect

import (
	"fmt"
	"strings"
)

// Code is the machine code of a finding.
type Code string

// Finding codes.
const (
	CodeForbidden Code = "forbidden"      // forbidden extension or content type: refuse
	CodeMacro     Code = "macro"          // VBA or Excel 4.0 macros, OpenDocument Basic: flag (or refuse)
	CodeActive    Code = "active-content" // PDF JavaScript or Launch action: flag (or refuse), like macros
	CodeUnchecked Code = "unchecked"      // could not be inspected: flag (or refuse)
	CodeBomb      Code = "bomb"           // decompression would pass Limits.MaxExpanded: refuse
	CodeTooMany   Code = "too-many"       // more than Limits.MaxParts parts or members: refuse
	CodeTooDeep   Code = "too-deep"       // nested deeper than Limits.MaxDepth: refuse
)

// Why a file could not be inspected: the values of the X-PEC-Non-Verificato header.
const (
	UncheckedEncrypted   = "file-cifrato"           // encrypted document, S/MIME or PGP encrypted part
	UncheckedProtected   = "archivio-protetto"      // password-protected archive member
	UncheckedUnsupported = "formato-non-supportato" // rar, 7z, cab, xz, bzip2, zstd; zip methods other than store/deflate
	UncheckedDamaged     = "file-danneggiato"       // an archive, compound file or signed file that does not parse
)

// Finding is one thing the inspector found in one file.
type Finding struct {
	Code Code `json:"code"`
	// Path names the file from the top of the message, " > " between levels, e.g.
	// "postacert.eml > documenti.zip > setup.txt". Parts without a name are "parte 1.2"
	// (their MIME part number). Names are cleaned of control and bidi characters.
	Path string `json:"path"`
	// Ext is the forbidden extension that matched the name, when the name matched.
	Ext string `json:"ext,omitempty"`
	// Type is the type recognised from the content, when the content matched.
	Type Type `json:"type,omitempty"`
	// Why is the X-PEC-Non-Verificato token of a CodeUnchecked finding.
	Why string `json:"why,omitempty"`
	// Reason is one line of Italian, for an avviso's errore-esteso or a log.
	Reason string `json:"reason"`
	// Refuses says the Policy refuses the message because of this finding.
	Refuses bool `json:"refuses,omitempty"`
}

// Verdict is what the access point does with the message under the Policy. It is Clean,
// Refuse alone, or one or both flags.
type Verdict uint8

// Verdicts.
const (
	Refuse        Verdict = 1 << iota // avviso di non accettazione; errore-esteso: Report.Reason()
	FlagMacro                         // accept; add HeaderMacro and NoteMacro
	FlagUnchecked                     // accept; add HeaderUnchecked and NoteUnchecked

	Clean Verdict = 0 // accept as is
)

func (v Verdict) String() string {
	switch {
	case v == Clean:
		return "clean"
	case v&Refuse != 0:
		return "refuse"
	case v == FlagMacro:
		return "flag-macro"
	case v == FlagUnchecked:
		return "flag-unchecked"
	default:
		return "flag-macro,flag-unchecked"
	}
}

// MarshalText makes Verdict a JSON string.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// Report is the result of one inspection.
type Report struct {
	Findings []Finding `json:"findings,omitempty"`
	Verdict  Verdict   `json:"verdict"`
	Parts    int       `json:"parts"`    // MIME entities, archive members and embedded objects seen
	Expanded int64     `json:"expanded"` // bytes produced by decompression
	// Truncated says the walk stopped after 100 findings, the message being refused
	// anyway: there may be more.
	Truncated bool `json:"truncated,omitempty"`
}

// Header fields the access point adds to the busta di trasporto. They are this project's
// own, in the X-PEC- style of the PEC headers (X-Trasporto, X-Ricevuta), and appear in no
// RFC nor in the DM 2 novembre 2005 technical rules: a receiving provider that does not
// know them ignores them. The busta's top-level header is outside its signature, so they
// are information from the sending provider, not proof. The access point sets them
// itself and never copies them from the submitted message.
const (
	HeaderMacro     = "X-PEC-Macro"          // value MacroPresent
	HeaderUnchecked = "X-PEC-Non-Verificato" // value: the Unchecked* tokens found, ", " between them
	MacroPresent    = "presente"
)

// Courtesy notes for the recipient, appended by the access point to the busta's readable
// text when the corresponding flag is set.
const (
	NoteMacro = "Attenzione: uno o più allegati di questo messaggio contengono macro o " +
		"contenuti attivi, che all'apertura possono eseguire codice. Si consiglia di aprirli " +
		"solo se il mittente è conosciuto e l'invio era atteso."
	NoteUnchecked = "Attenzione: non è stato possibile verificare il contenuto di uno o più " +
		"allegati di questo messaggio (per esempio file cifrati o archivi protetti da " +
		"password). Si consiglia di aprirli solo se il mittente è conosciuto e l'invio era atteso."
)

// Header is one header field to add.
type Header struct{ Name, Value string }

// Headers returns the fields to add to the busta: none when the message is refused or clean.
func (r *Report) Headers() []Header {
	var hs []Header
	if r.Verdict&FlagMacro != 0 {
		hs = append(hs, Header{HeaderMacro, MacroPresent})
	}
	if r.Verdict&FlagUnchecked != 0 {
		var whys []string
		for _, f := range r.Findings {
			if f.Code == CodeUnchecked && !contains(whys, f.Why) {
				whys = append(whys, f.Why)
			}
		}
		hs = append(hs, Header{HeaderUnchecked, strings.Join(whys, ", ")})
	}
	return hs
}

// Notes returns the courtesy notes for the recipient, in the order of Headers.
func (r *Report) Notes() []string {
	var ns []string
	if r.Verdict&FlagMacro != 0 {
		ns = append(ns, NoteMacro)
	}
	if r.Verdict&FlagUnchecked != 0 {
		ns = append(ns, NoteUnchecked)
	}
	return ns
}

// Reason is the errore-esteso of a refusal: the first refusing finding's reason, with how
// many more there are. It is "" unless the verdict is Refuse.
func (r *Report) Reason() string {
	if r.Verdict&Refuse == 0 {
		return ""
	}
	first, n := "", 0
	for _, f := range r.Findings {
		if f.Refuses {
			if n == 0 {
				first = f.Reason
			}
			n++
		}
	}
	switch {
	case r.Truncated:
		return fmt.Sprintf("%s (e almeno altri %d allegati)", first, n-1)
	case n == 1:
		return first
	case n == 2:
		return first + " (e un altro allegato)"
	default:
		return fmt.Sprintf("%s (e altri %d allegati)", first, n-1)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
