package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/gestore-pec/gestore/cmd/internal/config"
)

// guard decides whether an accepted connection may stay. attrs describe the peer for the log.
type guard func(c net.Conn) (ok bool, attrs []any)

// guardedListener hands its server only the connections its guard admits; the others are
// closed before the server reads a byte, with a warning naming the peer (its uid and pid on a
// unix socket: what a sysadmin needs to find the process).
type guardedListener struct {
	net.Listener
	allow guard
	log   *slog.Logger
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ok, attrs := l.allow(c)
		if ok {
			return c, nil
		}
		l.log.Warn("connection refused: this peer may not use the listener (allow_users / allow_inet_peers)", attrs...)
		c.Close()
	}
}

// unixGuard admits the processes whose user is in allow_users (DESIGN.md "Trust": the milter
// socket is used only by Postfix's user, checked with the peer's credentials).
func unixGuard(l config.Listener) (guard, error) {
	uids, err := l.Peers.UIDs(l.Key)
	if err != nil {
		return nil, err
	}
	if len(uids) == 0 {
		return nil, fmt.Errorf("config: %s.allow_users: no user may connect to the unix socket", l.Key)
	}
	if err := peerCredSupported(); err != nil {
		return nil, fmt.Errorf("config: %s.listen: %w", l.Key, err)
	}
	return func(c net.Conn) (bool, []any) {
		cred, err := peerCred(c)
		if err != nil {
			return false, []any{slog.Any("error", err)}
		}
		return slices.Contains(uids, cred.uid), []any{slog.Uint64("peer_uid", uint64(cred.uid)), slog.Int("peer_pid", int(cred.pid))}
	}, nil
}

// inetGuard admits the addresses of allow_inet_peers; a TCP listener without them is refused
// here too, whatever the configuration check let through.
func inetGuard(l config.Listener) (guard, error) {
	if len(l.Peers.Nets) == 0 {
		return nil, fmt.Errorf("config: %s.listen: a TCP listener needs %s.allow_inet_peers", l.Key, l.Key)
	}
	return func(c net.Conn) (bool, []any) {
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil {
			return false, []any{slog.String("peer", c.RemoteAddr().String()), slog.Any("error", err)}
		}
		return l.Peers.Allows(ap.Addr()), []any{slog.String("peer", ap.Addr().String())}
	}, nil
}

type credentials struct {
	uid uint32
	pid int32
}

var errNotUnix = errors.New("not a unix socket connection")
