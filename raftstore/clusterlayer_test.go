package raftstore

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// layerNode is one end of a Raft transport over TCP on 127.0.0.1, with the
// cluster check (cluster set) or without (an older release), answering
// every AppendEntries it is handed and counting them.
type layerNode struct {
	tr      *raft.NetworkTransport
	cluster atomic.Pointer[string]
	served  atomic.Int64
}

func startLayerNode(t *testing.T, checked bool, cluster string) *layerNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &layerNode{}
	n.cluster.Store(&cluster)
	var layer raft.StreamLayer = &tcpLayer{Listener: ln, advertise: ln.Addr()}
	if checked {
		layer = newClusterLayer(layer, func() string { return *n.cluster.Load() }, func() string { return "" }, func(error) {}, slog.New(slog.DiscardHandler))
	}
	n.tr = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 2, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
	})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-n.tr.Consumer():
				n.served.Add(1)
				rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		n.tr.Close()
	})
	return n
}

// appendTo sends one AppendEntries from n to peer, with entries so that it
// takes the ordinary path (not the heartbeat one).
func (n *layerNode) appendTo(peer *layerNode) error {
	var resp raft.AppendEntriesResponse
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte(n.tr.LocalAddr())},
		Term:      7, PrevLogEntry: 10, PrevLogTerm: 2, LeaderCommitIndex: 12,
		Entries: []*raft.Log{{Index: 11, Term: 7, Type: raft.LogCommand, Data: []byte("entry")}},
	}
	if err := n.tr.AppendEntries("peer", peer.tr.LocalAddr(), req, &resp); err != nil {
		return err
	}
	if resp.Term != 7 || !resp.Success {
		return errWrongAnswer
	}
	return nil
}

var errWrongAnswer = &net.AddrError{Err: "the peer's answer was not its handler's"}

// TestRaftConnectionsBetweenClustersAreRefused: a node whose Raft address
// reaches a node of another cluster neither delivers this cluster's
// entries there nor gets an answer; nodes of one cluster, and a node with
// no cluster id yet (joining, or before its first leader recorded one),
// talk as before.
func TestRaftConnectionsBetweenClustersAreRefused(t *testing.T) {
	t.Parallel()
	a := startLayerNode(t, true, "aaaaaaaaaaaaaaaa")
	other := startLayerNode(t, true, "bbbbbbbbbbbbbbbb")
	err := a.appendTo(other)
	if err == nil || !strings.Contains(err.Error(), "another cluster") || !strings.Contains(err.Error(), "bbbbbbbbbbbbbbbb") {
		t.Fatalf("AppendEntries to another cluster's node: %v; want a refusal naming its cluster", err)
	}
	if err := other.appendTo(a); err == nil {
		t.Fatal("AppendEntries from another cluster's node was answered")
	}
	if n := other.served.Load() + a.served.Load(); n != 0 {
		t.Fatalf("%d RPCs between clusters reached Raft", n)
	}

	same := startLayerNode(t, true, "aaaaaaaaaaaaaaaa")
	unknown := startLayerNode(t, true, "")
	for _, c := range []struct {
		name     string
		from, to *layerNode
	}{
		{"same cluster", a, same},
		{"same cluster, the other way", same, a},
		{"to a node without a cluster id", a, unknown},
		{"from a node without a cluster id", unknown, a},
	} {
		if err := c.from.appendTo(c.to); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if same.served.Load() != 1 || unknown.served.Load() != 1 || a.served.Load() != 2 {
		t.Fatalf("served: same %d, unknown %d, a %d; want 1, 1, 2", same.served.Load(), unknown.served.Load(), a.served.Load())
	}

	// A node that learns its cluster's id checks new connections from then on.
	id := "bbbbbbbbbbbbbbbb"
	unknown.cluster.Store(&id)
	fresh := startLayerNode(t, true, "aaaaaaaaaaaaaaaa")
	if err := fresh.appendTo(unknown); err == nil {
		t.Fatal("AppendEntries to a node that since recorded another cluster's id was answered")
	}
}

// TestRaftConnectionsToAndFromOlderReleasesAreServed: a release without
// the cluster check neither sends nor understands it; a rolling upgrade
// has both on the wire, and Raft must flow both ways between them.
func TestRaftConnectionsToAndFromOlderReleasesAreServed(t *testing.T) {
	t.Parallel()
	checked := startLayerNode(t, true, "aaaaaaaaaaaaaaaa")
	older := startLayerNode(t, false, "")
	for i := range 3 { // more than the pool: each new connection falls back again
		if err := checked.appendTo(older); err != nil {
			t.Fatalf("to an older release, %d: %v", i, err)
		}
		if err := older.appendTo(checked); err != nil {
			t.Fatalf("from an older release, %d: %v", i, err)
		}
	}
	if older.served.Load() != 3 || checked.served.Load() != 3 {
		t.Fatalf("served: older %d, checked %d; want 3 each", older.served.Load(), checked.served.Load())
	}
}

// handshake dials addr and runs the dialling side of the cluster check
// with id.
func handshake(t *testing.T, addr, id string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return dialHandshake(conn, id, 2*time.Second)
}

// TestStoresPresentTheirClusterFromTheirFirstConnection: a node that
// bootstraps a new cluster checks Raft connections against the id it
// chose before its Raft port listened, which its first leader records; a
// node that is joining accepts every node until it is told which cluster
// it joins, and from then on refuses the others.
func TestStoresPresentTheirClusterFromTheirFirstConnection(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t.TempDir()))
	defer s.Close()
	if s.bootstrapClusterID == "" || s.ClusterID() != s.bootstrapClusterID {
		t.Fatalf("the first leader recorded cluster id %q; the node bootstrapped with %q", s.ClusterID(), s.bootstrapClusterID)
	}
	if err := handshake(t, s.RaftAddr(), "0123456789abcdef"); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("a bootstrapped node answered another cluster's connection with %v", err)
	}
	if err := handshake(t, s.RaftAddr(), s.ClusterID()); err != nil {
		t.Fatalf("a bootstrapped node refused its own cluster: %v", err)
	}

	cfg := testConfig(t.TempDir())
	cfg.NodeID = "n2"
	cfg.Bootstrap = false
	j, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !j.NeedsJoin() {
		t.Fatal("a node without state that does not bootstrap does not need a join")
	}
	if err := handshake(t, j.RaftAddr(), "0123456789abcdef"); err != nil {
		t.Fatalf("a joining node that knows no cluster yet refused a connection: %v", err)
	}
	j.ExpectClusterID(s.ClusterID())
	if err := handshake(t, j.RaftAddr(), "0123456789abcdef"); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("a joining node told its cluster answered another cluster's connection with %v", err)
	}
	if err := handshake(t, j.RaftAddr(), s.ClusterID()); err != nil {
		t.Fatalf("a joining node refused the cluster it joins: %v", err)
	}
}
