package raftstoretest

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func listen(t *testing.T, nw *Network) *FaultLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := nw.Layer(ln).(*FaultLayer)
	t.Cleanup(func() { l.Close() })
	return l
}

// connect dials from a to b and returns both ends, after a round trip.
func connect(t *testing.T, a, b *FaultLayer) (dialed, accepted net.Conn) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := b.Accept()
		ch <- res{c, err}
	}()
	dialed, err := a.Dial(raft.ServerAddress(b.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dialed.Close() })
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	// The hello header is stripped: the acceptor reads exactly what the
	// dialer wrote.
	if _, err := dialed.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r.c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("accepted side read %q, %v; want ping", buf, err)
	}
	return dialed, r.c
}

func TestFaultLayerCutsDialsAndLiveConnectionsBothWaysUntilHealed(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(nw *Network, a, b, c *FaultLayer)
	}{
		{"partition by id", func(nw *Network, a, b, c *FaultLayer) {
			nw.Partition([]string{"a"}, []string{"b", "c"})
		}},
		{"partition by raft address", func(nw *Network, a, b, c *FaultLayer) {
			nw.Partition([]string{b.Addr().String(), c.Addr().String()}, []string{a.Addr().String()})
		}},
		{"isolate", func(nw *Network, a, b, c *FaultLayer) { nw.Isolate("a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := NewNetwork()
			a, b, c := listen(t, nw), listen(t, nw), listen(t, nw)
			nw.Register("a", a.Addr().String())
			nw.Register("b", b.Addr().String())
			nw.Register("c", c.Addr().String())
			ab, ba := connect(t, a, b)
			bc, cb := connect(t, b, c)

			// A read blocked before the cut returns once it is made.
			blocked := make(chan error, 1)
			go func() {
				_, err := ba.Read(make([]byte, 1))
				blocked <- err
			}()
			tc.cut(nw, a, b, c)
			select {
			case err := <-blocked:
				if err == nil {
					t.Fatal("a read blocked across the cut returned no error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a read blocked across the cut did not return")
			}
			if _, err := ab.Write([]byte("x")); err == nil {
				t.Fatal("write across the cut succeeded")
			}
			_, err := a.Dial(raft.ServerAddress(b.Addr().String()), time.Second)
			if !errors.Is(err, ErrPartitioned) {
				t.Fatalf("dial a->b across the cut: err = %v, want ErrPartitioned", err)
			}
			if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("dial a->b across the cut: %v is not a net.Error that timed out, as a real partition's", err)
			}
			if _, err := c.Dial(raft.ServerAddress(a.Addr().String()), time.Second); !errors.Is(err, ErrPartitioned) {
				t.Fatalf("dial c->a across the cut: err = %v, want ErrPartitioned", err)
			}
			// b and c are on the same side.
			if _, err := bc.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2)
			if _, err := io.ReadFull(cb, buf); err != nil {
				t.Fatal(err)
			}

			nw.Heal()
			connect(t, a, b)
			connect(t, c, a)
		})
	}
}

func TestFaultLayerDropsConnectionsWithoutHello(t *testing.T) {
	nw := NewNetwork()
	a, b := listen(t, nw), listen(t, nw)
	raw, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(make([]byte, helloSize)) // length zero: not a hello
	defer raw.Close()
	// Accept skips the bad connection and returns the next good one.
	connect(t, a, b)
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection without a hello was not closed: %v", err)
	}
}
