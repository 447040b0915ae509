package raftstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Member is a node of the cluster: its Raft configuration entry and the
// gRPC address it advertised.
type Member struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	Voter    bool
	// Incarnation is the joining node's Store.Incarnation, given to Join.
	Incarnation string
}

// Status is the Raft state of this node.
type Status struct {
	NodeID         string
	ClusterID      string
	Role           string // "leader", "follower", "candidate" or "shutdown"
	Term           uint64
	LastLogIndex   uint64
	CommitIndex    uint64
	AppliedIndex   uint64
	LeaderID       string
	LeaderGRPCAddr string
}

// Join adds m to the cluster as a voter and records its addresses. It runs
// on the leader only, and returns the cluster id.
//
// Only a node without Raft state asks to join (see NeedsJoin), so an id
// that is already a member at the same Raft address is a node that lost
// its data dir and comes back empty, or one whose earlier join attempt
// the leader accepted without its answer arriving. Its old incarnation's
// log and votes are gone; counting the new one in its place would let a
// quorum mix the two and elect a leader missing acknowledged commits. So
// Join first removes the old incarnation, which commits on the other
// members, and then adds the new one: like etcd's member remove and add,
// in one call. With a majority of the other members down the removal
// cannot commit, and Join waits (up to ctx) rather than risk the log.
//
// An id that is a member at another Raft address, or a Raft address used
// by another member, is ErrMemberConflict, as is this leader's own id; a
// clusterID other than this cluster's is ErrClusterMismatch, and a Raft
// address this leader cannot dial ErrUnreachable. The gRPC
// address is recorded after the node is added, and a joining node may
// wait for that record to know it has caught up.
//
// Joins and removals on this leader run one at a time: the checks above
// read the configuration, and two joins of one id checked together would
// both pass (Raft's AddVoter of an id that is a voter moves it to the new
// address), leaving two nodes that each take themselves for the member.
func (s *Store) Join(ctx context.Context, m Member, clusterID string) (string, error) {
	if s.raft.State() != raft.Leader {
		return "", ErrNotLeader
	}
	unlock, err := s.lockMembership(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	if m.ID == "" || m.RaftAddr == "" {
		return "", fmt.Errorf("%w: a joining node needs an id and a raft address", ErrMemberConflict)
	}
	if m.ID == s.cfg.NodeID {
		return "", fmt.Errorf("%w: node id %q is the leader's own; two nodes cannot share an id", ErrMemberConflict, m.ID)
	}
	own := s.ClusterID()
	if clusterID != "" && own != "" && clusterID != own {
		return "", fmt.Errorf("%w: node %q has data of cluster %s, this is cluster %s", ErrClusterMismatch, m.ID, clusterID, own)
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return "", raftError(err)
	}
	present := false
	for _, srv := range cf.Configuration().Servers {
		switch {
		case string(srv.ID) == m.ID && string(srv.Address) != m.RaftAddr:
			return "", fmt.Errorf("%w: node id %q is already a member at %s (if that node is gone for good, remove it first: stated cluster remove %s)",
				ErrMemberConflict, m.ID, srv.Address, m.ID)
		case string(srv.ID) != m.ID && string(srv.Address) == m.RaftAddr:
			return "", fmt.Errorf("%w: raft address %s is already used by node %q (if that node is gone for good, remove it first: stated cluster remove %s)",
				ErrMemberConflict, m.RaftAddr, srv.ID, srv.ID)
		case string(srv.ID) == m.ID:
			present = true
		}
	}
	meta, err := s.fsm.Members()
	if err != nil {
		return "", err
	}
	sameIncarnation := false
	for _, o := range meta {
		switch {
		case o.ID == m.ID:
			sameIncarnation = m.Incarnation != "" && o.Incarnation == m.Incarnation
		case m.GRPCAddr != "" && o.GRPCAddr == m.GRPCAddr && inConfiguration(cf.Configuration(), o.ID):
			return "", fmt.Errorf("%w: grpc address %s is already used by node %q", ErrMemberConflict, m.GRPCAddr, o.ID)
		}
	}
	// A member kept in place (below) is a voter already: refusing its
	// retry would change nothing but the answer it waits for.
	if !(present && sameIncarnation) {
		if err := s.checkReachable(ctx, m); err != nil {
			return "", err
		}
	}
	switch {
	case present && sameIncarnation:
		// Its data dir is the one it joined with: what it acknowledged
		// and voted as a member still holds. Replacing it would only
		// shrink the configuration, which a down member could block.
		s.logger.Info("a member asks to join again with the incarnation it joined under (the answer to its join was lost): keeping it",
			"node", m.ID, "incarnation", m.Incarnation)
	case present:
		s.logger.Warn("a member asks to join again without its Raft state (a lost or wiped data dir, or a retried join): removing its old incarnation before adding it back",
			"node", m.ID, "raft_addr", m.RaftAddr)
		if err := s.untilClosed(ctx, s.raft.RemoveServer(raft.ServerID(m.ID), 0, s.timeout(ctx))); err != nil {
			return "", raftError(err)
		}
	}
	// The member's metadata, with its incarnation, goes before the
	// configuration change: once the node has applied it, it knows it was
	// accepted and votes (see watchJoin), so a leader lost between the
	// two leaves no voter that refuses every vote.
	if _, err := s.propose(ctx, &command.Command{Type: command.TypeSetMember, Member: &command.Member{
		ID: m.ID, RaftAddr: m.RaftAddr, GRPCAddr: m.GRPCAddr, Incarnation: m.Incarnation,
	}}); err != nil {
		return "", err
	}
	if err := s.untilClosed(ctx, s.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), 0, s.timeout(ctx))); err != nil {
		return "", raftError(err)
	}
	s.logger.Info("added a voter", "node", m.ID, "raft_addr", m.RaftAddr, "grpc_addr", m.GRPCAddr, "incarnation", m.Incarnation)
	return s.ClusterID(), nil
}

