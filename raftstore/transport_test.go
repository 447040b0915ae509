package raftstore

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestStopHeartbeatsWaitsForTheOneInFlightAndRefusesLaterOnes: Close
// must not close the log store under a heartbeat the transport is still
// handling outside Raft's goroutines.
func TestStopHeartbeatsWaitsForTheOneInFlightAndRefusesLaterOnes(t *testing.T) {
	newTrans := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	from := newTrans()
	g := &guardedTransport{NetworkTransport: newTrans()}
	entered, release := make(chan struct{}), make(chan struct{})
	calls := 0
	g.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls++
		close(entered)
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	heartbeat := func() <-chan error {
		done := make(chan error, 1)
		go func() {
			var resp raft.AppendEntriesResponse
			done <- from.AppendEntries("n", g.LocalAddr(), &raft.AppendEntriesRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(from.LocalAddr())},
				Term:      1,
			}, &resp)
		}()
		return done
	}

	first := heartbeat()
	<-entered
	stopped := make(chan struct{})
	go func() { g.stopHeartbeats(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stopHeartbeats returned while a heartbeat was being handled")
	case <-time.After(100 * time.Millisecond): // the condition is that it keeps waiting
	}
	close(release)
	<-stopped
	if err := <-first; err != nil {
		t.Fatalf("the heartbeat in flight: %v", err)
	}
	if err := <-heartbeat(); err == nil {
		t.Fatal("a heartbeat after stopHeartbeats was answered as handled")
	}
	if calls != 1 {
		t.Fatalf("the handler ran %d times, want 1", calls)
	}
}
