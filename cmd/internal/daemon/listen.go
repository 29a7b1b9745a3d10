package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
)

// Listen opens a listener from its configuration ("unix:/path" or "inet:host:port") and admits
// only the peers it allows (DESIGN.md "Trust"): on a unix socket the processes of
// allow_users, by the kernel's credentials of the peer (SO_PEERCRED); on TCP the addresses of
// allow_inet_peers. Any other connection is closed at once, before a byte is read, with a
// warning naming the peer. A unix socket gets mode (octal, e.g. "0660") and group ("-" leaves
// the process's group), so that Postfix's processes (group postfix) can connect and nobody
// outside the group can.
//
// Errors name the configuration key ("config: milter.listen: ...").
func (d *Daemon) Listen(l config.Listener) (net.Listener, error) {
	network, addr, err := config.ParseListen(l.Spec)
	if err != nil {
		return nil, fmt.Errorf("config: %s.listen: %w", l.Key, err)
	}
	m, err := strconv.ParseUint(l.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return nil, fmt.Errorf("config: %s.socket_mode: %q: want an octal mode such as 0660", l.Key, l.Mode)
	}
	var g guard
	gid := -1
	if network == "unix" {
		if g, err = unixGuard(l); err != nil {
			return nil, err
		}
		if l.Group != "-" && l.Group != "" {
			gr, err := user.LookupGroup(l.Group)
			if err != nil {
				return nil, fmt.Errorf("config: %s.socket_group: %w", l.Key, err)
			}
			if gid, err = strconv.Atoi(gr.Gid); err != nil {
				return nil, fmt.Errorf("config: %s.socket_group: %w", l.Key, err)
			}
		}
	} else if g, err = inetGuard(l); err != nil {
		return nil, err
	}
	ln, err := listenSocket(network, addr, os.FileMode(m), gid)
	if err != nil {
		return nil, fmt.Errorf("config: %s.listen: %w", l.Key, err)
	}
	return &guardedListener{Listener: ln, allow: g, log: d.Log.With(slog.String("listener", l.Key))}, nil
}

// listenSocket opens a listener: "unix" with a socket path, or "tcp" with host:port. A stale
// unix socket (left by a crash, nobody answering) is removed; a socket in use is an error.
// The socket gets mode and, when gid >= 0, that group.
func listenSocket(network, addr string, mode os.FileMode, gid int) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, addr)
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", addr)
		}
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another process", addr)
		}
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	// The socket file is removed when the listener closes (the default for unix listeners
	// made by net.Listen), so a clean stop leaves nothing behind.
	if gid >= 0 {
		if err := os.Chown(addr, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket group: %w", err)
		}
	}
	if err := os.Chmod(addr, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}