// joinDialTimeout bounds Join's dial of the joining node's Raft address.
const joinDialTimeout = 5 * time.Second

// checkReachable refuses a joining node whose Raft address this leader
// cannot reach, before Join changes anything. Added as a voter, such a
// node would count toward every majority without ever acknowledging an
// entry: the one node of a new cluster that adds it can commit nothing
// more, nor be elected again, and no Remove can undo it.
func (s *Store) checkReachable(ctx context.Context, m Member) error {
	conn, err := s.stream.Dial(raft.ServerAddress(m.RaftAddr), min(joinDialTimeout, s.timeout(ctx)))
	switch {
	case errors.Is(err, ErrOtherCluster):
		return fmt.Errorf("%w: the raft address %s of node %q reaches a node of another cluster: %v", ErrClusterMismatch, m.RaftAddr, m.ID, err)
	case err != nil:
		return fmt.Errorf("%w: node %q at %s: %v; check its --raft-addr and --advertise-raft-addr, and that the leader can reach it", ErrUnreachable, m.ID, m.RaftAddr, err)
	}
	conn.Close()
	return nil
}

// inConfiguration reports whether id is a server of cf.
func inConfiguration(cf raft.Configuration, id string) bool {
	for _, srv := range cf.Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// lockMembership waits, up to ctx, until no other Join or Remove runs
// on this store, and returns the function that lets the next one run.
func (s *Store) lockMembership(ctx context.Context) (unlock func(), err error) {
	select {
	case s.membership <- struct{}{}:
		return func() { <-s.membership }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// Remove removes a member from the cluster. It runs on the leader only,
// and refuses to remove the only voter (ErrLastVoter). A removal that
// fails leaves the member as it was, addresses included, unless it is
// this leader's own and its leadership was lost on the way (the next
// leadership records them again).
func (s *Store) Remove(ctx context.Context, id string) error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	unlock, err := s.lockMembership(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return raftError(err)
	}
	if !inConfiguration(cf.Configuration(), id) {
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	voters := 0
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != id {
			voters++
		}
	}
	if voters == 0 {
		return fmt.Errorf("%w: %q is the only voter of the cluster; add the member that replaces it first", ErrLastVoter, id)
	}
	if id != s.cfg.NodeID {
		// The configuration first: a member whose removal fails keeps
		// its addresses. Its record outlives it if the second step
		// fails, which nothing reads for a node that is not a member
		// (Members and Leader look up members of the configuration,
		// Join's address check skips non-members, a Join of the id
		// records it anew).
		if err := s.untilClosed(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, s.timeout(ctx))); err != nil {
			return raftError(err)
		}
		if _, err := s.propose(ctx, &command.Command{Type: command.TypeRemoveMember, Member: &command.Member{ID: id}}); err != nil {
			s.logger.Warn("removed a member from the configuration; its addresses stay in the cluster metadata, unread",
				"node", id, "error", err)
		}
		s.logger.Info("removed a member", "node", id)
		return nil
	}
	// This leader's own metadata first: once it has removed itself it
	// can propose nothing more.
	if _, err := s.propose(ctx, &command.Command{Type: command.TypeRemoveMember, Member: &command.Member{ID: id}}); err != nil {
		return err
	}
	if err := s.untilClosed(ctx, s.raft.RemoveServer(raft.ServerID(id), 0, s.timeout(ctx))); err != nil {
		// Still a member: record its addresses again, or the followers
		// could not forward to it while it leads.
		if _, err2 := s.propose(ctx, &command.Command{Type: command.TypeSetMember, Member: &command.Member{
			ID: s.cfg.NodeID, RaftAddr: s.RaftAddr(), GRPCAddr: s.cfg.GRPCAddr,
		}}); err2 != nil {
			s.logger.Warn("the leader's removal of itself failed, and its addresses could not be recorded again; its next leadership records them",
				"node", id, "error", err2)
		}
		return raftError(err)
	}
	s.logger.Info("removed a member", "node", id)
	return nil
}

// Members returns the members of the Raft configuration, by id order of
// the configuration, with the gRPC addresses from the cluster metadata,
// and the id of the leader ("" when unknown).
func (s *Store) Members() ([]Member, string, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, "", raftError(err)
	}
	grpcAddr, err := s.grpcAddrs()
	if err != nil {
		return nil, "", err
	}
	var out []Member
	for _, srv := range cf.Configuration().Servers {
		out = append(out, Member{
			ID:       string(srv.ID),
			RaftAddr: string(srv.Address),
			GRPCAddr: grpcAddr[string(srv.ID)],
			Voter:    srv.Suffrage == raft.Voter,
		})
	}
	_, leader := s.raft.LeaderWithID()
	return out, string(leader), nil
}

