package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
)

// Join timing: one attempt may wait for the leader to add this node as a
// voter, which replicates the configuration to it; rounds over all the
// Join addresses are spaced by an exponential backoff.
const (
	joinAttemptTimeout = 30 * time.Second
	joinBackoffMin     = 100 * time.Millisecond
	joinBackoffMax     = 2 * time.Second
	catchUpPoll        = 20 * time.Millisecond
	// clusterCheckTimeout bounds the question a restarting member, or a
	// node about to join, asks its Join addresses: which cluster they
	// serve.
	clusterCheckTimeout = 2 * time.Second
)

// joinIfNew asks the cluster at Config.Join to add this node when the
// store needs a join: it has no Raft state and did not bootstrap, or an
// earlier join never completed. Then it tells the store it may vote, and
// waits until this node has applied its own membership, so that it serves
// nothing older than the moment it joined. A node that is a member
// already ignores Join, and Raft brings it up to date.
func (d *Daemon) joinIfNew(ctx context.Context, s *raftstore.Store) error {
	if !s.NeedsJoin() {
		st := s.Status()
		from := ""
		if r, ok, err := s.RestoredFrom(); err == nil && ok {
			from = r.ClusterID
		}
		if len(d.cfg.Join) > 0 {
			d.logger.Info("the data dir has raft state: already a member; ignoring join addresses",
				"join", strings.Join(d.cfg.Join, ","), "cluster_id", st.ClusterID)
			return d.checkSameCluster(ctx, st.ClusterID, from)
		}
		return d.checkCheckpointMembers(ctx, s, st.ClusterID, from)
	}
	if len(d.cfg.Join) == 0 {
		return fmt.Errorf("daemon: the node in %s has to join a cluster (its data dir has no Raft state and --bootstrap is off, or an earlier join did not complete): give --join with the address of a member", d.cfg.DataDir)
	}
	if host, _, err := net.SplitHostPort(d.AdvertiseGRPCAddr()); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			d.logger.Warn("the advertised gRPC address listens on every interface; other nodes cannot dial it; set the advertised gRPC address",
				"grpc_addr", d.AdvertiseGRPCAddr())
		}
	}
	req := &statedv1.JoinRequest{
		NodeId:      s.NodeID(),
		RaftAddr:    s.RaftAddr(),
		GrpcAddr:    d.AdvertiseGRPCAddr(),
		ClusterId:   s.ClusterID(),
		Incarnation: s.Incarnation(),
	}
	via, err := d.join(ctx, req, s.ExpectClusterID)
	if err != nil {
		return err
	}
	if err := s.Joined(); err != nil {
		return fmt.Errorf("daemon: joined via %s: %w", via, err)
	}
	d.logger.Info("joined the cluster; catching up", "via", via)
	if err := waitMember(ctx, s, req.GetGrpcAddr()); err != nil {
		return fmt.Errorf("daemon: joined via %s, but did not catch up with the leader: %w", via, err)
	}
	return nil
}

