package raftstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A node that joins a cluster must not vote before the cluster has
// accepted it as a member.
//
// Raft's safety rests on voters remembering: a node that acknowledged an
// entry keeps it, and a node that voted in a term keeps that vote. A node
// whose disk was lost and that comes back under its old id remembers
// neither. hashicorp/raft grants any candidate the vote of a node with an
// empty log and no configuration, so such a node could elect a candidate
// missing entries that the node's old incarnation helped commit, and the
// new leader would then truncate them on the other nodes: acknowledged
// commits lost. So a node that has to join (no Raft state, no bootstrap)
// refuses every vote and pre-vote until its Join has been accepted; the
// leader, for its part, removes the old incarnation of a rejoining id
// before it adds the new one (see Store.Join), so that no quorum counts
// the lost incarnation's acknowledgements and votes and the new one's
// together.
//
// The state "joining" is kept on disk, in the file joiningFile of the
// Raft directory, from the first start until Joined, so that a node that
// crashed after it received part of the log, but before its join was
// accepted, still refuses votes when it restarts, and joins again.
//
// The join is accepted when the leader answers it, or when the node has
// applied the metadata entry the leader's Join records for the node's
// incarnation, whichever comes first (Store.watchJoin): a node must not
// depend on an answer that a leader change can lose.

// joiningFile marks, in the Raft directory, a node whose join has not
// been accepted yet.
const joiningFile = "joining"

// voteGate is the Raft transport of a node that joins: it answers vote
// and pre-vote requests itself, with a refusal, until open is called, and
// hands every other RPC to Raft.
//
// It also shields Raft from a stale snapshot, for as long as the process
// runs. When the leader replaces a rejoining node's old incarnation
// (RemoveServer, then AddVoter of the same id and address), the old
// replication goroutine makes a last best-effort pass while the new one
// starts, and the two may send this node snapshots out of order.
// hashicorp/raft v1.7.3 installs a snapshot older than what it has
// already applied and compacted, then panics ("log not found") on the
// next append (hashicorp/raft#697). A snapshot at or below this node's
// applied index holds nothing it lacks: the gate drains it and answers
// success without installing it, as the Raft paper's InstallSnapshot rule
// 6 does for a snapshot whose last entry the follower has.
type voteGate struct {
	*guardedTransport
	raft   atomic.Pointer[progressOf] // set once Raft runs
	rpcs   chan raft.RPC
	header raft.RPCHeader
	logger *slog.Logger

	opened   atomic.Bool
	openOnce sync.Once
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	refused    atomic.Uint64
	lastLogged atomic.Int64 // unix nanoseconds of the last refusal logged
}

func newVoteGate(t *guardedTransport, nodeID string, logger *slog.Logger) *voteGate {
	g := &voteGate{
		guardedTransport: t,
		rpcs:             make(chan raft.RPC),
		header: raft.RPCHeader{
			ProtocolVersion: raft.ProtocolVersionMax,
			ID:              []byte(nodeID),
			Addr:            []byte(t.LocalAddr()),
		},
		logger: logger,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go g.run()
	return g
}

// Consumer is what Raft reads its incoming RPCs from.
func (g *voteGate) Consumer() <-chan raft.RPC { return g.rpcs }

// open lets votes through from now on.
func (g *voteGate) open() {
	g.openOnce.Do(func() {
		g.opened.Store(true)
		g.logger.Info("joined the cluster: this node votes from now on", "votes_refused_while_joining", g.refused.Load())
	})
}

// close stops handing RPCs to Raft; call it after Raft has shut down and
// before the transport closes.
func (g *voteGate) close() {
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
}

func (g *voteGate) run() {
	defer close(g.done)
	in := g.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-g.stop:
			return
		}
		if !g.opened.Load() && g.refuse(rpc) {
			continue
		}
		if g.staleSnapshot(rpc) {
			continue
		}
		select {
		case g.rpcs <- rpc:
		case <-g.stop:
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
	}
}

