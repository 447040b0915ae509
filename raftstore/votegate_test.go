package raftstore

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type fakeProgress struct{ applied, term atomic.Uint64 }

func (p *fakeProgress) AppliedIndex() uint64 { return p.applied.Load() }
func (p *fakeProgress) CurrentTerm() uint64  { return p.term.Load() }

// gatePair is a sending transport and a gated receiving one, both real
// TCP transports on 127.0.0.1.
func gatePair(t *testing.T) (from *raft.NetworkTransport, g *voteGate) {
	t.Helper()
	newTrans := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	from, to := newTrans(), newTrans()
	g = newVoteGate(newGuardedTransport(to), "joiner", slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		g.close()
		to.Close()
		from.Close()
	})
	return from, g
}

// next waits for the RPC the gate hands to Raft.
func next(t *testing.T, g *voteGate) raft.RPC {
	t.Helper()
	select {
	case rpc := <-g.Consumer():
		return rpc
	case <-time.After(10 * time.Second):
		t.Fatal("the gate handed Raft no RPC")
		return raft.RPC{}
	}
}

func TestVoteGateRefusesVotesUntilOpenedAndPassesEverythingElse(t *testing.T) {
	from, g := gatePair(t)
	to := g.LocalAddr()
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("cand"), Addr: []byte(from.LocalAddr())}

	var vote raft.RequestVoteResponse
	if err := from.RequestVote("joiner", to, &raft.RequestVoteRequest{RPCHeader: header, Term: 7, LastLogIndex: 1, LastLogTerm: 1}, &vote); err != nil {
		t.Fatal(err)
	}
	if vote.Granted || vote.Term != 7 {
		t.Fatalf("vote while joining = %+v, want refused in the candidate's term 7", vote)
	}
	var pre raft.RequestPreVoteResponse
	if err := from.RequestPreVote("joiner", to, &raft.RequestPreVoteRequest{RPCHeader: header, Term: 8}, &pre); err != nil {
		t.Fatal(err)
	}
	if pre.Granted || pre.Term != 8 {
		t.Fatalf("pre-vote while joining = %+v, want refused in term 8", pre)
	}
	if g.refused.Load() != 2 {
		t.Fatalf("refused %d votes, want 2", g.refused.Load())
	}

	// Appends reach Raft while joining: they are how the node catches up.
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- from.AppendEntries("joiner", to, &raft.AppendEntriesRequest{RPCHeader: header, Term: 7}, &resp)
	}()
	rpc := next(t, g)
	if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
		t.Fatalf("handed %T to Raft, want the append", rpc.Command)
	}
	rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Once joined, votes are Raft's to answer.
	g.open()
	go func() {
		var resp raft.RequestVoteResponse
		done <- from.RequestVote("joiner", to, &raft.RequestVoteRequest{RPCHeader: header, Term: 9}, &resp)
	}()
	rpc = next(t, g)
	if _, ok := rpc.Command.(*raft.RequestVoteRequest); !ok {
		t.Fatalf("handed %T to Raft after joining, want the vote request", rpc.Command)
	}
	rpc.Respond(&raft.RequestVoteResponse{Term: 9, Granted: true}, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestVoteGateAnswersAStaleSnapshotWithoutInstallingIt: a snapshot at or
// below the applied index is acknowledged without reaching Raft; a newer
// snapshot, or one from a leader of an older term, goes to Raft with all
// its bytes.
func TestVoteGateAnswersAStaleSnapshotWithoutInstallingIt(t *testing.T) {
	from, g := gatePair(t)
	g.open()
	p := &fakeProgress{}
	p.applied.Store(841)
	p.term.Store(2)
	g.follow(p)
	to := g.LocalAddr()
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(from.LocalAddr())}
	data := bytes.Repeat([]byte("snapshot"), 100_000) // larger than any buffer on the way

	install := func(index, term uint64) <-chan error {
		done := make(chan error, 1)
		go func() {
			var resp raft.InstallSnapshotResponse
			err := from.InstallSnapshot("joiner", to, &raft.InstallSnapshotRequest{
				RPCHeader: header, SnapshotVersion: raft.SnapshotVersionMax, Term: term,
				LastLogIndex: index, LastLogTerm: term, Size: int64(len(data)),
			}, &resp, bytes.NewReader(data))
			if err == nil && !resp.Success {
				err = io.ErrUnexpectedEOF // any non-nil: the test reports it
			}
			done <- err
		}()
		return done
	}

	if err := <-install(799, 2); err != nil {
		t.Fatalf("stale snapshot 799 (applied 841): %v, want acknowledged without Raft", err)
	}
	select {
	case rpc := <-g.Consumer():
		t.Fatalf("the stale snapshot reached Raft: %T", rpc.Command)
	default:
	}

	for _, tc := range []struct {
		index, term uint64
		why         string
	}{
		{900, 2, "newer than the applied index"},
		{799, 1, "from a leader of an older term"},
	} {
		done := install(tc.index, tc.term)
		rpc := next(t, g)
		req, ok := rpc.Command.(*raft.InstallSnapshotRequest)
		if !ok || req.LastLogIndex != tc.index {
			t.Fatalf("snapshot %s: Raft got %#v", tc.why, rpc.Command)
		}
		got, err := io.ReadAll(rpc.Reader)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("snapshot %s: Raft read %d bytes, %v; want the %d sent", tc.why, len(got), err, len(data))
		}
		rpc.Respond(&raft.InstallSnapshotResponse{Term: 2, Success: true}, nil)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestJoiningMarkKeepsTheIncarnation: the mark gives each joining disk a
// random incarnation and keeps it across restarts; a mark written before
// incarnations existed is given one, durably.
func TestJoiningMarkKeepsTheIncarnation(t *testing.T) {
	dir := t.TempDir()
	inc, err := markJoining(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(inc) != 32 {
		t.Fatalf("incarnation %q, want 32 hex digits", inc)
	}
	if got, err := joiningIncarnation(dir); err != nil || got != inc {
		t.Fatalf("read back %q, %v; want %q", got, err, inc)
	}
	if other, err := markJoining(t.TempDir()); err != nil || other == inc {
		t.Fatalf("a second disk's incarnation %q, %v; want another than %q", other, err, inc)
	}

	legacy := t.TempDir()
	if err := os.WriteFile(filepath.Join(legacy, joiningFile), []byte(joiningNote), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := joiningIncarnation(legacy)
	if err != nil || len(got) != 32 {
		t.Fatalf("legacy mark: incarnation %q, %v; want one made", got, err)
	}
	if again, err := joiningIncarnation(legacy); err != nil || again != got {
		t.Fatalf("legacy mark read again: %q, %v; want the one made, %q", again, err, got)
	}
	if joining, err := isJoining(legacy); err != nil || !joining {
		t.Fatalf("legacy mark: joining %v, %v; want still joining", joining, err)
	}
}