// checkSameCluster refuses to start a member whose data belongs to
// another cluster than the one its Join addresses serve, or that its
// cluster's leader no longer lists (it was removed: Raft would wait for a
// leader forever, since no leader replicates to a node it removed). It
// asks every address once, briefly and at the same time (members that
// restart together accept connections and answer nothing until they
// serve); addresses that do not answer are skipped, since a restarting
// member must not depend on them. An address
// that serves the cluster this one was restored from (restoredFrom) is
// not this node's to refuse: that node's data dir is from before the
// restore, and it is told to stop when it reaches this cluster's Raft
// port (raftstore.ErrSuperseded).
func (d *Daemon) checkSameCluster(ctx context.Context, own, restoredFrom string) error {
	if own == "" {
		return nil
	}
	addrs := d.joinAddrs()
	resps := d.membersOfAll(ctx, addrs, clusterCheckTimeout)
	for i, addr := range addrs {
		resp := resps[i]
		if resp == nil {
			continue
		}
		if id := resp.GetClusterId(); id != "" && id == restoredFrom {
			if err := d.waitSupersededStops(ctx, "the join address", addr, own, restoredFrom); err != nil {
				return err
			}
			continue
		}
		if resp.GetClusterId() != "" && resp.GetClusterId() != own {
			return fmt.Errorf("daemon: the data dir %s belongs to cluster %s, but the join address %s serves cluster %s: %w",
				d.cfg.DataDir, own, addr, resp.GetClusterId(), raftstore.ErrClusterMismatch)
		}
		if resp.GetClusterId() == own && !listsMember(resp, d.cfg.NodeID) {
			if err := d.checkLeaderLists(ctx, own, resp); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkCheckpointMembers does, for a restored node started without
// --join, what checkSameCluster does with the join addresses for the
// cluster it was restored from (restoredFrom): when this node serves at
// an address a member of that cluster had in the checkpoint (it was
// restored in place of that member), it asks the checkpoint's other
// members' addresses which cluster they serve, and waits for one that
// still serves restoredFrom to stop (waitSupersededStops), refusing
// itself if it goes on. Without this, a checkpoint restored onto one
// member of a running cluster and started without --join served a second
// cluster of the same lineage on that member's address. A restored node
// at addresses of its own (a copy of the cluster elsewhere) asks nothing,
// and neither does one that was not restored. An address that serves any
// other cluster, this one included, or does not answer, is skipped.
func (d *Daemon) checkCheckpointMembers(ctx context.Context, s *raftstore.Store, own, restoredFrom string) error {
	if own == "" || restoredFrom == "" {
		return nil
	}
	members, err := s.RestoredMembers()
	if err != nil {
		return fmt.Errorf("daemon: read the members of the checkpoint this node was restored from: %w", err)
	}
	mine := func(m command.Member) bool {
		return m.GRPCAddr == d.AdvertiseGRPCAddr() || m.GRPCAddr == d.TCPAddr() || m.RaftAddr == s.RaftAddr()
	}
	if !slices.ContainsFunc(members, mine) {
		return nil
	}
	var addrs []string
	for _, m := range members {
		if !mine(m) && m.GRPCAddr != "" && !slices.Contains(addrs, m.GRPCAddr) {
			addrs = append(addrs, m.GRPCAddr)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	d.logger.Info("restored in place of a member of the checkpoint's cluster and started without --join: asking the checkpoint's other members whether that cluster still runs",
		"cluster_id", own, "restored_from", restoredFrom, "addrs", strings.Join(addrs, ","))
	resps := d.membersOfAll(ctx, addrs, clusterCheckTimeout)
	for i, addr := range addrs {
		if resps[i] != nil && resps[i].GetClusterId() == restoredFrom {
			if err := d.waitSupersededStops(ctx, "the checkpoint's member address", addr, own, restoredFrom); err != nil {
				return err
			}
		}
	}
	return nil
}

// supersededWait is how long a restored node waits for a join address
// that serves the cluster it was restored from to stop.
const supersededWait = 20 * time.Second

// waitSupersededStops waits until addr (what names it: a join address,
// or a checkpoint member's), which serves the cluster this one
// was restored from, stops answering for it. A node started on its data
// dir from before the restore (a rollback's nodes, started together with
// the restored one) is told by this node's Raft port that it was
// replaced, and stops within seconds (raftstore.SupersedeGrace); one
// that goes on is a member of a cluster still running, whose checkpoint
// was restored onto this node's address by mistake: this node refuses
// itself, rather than run a second cluster on the same addresses.
func (d *Daemon) waitSupersededStops(ctx context.Context, what, addr, own, restoredFrom string) error {
	d.logger.Warn(what+" serves the cluster this one was restored from: waiting for that node to stop (a node on a data dir from before the restore is told to when it reaches this node)",
		"addr", addr, "its_cluster", restoredFrom, "cluster", own, "wait", supersededWait)
	deadline := time.Now().Add(supersededWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		resp, err := d.membersAt(ctx, addr, clusterCheckTimeout)
		if err != nil || resp.GetClusterId() != restoredFrom {
			d.logger.Info("the node of the cluster this one was restored from stopped", "addr", addr)
			return nil
		}
	}
	return fmt.Errorf("daemon: %s %s still serves cluster %s, which this node's cluster %s was restored from, after %s: that cluster is running, and this node would be a second cluster on its addresses; "+
		"stop that cluster's nodes and wipe their data dirs (a rollback), or wipe the data dir %s and start this node with --join to rejoin the running cluster: %w",
		what, addr, restoredFrom, own, supersededWait, d.cfg.DataDir, raftstore.ErrClusterMismatch)
}

// checkLeaderLists asks the leader that resp names whether this node is
// a member, and refuses to start a node its leader does not list. A
// follower's answer alone is not enough: one that lags may not have the
// entry that added this node yet.
func (d *Daemon) checkLeaderLists(ctx context.Context, own string, resp *statedv1.MembersResponse) error {
	var leaderAddr string
	for _, m := range resp.GetMembers() {
		if m.GetNodeId() == resp.GetLeaderId() {
			leaderAddr = m.GetGrpcAddr()
		}
	}
	if leaderAddr == "" {
		return nil
	}
	lresp, err := d.membersAt(ctx, leaderAddr, clusterCheckTimeout)
	if err != nil || lresp.GetClusterId() != own || lresp.GetLeaderId() != resp.GetLeaderId() || listsMember(lresp, d.cfg.NodeID) {
		return nil
	}
	return fmt.Errorf("daemon: node %q is not a member of cluster %s: its leader %s (%s) does not list it, so it was removed, and no member sends it anything; "+
		"to bring it back, wipe the data dir %s and start it with --join, as a new member: %w",
		d.cfg.NodeID, own, lresp.GetLeaderId(), leaderAddr, d.cfg.DataDir, raftstore.ErrUnknownMember)
}

// membersOfAll asks every address in addrs for its members at once, each
// waiting at most timeout; an address that did not answer has nil.
func (d *Daemon) membersOfAll(ctx context.Context, addrs []string, timeout time.Duration) []*statedv1.MembersResponse {
	resps := make([]*statedv1.MembersResponse, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			if resp, err := d.membersAt(ctx, addr, timeout); err == nil {
				resps[i] = resp
			}
		})
	}
	wg.Wait()
	return resps
}

// membersAt asks the stated node at addr for its members, waiting at most
// timeout for the answer.
func (d *Daemon) membersAt(ctx context.Context, addr string, timeout time.Duration) (*statedv1.MembersResponse, error) {
	cc, err := dialNode(addr, d.cfg.MaxMessageBytes, d.tls.peerCreds(addr))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return statedv1.NewClusterClient(cc).Members(d.joinTokenContext(ctx), &statedv1.MembersRequest{})
}

// listsMember reports whether resp lists the node id.
func listsMember(resp *statedv1.MembersResponse, id string) bool {
	return slices.ContainsFunc(resp.GetMembers(), func(m *statedv1.Member) bool { return m.GetNodeId() == id })
}

// bootstrapProbeTimeout bounds the question the bootstrap node asks each
// of the other Join addresses before it decides to bootstrap: is there a
// cluster already? An address that does not resolve or refuses the
// connection answers at once; one that accepts and says nothing is given
// this long.
const bootstrapProbeTimeout = 5 * time.Second

// clusterAnswers asks the other Join addresses, in parallel, whether they
// are members of a cluster. The bootstrap node (Config.BootstrapNodeID)
// bootstraps only when none is: a cluster that exists already is joined,
// so the bootstrap node that lost its disk rejoins its cluster instead of
// starting a second one. It is asked only when the data dir has no Raft
// state (raftstore.Config.BootstrapIf).
func (d *Daemon) clusterAnswers(ctx context.Context) bool {
	addrs := d.joinAddrs()
	type answer struct {
		addr, id string
		err      error
	}
	answers := make(chan answer, len(addrs))
	for _, addr := range addrs {
		go func() {
			id, err := d.clusterAt(ctx, addr, bootstrapProbeTimeout)
			answers <- answer{addr, id, err}
		}()
	}
	for range addrs {
		a := <-answers
		if a.id != "" {
			d.logger.Info("bootstrap node: a join address is a member of a cluster; joining it rather than bootstrapping", "cluster_id", a.id)
			return true
		}
		// Only a serving node answers, and a node serves once it is a
		// member: one that refuses this node's token (no --join-token,
		// or one it does not grant) is a member whose cluster this node
		// cannot see. Joining reports the refusal; bootstrapping would
		// start a second cluster beside it.
		if c := status.Code(a.err); c == codes.Unauthenticated || c == codes.PermissionDenied {
			d.logger.Warn("bootstrap node: a join address refused this node's token, so a cluster serves there; joining it rather than bootstrapping (set --join-token)",
				"addr", a.addr, "error", a.err)
			return true
		}
	}
	d.logger.Info("bootstrap node: no other join address is a member of a cluster; bootstrapping",
		"join", strings.Join(addrs, ","))
	return false
}

// clusterAt returns the id of the cluster the stated node at addr is a
// member of, or "" when it does not answer as one within timeout, with
// the error of a call that failed.
func (d *Daemon) clusterAt(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	resp, err := d.membersAt(ctx, addr, timeout)
	if err != nil || len(resp.GetMembers()) == 0 {
		return "", err
	}
	return resp.GetClusterId(), nil
}

// joinAddrs is Config.Join without duplicates and without this node's own
// addresses (a list given to every member names each of them).
func (d *Daemon) joinAddrs() []string {
	var addrs []string
	for _, a := range d.cfg.Join {
		if !slices.Contains(addrs, a) && a != d.AdvertiseGRPCAddr() && a != d.TCPAddr() {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// join sends req to the Join addresses in turn, in rounds, until one
// accepts it, the cluster refuses it, or ctx ends. It returns the address
// that accepted. Before each Join it tells expect the cluster id the
// address serves, so that this node's Raft connections refuse other
// clusters before the leader adds it (raftstore.Store.ExpectClusterID).
func (d *Daemon) join(ctx context.Context, req *statedv1.JoinRequest, expect func(clusterID string)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.JoinTimeout)
	defer cancel()
	addrs := d.joinAddrs()
	if len(addrs) == 0 {
		return "", fmt.Errorf("daemon: join: the join addresses %s name only this node; give the address of a running member",
			strings.Join(d.cfg.Join, ", "))
	}
	ids, err := d.checkOneCluster(ctx, addrs)
	if err != nil {
		return "", err
	}
	// Members first: an address that did not answer may be another node
	// joining too (every node of a cluster started afresh on empty data
	// dirs but the restored one), which accepts the connection and
	// answers nothing until it serves, holding a Join for its whole
	// attempt timeout.
	addrs = membersFirst(addrs, ids)
	notStated := make(map[string]bool) // answered gRPC without the Cluster service
	var last error
	backoff := joinBackoffMin
	for {
		for _, addr := range addrs {
			if notStated[addr] {
				continue
			}
			err := d.joinVia(ctx, addr, req, expect)
			switch code := status.Code(err); {
			case err == nil:
				return addr, nil
			case code == codes.Unimplemented:
				notStated[addr] = true
				last = fmt.Errorf("%s serves gRPC but is not a stated node (it has no %s service)", addr, statedv1.Cluster_ServiceDesc.ServiceName)
			case code == codes.FailedPrecondition, code == codes.InvalidArgument, code == codes.AlreadyExists, code == codes.NotFound:
				return "", fmt.Errorf("daemon: join via %s: the cluster refused node %q: %s", addr, req.GetNodeId(), status.Convert(err).Message())
			default:
				last = fmt.Errorf("%s: %w", addr, err)
			}
		}
		if len(notStated) == len(addrs) {
			return "", fmt.Errorf("daemon: join: none of the join addresses is a stated node: %w", last)
		}
		d.logger.Warn("join: no member accepted yet; retrying", "join", strings.Join(addrs, ","), "last_error", last, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("daemon: join: no stated node at %s accepted this node within the join timeout (is each a running stated node, reachable on its gRPC address?); last error: %v: %w",
				strings.Join(addrs, ", "), last, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// checkOneCluster asks the join addresses, in parallel and briefly, which
// cluster each serves, and refuses a list that names more than one: the
// node would join whichever answered first, and learn of the mistake only
// at its next start (checkSameCluster), a member of the wrong cluster.
// Addresses that do not answer as members are skipped.
// It returns each address's cluster id, "" for those that did not answer.
func (d *Daemon) checkOneCluster(ctx context.Context, addrs []string) ([]string, error) {
	ids := make([]string, len(addrs))
	for i, resp := range d.membersOfAll(ctx, addrs, clusterCheckTimeout) {
		if len(resp.GetMembers()) > 0 { // as clusterAt: a member answered
			ids[i] = resp.GetClusterId()
		}
	}
	first := -1
	for i, id := range ids {
		switch {
		case id == "":
		case first < 0:
			first = i
		case id != ids[first]:
			return nil, fmt.Errorf("daemon: join: the join addresses name more than one cluster: %s serves cluster %s, %s serves cluster %s; give the addresses of one cluster's members",
				addrs[first], ids[first], addrs[i], id)
		}
	}
	return ids, nil
}

// membersFirst orders addrs with those that answered as members of a
// cluster (ids[i] != "") first, each group in its given order.
func membersFirst(addrs, ids []string) []string {
	out := make([]string, 0, len(addrs))
	for i, a := range addrs {
		if ids[i] != "" {
			out = append(out, a)
		}
	}
	for i, a := range addrs {
		if ids[i] == "" {
			out = append(out, a)
		}
	}
	return out
}

// joinVia asks addr which cluster it serves, passes the answer to expect,
// and sends it one Join request.
func (d *Daemon) joinVia(ctx context.Context, addr string, req *statedv1.JoinRequest, expect func(clusterID string)) error {
	cc, err := dialNode(addr, d.cfg.MaxMessageBytes, d.tls.peerCreds(addr))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, joinAttemptTimeout)
	defer cancel()
	client := statedv1.NewClusterClient(cc)
	if m, err := client.Members(d.joinTokenContext(ctx), &statedv1.MembersRequest{}); err == nil {
		expect(m.GetClusterId())
	}
	_, err = client.Join(d.joinTokenContext(ctx), req)
	return err
}

// waitMember waits until this node knows a leader and has applied the
// cluster metadata entry that recorded its own gRPC address, which the
// leader appends after adding it: from then on its state includes
// everything committed before it joined.
func waitMember(ctx context.Context, s *raftstore.Store, grpcAddr string) error {
	t := time.NewTicker(catchUpPoll)
	defer t.Stop()
	for {
		if id, _ := s.Leader(); id != "" {
			members, _, err := s.Members()
			if err != nil && !errors.Is(err, raftstore.ErrClosed) {
				return err
			}
			for _, m := range members {
				if m.ID == s.NodeID() && m.GRPCAddr == grpcAddr {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