// refuse answers rpc with a refusal when it asks for a vote or a
// pre-vote, and reports whether it did. The answer carries the request's
// own term, so the candidate counts a refusal and changes nothing else.
func (g *voteGate) refuse(rpc raft.RPC) bool {
	var candidate []byte
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		candidate = req.ID
		rpc.Respond(&raft.RequestVoteResponse{RPCHeader: g.header, Term: req.Term, Granted: false}, nil)
	case *raft.RequestPreVoteRequest:
		candidate = req.ID
		rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: g.header, Term: req.Term, Granted: false}, nil)
	default:
		return false
	}
	n := g.refused.Add(1)
	// One line per few seconds: a candidate asks again every election
	// timeout.
	now := time.Now().UnixNano()
	if last := g.lastLogged.Load(); now-last >= int64(5*time.Second) && g.lastLogged.CompareAndSwap(last, now) {
		g.logger.Info("refused a vote: this node has not joined the cluster yet (its join has not been accepted)",
			"candidate", string(candidate), "votes_refused", n)
	}
	return true
}

// progress is what the gate reads of Raft: *raft.Raft, or a test's stand-in.
type progress interface {
	AppliedIndex() uint64
	CurrentTerm() uint64
}

// progressOf holds a progress in an atomic.Pointer.
type progressOf struct{ progress }

// follow makes the gate judge snapshots against p.
func (g *voteGate) follow(p progress) { g.raft.Store(&progressOf{p}) }

// staleSnapshot answers rpc itself when it installs a snapshot at or
// below the index Raft has applied here, and reports whether it did.
func (g *voteGate) staleSnapshot(rpc raft.RPC) bool {
	req, ok := rpc.Command.(*raft.InstallSnapshotRequest)
	if !ok {
		return false
	}
	r := g.raft.Load()
	if r == nil {
		return false
	}
	// A request from a stale leader goes to Raft, which answers it with
	// the newer term before it looks at the snapshot.
	applied := r.AppliedIndex()
	if req.LastLogIndex > applied || req.Term < r.CurrentTerm() {
		return false
	}
	// The snapshot's bytes follow the request on the connection: read them
	// off, or the next request would be decoded from the middle of them.
	if rpc.Reader != nil {
		if _, err := io.Copy(io.Discard, rpc.Reader); err != nil {
			rpc.Respond(nil, fmt.Errorf("raftstore: drain a stale snapshot: %w", err))
			return true
		}
	}
	rpc.Respond(&raft.InstallSnapshotResponse{RPCHeader: g.header, Term: req.Term, Success: true}, nil)
	g.logger.Info("ignored a snapshot older than this node's applied state (a replication stream of the leader's, replaced when this node rejoined, sent it late)",
		"snapshot_index", req.LastLogIndex, "applied_index", applied)
	return true
}

// joiningNote is the first line of joiningFile, for whoever reads it;
// the second is the node's incarnation (incarnationPrefix and 32 hex
// digits).
const (
	joiningNote       = "this node's join has not been accepted yet; it refuses votes until then\n"
	incarnationPrefix = "incarnation "
)

// markJoining records in raftDir that this node must join before it
// votes, under a new random incarnation, and returns the incarnation.
//
// The incarnation tells this disk's life in the cluster from any other:
// the leader records it in the cluster metadata before it adds the node
// as a voter (Store.Join), so the node that reads its own incarnation
// back from its log knows its join was accepted, even if the answer to
// its Join was lost (see watchJoin). A node that lost its disk makes a
// new one; an entry recorded for its old incarnation does not count.
func markJoining(raftDir string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("raftstore: incarnation: %w", err)
	}
	inc := hex.EncodeToString(b[:])
	if err := writeFileSync(filepath.Join(raftDir, joiningFile), []byte(joiningNote+incarnationPrefix+inc+"\n")); err != nil {
		return "", fmt.Errorf("raftstore: mark the node as joining: %w", err)
	}
	return inc, nil
}

// joiningIncarnation returns the incarnation joiningFile records. A mark
// written before incarnations existed is given one.
func joiningIncarnation(raftDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(raftDir, joiningFile))
	if err != nil {
		return "", fmt.Errorf("raftstore: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if inc, ok := strings.CutPrefix(strings.TrimSpace(line), incarnationPrefix); ok && inc != "" {
			return inc, nil
		}
	}
	return markJoining(raftDir)
}

// isJoining reports whether raftDir marks a node whose join has not been
// accepted yet.
func isJoining(raftDir string) (bool, error) {
	_, err := os.Stat(filepath.Join(raftDir, joiningFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("raftstore: %w", err)
	}
}

// clearJoining removes the mark, durably.
func clearJoining(raftDir string) error {
	if err := os.Remove(filepath.Join(raftDir, joiningFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("raftstore: %w", err)
	}
	return syncDir(raftDir)
}

// writeFileSync writes a new file durably: its contents, then its
// directory entry.
func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}
