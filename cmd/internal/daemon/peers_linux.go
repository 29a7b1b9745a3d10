package daemon

import (
	"net"

	"golang.org/x/sys/unix"
)

func peerCredSupported() error { return nil }

// peerCred reads the credentials the kernel recorded for the peer when it connected
// (SO_PEERCRED, unix(7)): the peer cannot choose them.
func peerCred(c net.Conn) (credentials, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return credentials{}, errNotUnix
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return credentials{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return credentials{}, err
	}
	if cerr != nil {
		return credentials{}, cerr
	}
	return credentials{uid: cred.Uid, pid: cred.Pid}, nil
}
