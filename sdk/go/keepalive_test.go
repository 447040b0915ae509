package stated_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAClientCutOffFromItsDaemonMovesToAnotherAddress: a Client given two
// addresses of a cluster is connected through the first when that
// daemon's host is cut off: its packets are dropped, and no reset ever
// comes (a dead host, a partition). The Client's keepalive finds the
// connection dead within about 13 s and the Client connects to the other
// address, where its commit goes through. Without the keepalive every
// retry of the commit went to the dead connection and timed out, for as
// long as the kernel kept the connection (a quarter of an hour).
func TestAClientCutOffFromItsDaemonMovesToAnotherAddress(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	p := newBlackholeProxy(t, d.TCPAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, p.addr()+","+d.TCPAddr(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("before")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if p.forwarded.Load() == 0 {
		t.Fatal("the Client's first connection did not go through the first address")
	}

	p.blackhole()
	cut := time.Now()
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("after")).Commit(cctx); err != nil {
		t.Fatalf("a commit after the first address was cut off: %v (it kept going to the dead connection)", err)
	}
	t.Logf("the commit went through the second address %v after the first was cut off", time.Since(cut).Round(time.Millisecond))
	it, found, err := c.Get(ctx, "ns", []byte("k"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil || !found || string(it.Value) != "after" {
		t.Fatalf("k holds %q (found %v, %v), want \"after\"", it.Value, found, err)
	}
}

// blackholeProxy forwards TCP connections to target until blackhole is
// called. From then on it forwards nothing in either direction and closes
// nothing, and connections made later are accepted and get nothing: what
// a client sees of a host whose packets a firewall drops.
type blackholeProxy struct {
	l         net.Listener
	target    string
	dark      atomic.Bool
	forwarded atomic.Int64
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
	closed    bool
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{l: l, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *blackholeProxy) addr() string { return p.l.Addr().String() }

func (p *blackholeProxy) blackhole() { p.dark.Store(true) }

func (p *blackholeProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.track(in)
		if p.dark.Load() {
			p.pipe(in, io.Discard)
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.track(out)
		p.pipe(in, out)
		p.pipe(out, in)
	}
}

// track keeps c to be closed with the proxy, or closes it if the proxy
// is closed already.
func (p *blackholeProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return
	}
	p.conns = append(p.conns, c)
}

// pipe copies from src to dst while the proxy is not dark, and reads and
// drops what comes once it is.
func (p *blackholeProxy) pipe(src net.Conn, dst io.Writer) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.dark.Load() {
				p.forwarded.Add(int64(n))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
}

func (p *blackholeProxy) close() {
	p.l.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
