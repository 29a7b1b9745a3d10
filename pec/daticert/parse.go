package daticert

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxSize bounds the input: a real daticert.xml is about 1 KB; a presa in carico for 500
// recipients stays well under this.
const maxSize = 1 << 20

// node is one element of the parsed tree.
type node struct {
	name     string
	path     string
	attrs    []xml.Attr
	text     strings.Builder
	children []*node
}

// Parse reads daticert.xml strictly against the DTD of pec-spec.md §5.1. It accepts UTF-8
// (the declared encoding of every real file) and ISO-8859-1; it ignores comments,
// processing instructions and a DOCTYPE without internal subset, and rejects everything
// the DTD does not allow. Errors are *Error with the element path.
func Parse(data []byte) (*Postacert, error) {
	if len(data) > maxSize {
		return nil, &Error{Path: "/", Msg: "document larger than 1 MiB"}
	}
	root, err := tree(data)
	if err != nil {
		return nil, err
	}
	return build(root)
}

func tree(data []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	d.Entity = nil
	d.CharsetReader = charsetReader
	var stack []*node
	var root *node
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			path := "/"
			if len(stack) > 0 {
				path = stack[len(stack)-1].path
			}
			return nil, &Error{Path: path, Msg: "malformed XML: " + err.Error()}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space != "" {
				return nil, &Error{Path: "/" + t.Name.Local, Msg: "namespaces are not allowed"}
			}
			parentPath := ""
			if len(stack) > 0 {
				parentPath = stack[len(stack)-1].path
			} else if root != nil {
				return nil, &Error{Path: "/" + t.Name.Local, Msg: "more than one root element"}
			}
			n := &node{name: t.Name.Local, path: parentPath + "/" + t.Name.Local, attrs: t.Attr}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return nil, &Error{Path: "/", Msg: "text outside the root element"}
				}
				continue
			}
			stack[len(stack)-1].text.Write(t)
		case xml.Directive:
			s := strings.TrimSpace(string(t))
			if !strings.HasPrefix(s, "DOCTYPE") || strings.ContainsAny(s, "[<") {
				return nil, &Error{Path: "/", Msg: "DOCTYPE with an internal subset or other directive is not allowed"}
			}
		}
	}
	if root == nil {
		return nil, &Error{Path: "/", Msg: "no root element"}
	}
	return root, nil
}

// charsetReader accepts ISO-8859-1 besides UTF-8: each byte is its own code point.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "iso-8859-1", "iso8859-1", "latin1", "latin-1", "us-ascii":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		r := make([]rune, len(b))
		for i, c := range b {
			r[i] = rune(c)
		}
		return strings.NewReader(string(r)), nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", label)
}

// seq walks the children of an element with element-only content.
type seq struct {
	parent *node
	i      int
	err    error
}

func newSeq(n *node) *seq {
	s := &seq{parent: n}
	if strings.TrimSpace(n.text.String()) != "" {
		s.err = &Error{Path: n.path, Msg: "text not allowed in element-only content"}
	}
	return s
}

func (s *seq) peek(name string) bool {
	return s.err == nil && s.i < len(s.parent.children) && s.parent.children[s.i].name == name
}

// one takes the required element name.
func (s *seq) one(name string) *node {
	if s.err != nil {
		return nil
	}
	if !s.peek(name) {
		if s.i < len(s.parent.children) {
			c := s.parent.children[s.i]
			s.err = &Error{Path: c.path, Msg: fmt.Sprintf("unexpected element <%s>, want <%s>", c.name, name)}
		} else {
			s.err = &Error{Path: s.parent.path + "/" + name, Msg: "missing required element"}
		}
		return nil
	}
	s.i++
	return s.parent.children[s.i-1]
}

// opt takes name if it is next.
func (s *seq) opt(name string) *node {
	if !s.peek(name) {
		return nil
	}
	s.i++
	return s.parent.children[s.i-1]
}

// end fails if children remain.
func (s *seq) end() error {
	if s.err == nil && s.i < len(s.parent.children) {
		c := s.parent.children[s.i]
		s.err = &Error{Path: c.path, Msg: fmt.Sprintf("unexpected element <%s> (unknown or out of DTD order)", c.name)}
	}
	return s.err
}

// text returns the #PCDATA of a leaf element.
func text(n *node) (string, error) {
	if len(n.children) > 0 {
		return "", &Error{Path: n.children[0].path, Msg: "element not allowed inside #PCDATA element"}
	}
	return n.text.String(), nil
}

// attrs checks n's attributes against the allowed names and returns their values.
func attrs(n *node, allowed ...string) (map[string]string, error) {
	m := map[string]string{}
	for _, a := range n.attrs {
		if a.Name.Space != "" {
			return nil, &Error{Path: n.path + "/@" + a.Name.Space + ":" + a.Name.Local, Msg: "unknown attribute"}
		}
		ok := false
		for _, x := range allowed {
			ok = ok || a.Name.Local == x
		}
		if !ok {
			return nil, &Error{Path: n.path + "/@" + a.Name.Local, Msg: "unknown attribute"}
		}
		m[a.Name.Local] = a.Value
	}
	return m, nil
}