func (s *Store) grpcAddrs() (map[string]string, error) {
	meta, err := s.fsm.Members()
	if err != nil {
		return nil, s.waitError(err)
	}
	m := make(map[string]string, len(meta))
	for _, o := range meta {
		m[o.ID] = o.GRPCAddr
	}
	return m, nil
}

// Leader returns the leader's id and advertised gRPC address; both are ""
// while no leader is known, and the address is "" until the leader's
// metadata is applied here.
func (s *Store) Leader() (id, grpcAddr string) {
	_, lid := s.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	addrs, err := s.grpcAddrs()
	if err != nil {
		return string(lid), ""
	}
	return string(lid), addrs[string(lid)]
}

// ClusterID returns the cluster's id as applied here, or "" before it is.
// Once recorded it never changes for this state (a Raft snapshot comes
// from the same cluster, a restore runs before the node starts), so it
// is read from the state machine only until it is known: forwarding
// checks it on every call.
func (s *Store) ClusterID() string { return onceKnown(&s.clusterID, s.fsm.ClusterID) }

// onceKnown returns *p, or else what read returns, which it keeps in p
// once it is not empty: a value that never changes once recorded.
func onceKnown(p *atomic.Pointer[string], read func() (string, error)) string {
	if v := p.Load(); v != nil {
		return *v
	}
	v, _ := read()
	if v != "" {
		p.Store(&v)
	}
	return v
}

