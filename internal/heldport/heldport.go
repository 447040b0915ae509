// Package heldport keeps a loopback port for a whole test while the
// servers behind it stop and start.
//
// A test that closes a listener and listens again on its port, to stand
// for a server that went away and came back, can fail: another process
// (another package's tests, run at the same time) may take the freed port
// in between ("bind: address already in use", seen in CI). A held port
// stays bound for the whole test by a socket that does not listen, so no
// other process can bind it and no outgoing connection is given it, and
// a connection to it is refused while no server listens behind it, as it
// is when a server is down. The servers listen beside that socket
// (SO_REUSEPORT on both).
package heldport

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Port is a loopback port held for a test.
type Port struct {
	addr string
}

// Hold binds a loopback port the system picks, without listening, and
// keeps it until the test ends.
func Hold(t testing.TB) *Port {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("heldport: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatalf("heldport: SO_REUSEPORT: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("heldport: bind: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("heldport: %v", err)
	}
	return &Port{addr: fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)}
}

// Addr is the port's address, host:port.
func (p *Port) Addr() string { return p.addr }

// Listen listens on the port for the next server behind it; connections
// are refused again once that listener is closed (a gRPC server's Stop
// closes it).
func (p *Port) Listen(t testing.TB) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", p.addr)
	if err != nil {
		t.Fatalf("heldport: listen on %s: %v", p.addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
