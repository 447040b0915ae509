package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// guardedTransport is the Raft transport with its heartbeat fast path
// guarded. hashicorp/raft's NetworkTransport calls the heartbeat handler
// on the connection's goroutine, outside Raft's own goroutines, so
// Raft's Shutdown does not wait for it: a heartbeat that passed Raft's
// shutdown check just before could still write the current term after
// Close had closed the log store, and Raft panics on that write ("failed
// to save current term: database not open", seen in CI). Close stops the
// heartbeats, waiting for those in flight, before it closes the stores.
type guardedTransport struct {
	*raft.NetworkTransport
	mu      sync.RWMutex
	stopped bool
}

// SetHeartbeatHandler installs cb behind the guard.
func (g *guardedTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		g.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	g.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.mu.RLock()
		defer g.mu.RUnlock()
		if g.stopped {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		cb(rpc)
	})
}

// stopHeartbeats waits for the heartbeats being handled and refuses the
// later ones.
func (g *guardedTransport) stopHeartbeats() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}
