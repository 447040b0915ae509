package raftstoretest

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Network decides which nodes can talk to each other. It is shared by the
// FaultLayers of one cluster; nodes are known by their Raft address, and by
// their id once registered.
//
// A cut is symmetric: between two cut nodes Dial fails, connections that
// exist are closed at once (so that a Read blocked in the kernel returns),
// and any later Read or Write on them fails with ErrPartitioned. Heal lifts
// every cut; connections closed by a cut stay closed, and Raft dials new
// ones.
type Network struct {
	mu       sync.Mutex
	ids      map[string]string   // node id -> Raft address
	cut      map[[2]string]bool  // pairs of Raft addresses, sorted
	isolated map[string]bool     // Raft addresses cut off from everyone
	conns    map[*faultConn]bool // open connections of every layer
}

// NewNetwork returns a network with no cuts.
func NewNetwork() *Network {
	return &Network{
		ids:      map[string]string{},
		cut:      map[[2]string]bool{},
		isolated: map[string]bool{},
		conns:    map[*faultConn]bool{},
	}
}

// Register names the node at raftAddr, so that Partition and Isolate
// accept its id.
func (n *Network) Register(id, raftAddr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids[id] = raftAddr
}

// Partition cuts every node of a from every node of b. Nodes are given by
// id or by Raft address. Nodes within one group still talk.
func (n *Network) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			if p, q := n.addr(x), n.addr(y); p != q {
				n.cut[pair(p, q)] = true
			}
		}
	}
	n.closeCutLocked()
}

// Isolate cuts the node (id or Raft address) from every other node,
// including nodes that join later.
func (n *Network) Isolate(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[n.addr(node)] = true
	n.closeCutLocked()
}

// Heal lifts every cut.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	clear(n.isolated)
}

// Layer returns a FaultLayer over ln, for raftstore.Config.StreamLayer.
// The node's Raft address is ln's address.
func (n *Network) Layer(ln net.Listener) raft.StreamLayer {
	return &FaultLayer{ln: ln, addr: ln.Addr().String(), nw: n}
}

func (n *Network) addr(node string) string {
	if a, ok := n.ids[node]; ok {
		return a
	}
	return node
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (n *Network) blockedLocked(a, b string) bool {
	return a != b && (n.isolated[a] || n.isolated[b] || n.cut[pair(a, b)])
}

func (n *Network) blocked(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blockedLocked(a, b)
}

func (n *Network) closeCutLocked() {
	for c := range n.conns {
		if n.blockedLocked(c.local, c.remote) {
			delete(n.conns, c)
			c.Conn.Close()
		}
	}
}

// track wraps c, or closes it and returns nil when its ends are cut apart
// or the layer is closed.
func (n *Network) track(l *FaultLayer, c net.Conn, remote string) *faultConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.closed || n.blockedLocked(l.addr, remote) {
		c.Close()
		return nil
	}
	fc := &faultConn{Conn: c, nw: n, layer: l, local: l.addr, remote: remote}
	n.conns[fc] = true
	return fc
}

// FaultLayer is a raft.StreamLayer over TCP whose connections a Network
// can cut.
//
// To know who is at the other end of an accepted connection, Dial writes
// a hello header of helloSize bytes first: one length byte and the
// dialer's Raft address, zero-padded. Accept reads and strips it before
// Raft sees the connection; a connection without one is dropped. Accept
// waits at most helloTimeout for it, during which it accepts nothing else.
type FaultLayer struct {
	ln   net.Listener
	addr string // this node's Raft address
	nw   *Network
	// closed is guarded by nw.mu.
	closed bool
}

const (
	helloSize    = 64
	helloTimeout = 2 * time.Second
)

// Accept waits for the next connection from a node not cut from this one.
func (l *FaultLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return nil, err
		}
		peer, err := readHello(c)
		if err != nil {
			c.Close()
			continue
		}
		if fc := l.nw.track(l, c, peer); fc != nil {
			return fc, nil
		}
	}
}

// Close closes the listener and every connection of this layer, as the
// death of the process would.
func (l *FaultLayer) Close() error {
	l.nw.mu.Lock()
	l.closed = true
	for c := range l.nw.conns {
		if c.layer == l {
			delete(l.nw.conns, c)
			c.Conn.Close()
		}
	}
	l.nw.mu.Unlock()
	return l.ln.Close()
}

// Addr is the listener's address, which is the node's Raft address.
func (l *FaultLayer) Addr() net.Addr { return l.ln.Addr() }

// Dial connects to the node at address unless the two are cut apart.
func (l *FaultLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	remote := string(address)
	if l.nw.blocked(l.addr, remote) {
		return nil, fmt.Errorf("%w: %s -> %s", ErrPartitioned, l.addr, remote)
	}
	c, err := net.DialTimeout("tcp", remote, timeout)
	if err != nil {
		return nil, err
	}
	if err := writeHello(c, l.addr, timeout); err != nil {
		c.Close()
		return nil, err
	}
	fc := l.nw.track(l, c, remote)
	if fc == nil {
		return nil, fmt.Errorf("%w: %s -> %s", ErrPartitioned, l.addr, remote)
	}
	return fc, nil
}

func writeHello(c net.Conn, addr string, timeout time.Duration) error {
	if len(addr) >= helloSize {
		return fmt.Errorf("%w: address %q is longer than %d bytes", ErrBadHello, addr, helloSize-1)
	}
	var h [helloSize]byte
	h[0] = byte(len(addr))
	copy(h[1:], addr)
	if timeout > 0 {
		c.SetWriteDeadline(time.Now().Add(timeout))
		defer c.SetWriteDeadline(time.Time{})
	}
	_, err := c.Write(h[:])
	return err
}

func readHello(c net.Conn) (string, error) {
	var h [helloSize]byte
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	defer c.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadHello, err)
	}
	if n := int(h[0]); n > 0 && n < helloSize {
		return string(h[1 : 1+n]), nil
	}
	return "", ErrBadHello
}

// faultConn fails its reads and writes once its ends are cut apart.
type faultConn struct {
	net.Conn
	nw            *Network
	layer         *FaultLayer
	local, remote string
}

func (c *faultConn) Read(p []byte) (int, error) {
	if c.nw.blocked(c.local, c.remote) {
		c.Close()
		return 0, fmt.Errorf("%w: %s <- %s", ErrPartitioned, c.local, c.remote)
	}
	return c.Conn.Read(p)
}

func (c *faultConn) Write(p []byte) (int, error) {
	if c.nw.blocked(c.local, c.remote) {
		c.Close()
		return 0, fmt.Errorf("%w: %s -> %s", ErrPartitioned, c.local, c.remote)
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.nw.mu.Lock()
	delete(c.nw.conns, c)
	c.nw.mu.Unlock()
	return c.Conn.Close()
}