func build(root *node) (*Postacert, error) {
	if root.name != "postacert" {
		return nil, &Error{Path: root.path, Msg: "root element must be <postacert>"}
	}
	p := &Postacert{}
	a, err := attrs(root, "tipo", "errore")
	if err != nil {
		return nil, err
	}
	tipo, ok := a["tipo"]
	if !ok {
		return nil, &Error{Path: "/postacert/@tipo", Msg: "missing required attribute"}
	}
	p.Tipo = Tipo(tipo)
	if !p.Tipo.Valid() {
		return nil, &Error{Path: "/postacert/@tipo", Msg: fmt.Sprintf("unknown value %q", tipo)}
	}
	p.Errore = ErroreNessuno
	if e, ok := a["errore"]; ok {
		p.Errore = Errore(e)
		if !p.Errore.Valid() {
			return nil, &Error{Path: "/postacert/@errore", Msg: fmt.Sprintf("unknown value %q", e)}
		}
	}
	s := newSeq(root)
	in, dati := s.one("intestazione"), s.one("dati")
	if err := s.end(); err != nil {
		return nil, err
	}
	if err := intestazione(in, &p.Intestazione); err != nil {
		return nil, err
	}
	if err := datiElem(dati, &p.Dati); err != nil {
		return nil, err
	}
	return p, nil
}

// leaf reads a #PCDATA element without attributes; n may be nil (absent).
func leaf(n *node, dst *string) error {
	if n == nil {
		return nil
	}
	if _, err := attrs(n); err != nil {
		return err
	}
	t, err := text(n)
	*dst = t
	return err
}

func intestazione(n *node, in *Intestazione) error {
	if _, err := attrs(n); err != nil {
		return err
	}
	s := newSeq(n)
	mitt := s.one("mittente")
	var dest []*node
	if d := s.one("destinatari"); d != nil {
		dest = append(dest, d)
		for d := s.opt("destinatari"); d != nil; d = s.opt("destinatari") {
			dest = append(dest, d)
		}
	}
	risp := s.one("risposte")
	ogg := s.opt("oggetto")
	if err := s.end(); err != nil {
		return err
	}
	if err := leaf(mitt, &in.Mittente); err != nil {
		return err
	}
	for _, d := range dest {
		a, err := attrs(d, "tipo")
		if err != nil {
			return err
		}
		t := Certificato
		if v, ok := a["tipo"]; ok {
			t = RecipientType(v)
			if !t.Valid() {
				return &Error{Path: d.path + "/@tipo", Msg: fmt.Sprintf("unknown value %q", v)}
			}
		}
		addr, err := text(d)
		if err != nil {
			return err
		}
		in.Destinatari = append(in.Destinatari, Destinatario{Tipo: t, Addr: addr})
	}
	if err := leaf(risp, &in.Risposte); err != nil {
		return err
	}
	if ogg != nil {
		var o string
		if err := leaf(ogg, &o); err != nil {
			return err
		}
		in.Oggetto = &o
	}
	return nil
}

func datiElem(n *node, d *Dati) error {
	if _, err := attrs(n); err != nil {
		return err
	}
	s := newSeq(n)
	gest := s.one("gestore-emittente")
	data := s.one("data")
	ident := s.one("identificativo")
	msgid := s.opt("msgid")
	ric := s.opt("ricevuta")
	cons := s.opt("consegna")
	var ricez []*node
	for r := s.opt("ricezione"); r != nil; r = s.opt("ricezione") {
		ricez = append(ricez, r)
	}
	ee := s.opt("errore-esteso")
	if err := s.end(); err != nil {
		return err
	}
	for _, x := range []struct {
		n   *node
		dst *string
	}{{gest, &d.GestoreEmittente}, {ident, &d.Identificativo}, {msgid, &d.Msgid}, {cons, &d.Consegna}, {ee, &d.ErroreEsteso}} {
		if err := leaf(x.n, x.dst); err != nil {
			return err
		}
	}
	if err := dataElem(data, &d.Data); err != nil {
		return err
	}
	if ric != nil {
		a, err := attrs(ric, "tipo")
		if err != nil {
			return err
		}
		if len(ric.children) > 0 || ric.text.Len() > 0 {
			return &Error{Path: ric.path, Msg: "element declared EMPTY has content"}
		}
		v, ok := a["tipo"]
		if !ok {
			return &Error{Path: ric.path + "/@tipo", Msg: "missing required attribute"}
		}
		d.Ricevuta = ReceiptType(v)
		if !d.Ricevuta.Valid() {
			return &Error{Path: ric.path + "/@tipo", Msg: fmt.Sprintf("unknown value %q", v)}
		}
	}
	for _, r := range ricez {
		var v string
		if err := leaf(r, &v); err != nil {
			return err
		}
		d.Ricezione = append(d.Ricezione, v)
	}
	return nil
}

func dataElem(n *node, d *Data) error {
	a, err := attrs(n, "zona")
	if err != nil {
		return err
	}
	z, ok := a["zona"]
	if !ok {
		return &Error{Path: n.path + "/@zona", Msg: "missing required attribute"}
	}
	d.Zona = z
	s := newSeq(n)
	g, o := s.one("giorno"), s.one("ora")
	if err := s.end(); err != nil {
		return err
	}
	if err := leaf(g, &d.Giorno); err != nil {
		return err
	}
	return leaf(o, &d.Ora)
}

// IsError reports whether err is a daticert *Error.
func IsError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