// Lineage returns the id of the line of clusters this cluster belongs to
// (fsm.FSM.Lineage): its own id unless it was restored from a checkpoint,
// else the lineage of the cluster the checkpoint came from; "" before the
// cluster id is applied here. Like ClusterID it never changes for this
// state, and is read from the state machine only until it is known: the
// gRPC server checks it on every call that carries a client's lineage.
func (s *Store) Lineage() string { return onceKnown(&s.lineage, s.fsm.Lineage) }

// peerClusterID is the cluster id this node's Raft connections present
// and expect (clusterlayer.go): the applied id, or before it is applied,
// the id this node chose when it bootstrapped a new cluster, which its
// first leader records, or on a node that is joining, the id of the
// cluster it joins (ExpectClusterID); "" before either is known.
func (s *Store) peerClusterID() string {
	if id := s.ClusterID(); id != "" {
		return id
	}
	if id := s.expectedClusterID.Load(); id != nil {
		return *id
	}
	return s.bootstrapClusterID
}

// ExpectClusterID tells a node that is joining which cluster it is
// joining (the answer of the member it sends its Join to), before the
// leader adds it: from then on its Raft connections present that id and
// refuse a node of another cluster, instead of accepting every node
// until it has applied its cluster's id. An empty id changes nothing.
func (s *Store) ExpectClusterID(id string) {
	if id != "" {
		s.expectedClusterID.Store(&id)
	}
}

// newClusterID is a new cluster's random id: 16 hex digits.
func newClusterID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Counts counts this node's bookkeeping and keyed state (see fsm.Counts:
// it scans the state, seconds per GB). Callers share scans: one that asks
// while a scan runs waits for that scan instead of starting another, so
// repeated or retried calls (a client's attempt timeout, scrapes, `stated
// status` in a loop) never pile scans up on a large state. A caller whose
// ctx ends stops waiting; the scan it started runs on for those that come
// after it, and stops when the store closes.
func (s *Store) Counts(ctx context.Context) (fsm.Counts, error) {
	s.countsMu.Lock()
	r := s.countsRun
	if r == nil {
		r = &countsRun{done: make(chan struct{})}
		s.countsRun = r
		go func() {
			countsScanHook()
			r.c, r.err = s.fsm.CountsContext(s.watchCtx)
			s.countsMu.Lock()
			s.countsRun = nil
			s.countsMu.Unlock()
			close(r.done)
		}()
	}
	r.callers++
	s.countsMu.Unlock()
	select {
	case <-r.done:
		if r.err != nil && s.watchCtx.Err() != nil {
			return fsm.Counts{}, ErrClosed
		}
		return r.c, s.waitError(r.err)
	case <-ctx.Done():
		return fsm.Counts{}, context.Cause(ctx)
	}
}

// countsScanHook runs as a scan of Counts starts; tests hold scans
// with it.
var countsScanHook = func() {}

// countsRun is a scan of Counts that callers wait for together.
type countsRun struct {
	done    chan struct{}
	callers int // calls that waited for it, guarded by Store.countsMu
	c       fsm.Counts
	err     error
}

// Status returns this node's Raft state.

func (s *Store) Status() Status {
	lid, laddr := s.Leader()
	role := "shutdown"
	switch s.raft.State() {
	case raft.Leader:
		role = "leader"
	case raft.Follower:
		role = "follower"
	case raft.Candidate:
		role = "candidate"
	}
	return Status{
		NodeID:         s.cfg.NodeID,
		ClusterID:      s.ClusterID(),
		Role:           role,
		Term:           s.raft.CurrentTerm(),
		LastLogIndex:   s.raft.LastIndex(),
		CommitIndex:    s.raft.CommitIndex(),
		AppliedIndex:   s.fsm.AppliedIndex(),
		LeaderID:       lid,
		LeaderGRPCAddr: laddr,
	}
}

