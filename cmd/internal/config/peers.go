package config

import (
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
)

// Peers says which processes may connect to one of our listeners. DESIGN.md "Trust": our
// sockets trust their callers by credentials, never by what they say (a milter client sets
// {auth_authen} itself, so whoever reaches the milter socket could have any user's message
// signed "per conto di" that user; whoever reaches the confirmation socket could release an
// accettazione for a busta Postfix never queued).
//
//	milter:
//	  listen: "unix:/run/pec/milter.sock"
//	  allow_users: [postfix]               # the default
//	# or, as an explicit and documented choice:
//	  listen: "inet:127.0.0.1:8891"
//	  allow_inet_peers: [127.0.0.1]
type Peers struct {
	// AllowUsers: on a unix socket, the users (names or numeric uids) whose processes may
	// connect, checked with the kernel's credentials of the peer (SO_PEERCRED), which the
	// peer cannot choose. Default [postfix]: Postfix's smtpd (milter client) and lmtp
	// (confirmation client) run as its mail_owner, postfix. root is refused unless listed.
	AllowUsers []string `yaml:"allow_users"`
	// AllowInetPeers: on an inet: listener, the addresses (127.0.0.1) or networks
	// (10.0.0.0/24) allowed to connect. Required for inet:, where no credentials exist: a
	// TCP listener is accepted only with an explicit allow-list.
	AllowInetPeers []string `yaml:"allow_inet_peers"`

	// Nets is AllowInetPeers parsed by validate.
	Nets []netip.Prefix `yaml:"-"`
}

// DefaultPeerUser is the user a unix listener admits when allow_users is not set: Postfix's
// default mail_owner.
const DefaultPeerUser = "postfix"

// Listener is everything needed to open one listener: its address, socket mode and group,
// who may connect, and the configuration key it comes from (for errors and logs).
type Listener struct {
	Key   string // "milter", "confirm"
	Spec  string // unix:/path or inet:host:port
	Mode  string // octal mode of a unix socket
	Group string // group of a unix socket ("-": the process's)
	Peers Peers
}

// Listener returns the milter listener (after ValidateMilter).
func (m *Milter) Listener() Listener {
	return Listener{Key: "milter", Spec: m.Listen, Mode: m.SocketMode, Group: m.SocketGroup, Peers: m.Peers}
}

// Listener returns the confirmation listener (after ValidateMilter).
func (cf *Confirm) Listener() Listener {
	return Listener{Key: "confirm", Spec: cf.Listen, Mode: cf.SocketMode, Group: cf.SocketGroup, Peers: cf.Peers}
}

// validate checks the peers of the listener at key (spec already parsed) and applies the
// default.
func (p *Peers) validate(key, spec string) error {
	network, _, err := ParseListen(spec)
	if err != nil {
		return bad(key+".listen", "%v", err)
	}
	p.Nets = nil
	if network == "unix" {
		if len(p.AllowInetPeers) > 0 {
			return bad(key+".allow_inet_peers", "only for an inet: listener; a unix socket admits by user (%s.allow_users)", key)
		}
		if len(p.AllowUsers) == 0 {
			p.AllowUsers = []string{DefaultPeerUser}
		}
		for i, u := range p.AllowUsers {
			if strings.TrimSpace(u) == "" {
				return bad(fmt.Sprintf("%s.allow_users[%d]", key, i), "empty user name")
			}
		}
		return nil
	}
	// DESIGN.md "Trust": a TCP listener is an explicit choice with an allow-list.
	if len(p.AllowInetPeers) == 0 {
		return bad(key+".listen", "%q is a TCP listener, which anybody who can reach it may use: "+
			"use a unix socket, or list the addresses allowed to connect in %s.allow_inet_peers", spec, key)
	}
	if len(p.AllowUsers) > 0 {
		return bad(key+".allow_users", "only for a unix socket; a TCP listener admits by address (%s.allow_inet_peers)", key)
	}
	for i, a := range p.AllowInetPeers {
		pf, err := parsePeer(a)
		if err != nil {
			return bad(fmt.Sprintf("%s.allow_inet_peers[%d]", key, i), "%q: want an address (127.0.0.1) or a network (10.0.0.0/24)", a)
		}
		p.Nets = append(p.Nets, pf)
	}
	return nil
}

func parsePeer(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// UIDs resolves AllowUsers (names or numeric uids) to user ids. It is called when the
// listener opens, so an unknown user stops the program at start.
func (p Peers) UIDs(key string) ([]uint32, error) {
	var out []uint32
	for i, name := range p.AllowUsers {
		name = strings.TrimSpace(name)
		if n, err := strconv.ParseUint(name, 10, 32); err == nil {
			out = append(out, uint32(n))
			continue
		}
		u, err := user.Lookup(name)
		if err != nil {
			return nil, bad(fmt.Sprintf("%s.allow_users[%d]", key, i), "%v", err)
		}
		n, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, bad(fmt.Sprintf("%s.allow_users[%d]", key, i), "user %s has uid %q", name, u.Uid)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// Allows reports whether an inet peer address is in Nets.
func (p Peers) Allows(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range p.Nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
