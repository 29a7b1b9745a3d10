package config

import (
	"os"
	"strings"

	"github.com/gestore-pec/gestore/pec"
	"github.com/gestore-pec/gestore/pec/inspect"
)

// Identities is one pec.Identity per PEC domain of provider.domains, the main identity (that
// of the service address's domain) first. A domain with its own key in signer.keys signs as
// that key's service_address (default provider.service_address); the others share the
// default key and provider.service_address. Every identity has the provider's name and
// receipt address (one record in the providers index).
func (c *Config) Identities() []pec.Identity {
	p := &c.Provider
	own := map[string]string{}
	for _, k := range c.Signer.Keys {
		svc := k.ServiceAddress
		if svc == "" {
			svc = p.ServiceAddress
		}
		own[strings.ToLower(k.Domain)] = svc
	}
	var main []pec.Identity
	var rest []pec.Identity
	for _, d := range p.Domains {
		d = strings.ToLower(d)
		svc, ok := own[d]
		if !ok {
			svc = p.ServiceAddress
		}
		id := pec.Identity{Name: p.Name, Domain: d, ServiceAddress: svc, ReceiptAddress: p.ReceiptAddress}
		if d == strings.ToLower(p.ServiceDomain()) {
			main = append(main, id)
		} else {
			rest = append(rest, id)
		}
	}
	return append(main, rest...)
}

// NodeName is Node, or the short host name.
func (c *Config) NodeName() string {
	if c.Node != "" {
		return c.Node
	}
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	if h == "" {
		h = "node"
	}
	return h
}

// Inspector builds the content inspector of the content: section (validated: a bad
// extension or type names the key).
func (c *Config) Inspector() (*inspect.Inspector, error) {
	ct := c.Content
	p := inspect.DefaultPolicy()
	if ct.ForbiddenExtensions != nil {
		p.ForbiddenExtensions = nil
		for _, e := range ct.ForbiddenExtensions {
			p.ForbiddenExtensions = append(p.ForbiddenExtensions, strings.ToLower(strings.TrimPrefix(e, ".")))
		}
	}
	if len(ct.AllowExtensions) > 0 {
		allow := map[string]bool{}
		for _, e := range ct.AllowExtensions {
			allow[strings.ToLower(strings.TrimPrefix(e, "."))] = true
		}
		var keep []string
		for _, e := range p.ForbiddenExtensions {
			if !allow[e] {
				keep = append(keep, e)
			}
		}
		p.ForbiddenExtensions = keep
	}
	if ct.ForbiddenTypes != nil {
		p.ForbiddenTypes = nil
		for _, t := range ct.ForbiddenTypes {
			p.ForbiddenTypes = append(p.ForbiddenTypes, inspect.Type(strings.ToLower(t)))
		}
	}
	p.RefuseMacros, p.RefuseUnchecked = ct.RefuseMacros, ct.RefuseUnchecked
	in, err := inspect.New(p, inspect.Limits{MaxDepth: ct.MaxDepth, MaxParts: ct.MaxParts, MaxExpanded: int64(ct.MaxExpanded)})
	if err != nil {
		return nil, bad("content", "%v", err)
	}
	return in, nil
}