// joinPoll is how often a joining node looks in its applied state for
// the acceptance of its join.
const joinPoll = 25 * time.Millisecond

// watchJoin opens the vote gate of a joining node once the node has
// applied the metadata entry that Store.Join records for its incarnation.
//
// The answer to a Join can be lost: the leader accepted the node (added
// it as a voter), then lost its leadership or its connection before it
// answered. The node then refuses votes until a Join is answered, and a
// Join needs a leader: the leader that added it, with two such nodes in a
// cluster of three, can never be elected again, since it needs one of
// their votes. So the node does not depend on the answer alone. Store.Join
// records the member with its incarnation after the old incarnation is
// removed and before the node is added; a node that has applied that
// entry knows it is committed, and so that its old incarnation is no
// longer a member: it may vote. Its Join is still answered when it asks
// again (a retry of the same incarnation keeps it in place).
func (s *Store) watchJoin() {
	defer close(s.joinDone)
	t := time.NewTicker(joinPoll)
	defer t.Stop()
	for s.NeedsJoin() {
		select {
		case <-s.watchCtx.Done():
			return
		case <-t.C:
		}
		members, err := s.fsm.Members()
		if err != nil {
			continue // closed, or between a snapshot's restore and its reopen
		}
		for _, m := range members {
			if m.ID != s.cfg.NodeID || m.Incarnation != s.incarnation {
				continue
			}
			if err := s.Joined(); err != nil {
				s.logger.Warn("this node's join is in its log, but the joining mark could not be cleared; it keeps refusing votes until its Join is answered",
					"error", err)
				return
			}
			s.logger.Info("this node's join is in its own log: accepted", "incarnation", s.incarnation)
			return
		}
	}
}

// watchLeadership runs for the life of the store. Each time this node
// becomes leader it applies the log (a barrier), then records a cluster id
// if the cluster has none (the one the bootstrapping node chose) and
// its own addresses if the metadata lacks or differs from them.
func (s *Store) watchLeadership() {
	defer close(s.watchDone)
	ch := s.raft.LeaderCh()
	for {
		select {
		case <-s.watchCtx.Done():
			return
		case leader := <-ch:
			if !leader {
				continue
			}
			if err := s.onLeadership(s.watchCtx); err != nil && s.watchCtx.Err() == nil {
				s.logger.Warn("recording cluster metadata after election", "error", err)
			}
		}
	}
}

func (s *Store) onLeadership(ctx context.Context) error {
	if _, err := s.ensureTermCommitted(ctx); err != nil {
		return err
	}
	if s.ClusterID() == "" {
		id := s.bootstrapClusterID
		if id == "" { // bootstrapped before this process: a cluster id of its own
			id = newClusterID()
		}
		if _, err := s.propose(ctx, &command.Command{Type: command.TypeSetClusterID, ClusterID: id}); err != nil {
			return err
		}
	}
	addrs, err := s.grpcAddrs()
	if err != nil {
		return err
	}
	if got, ok := addrs[s.cfg.NodeID]; ok && got == s.cfg.GRPCAddr {
		return nil
	}
	_, err = s.propose(ctx, &command.Command{Type: command.TypeSetMember, Member: &command.Member{
		ID: s.cfg.NodeID, RaftAddr: s.RaftAddr(), GRPCAddr: s.cfg.GRPCAddr,
	}})
	return err
}

// timeout is the store's apply timeout, shortened to ctx's deadline.
func (s *Store) timeout(ctx context.Context) time.Duration {
	t := s.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < t {
		t = max(time.Until(d), time.Millisecond)
	}
	return t
}
