package daemon

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/gestore-pec/gestore/cmd/internal/config"
)

// Listen opens a listener from a configuration value ("unix:/path" or "inet:host:port"); a
// unix socket gets mode (octal, e.g. "0660") and group ("-" leaves the process's group), so
// that Postfix's processes (user postfix) can connect.
func (d *Daemon) Listen(spec, mode, group string) (net.Listener, error) {
	network, addr, err := config.ParseListen(spec)
	if err != nil {
		return nil, err
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || m > 0o777 {
		return nil, fmt.Errorf("socket mode %q: want an octal mode such as 0660", mode)
	}
	gid := -1
	if network == "unix" && group != "-" && group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("socket group: %w", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("socket group: %w", err)
		}
	}
	return listenSocket(network, addr, os.FileMode(m), gid)
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
