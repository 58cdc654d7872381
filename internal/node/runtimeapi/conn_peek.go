//go:build linux || darwin

package runtimeapi

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the client has already closed or reset c,
// without consuming any data. net/http notices a closed connection only
// asynchronously (and cancels the request context then), so without this
// check an event could be written into a connection whose peer is already
// gone: the write succeeds locally and the event is lost.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	// Control rather than Read: net/http's background reader may hold the
	// read lock, and a non-blocking peek needs no lock.
	cerr := rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0 // orderly shutdown (FIN)
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			// Alive, nothing to read.
		default:
			closed = true // reset or other socket error
		}
	})
	return cerr == nil && closed
}
