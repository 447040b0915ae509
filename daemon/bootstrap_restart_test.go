package daemon_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// silentPeer accepts connections and never answers, as a member that is
// starting too does (its port is bound, its gRPC not served yet). It
// counts the connections.
type silentPeer struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	times    []time.Time // of each accept
}

func newSilentPeer(t *testing.T) *silentPeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentPeer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.times = append(p.times, time.Now())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

// lastAccept is when the peer accepted its newest connection.
func (p *silentPeer) lastAccept() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.times[len(p.times)-1]
}

// TestTheBootstrapNodeRestartedWithStateDoesNotAskWhetherAClusterExists:
// the bootstrap node (--bootstrap-node-id) asks the other join addresses
// whether a cluster exists, waiting up to 5 s on one that accepts and
// says nothing, as members do while they start. That question decides
// what an empty data dir does; a node that has Raft state is a member
// whatever the answer, so a restart (every pod of a StatefulSet at once)
// must not ask it. Only the restarting member's own check of which
// cluster its join addresses serve (one connection to each) is made, and
// it asks them at the same time: a member does not wait 2 s on each
// silent one in turn.
func TestTheBootstrapNodeRestartedWithStateDoesNotAskWhetherAClusterExists(t *testing.T) {
	peer, peer2 := newSilentPeer(t), newSilentPeer(t)
	var logs daemontest.Buffer
	cfg := daemontest.Config(t, "n1")
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.Join = []string{peer.ln.Addr().String(), peer2.ln.Addr().String()}
	cfg.BootstrapNodeID = "n1"
	start := func() *daemon.Daemon {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		d, err := daemon.Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start: %v\n%s", err, logs.String())
		}
		return d
	}
	d := start()
	first := peer.accepted.Load()
	if !strings.Contains(logs.String(), "bootstrap node: no other join address is a member") {
		t.Fatalf("the first start of an empty data dir did not ask whether a cluster exists:\n%s", logs.String())
	}
	if first < 1 {
		t.Fatalf("the first start made no connection to the join address")
	}
	dataDir := cfg.DataDir
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	before := len(logs.String())
	cfg.DataDir = dataDir
	d = start()
	defer d.Close()
	if again := peer.accepted.Load() - first; again != 1 {
		t.Errorf("the restart made %d connections to the join address, want 1 (the member's check only)", again)
	}
	if gap := peer2.lastAccept().Sub(peer.lastAccept()).Abs(); gap > time.Second {
		t.Errorf("the restart's check asked the two join addresses %v apart: one after the other, each silent one waited on in turn", gap)
	}
	if after := logs.String()[before:]; strings.Contains(after, "bootstrap node:") {
		t.Errorf("the restart with Raft state asked whether a cluster exists:\n%s", after)
	}
}
