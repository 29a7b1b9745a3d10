//go:build !linux

package daemon

import (
	"errors"
	"net"
)

// Peer credentials are read with Linux's SO_PEERCRED; elsewhere a unix listener cannot check
// who connects, so it does not open.
func peerCredSupported() error {
	return errors.New("checking the peer of a unix socket (SO_PEERCRED) is implemented for Linux only")
}

func peerCred(net.Conn) (credentials, error) { return credentials{}, errNotUnix }
