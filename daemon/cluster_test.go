package daemon_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func stateClient(t *testing.T, d *daemon.Daemon) statedv1.StateClient {
	return statedv1.NewStateClient(dial(t, d.TCPAddr()))
}

func clusterClient(t *testing.T, d *daemon.Daemon) statedv1.ClusterClient {
	return statedv1.NewClusterClient(dial(t, d.TCPAddr()))
}

func putReq(key, value string) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
		Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte(key), Value: []byte(value),
	}}}
}

func getReq(key string, c statedv1.Consistency, minIndex uint64) *statedv1.GetRequest {
	return &statedv1.GetRequest{Namespace: "ns", Key: []byte(key), Kind: statedv1.Kind_KIND_VALUE,
		Read: &statedv1.ReadOptions{Consistency: c, MinIndex: minIndex}}
}

// memberIDs lists the node ids and addresses that d's Members reports.
func memberIDs(t *testing.T, d *daemon.Daemon) []string {
	t.Helper()
	resp, err := clusterClient(t, d).Members(testContext(t), &statedv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	var out []string
	for _, m := range resp.GetMembers() {
		out = append(out, fmt.Sprintf("%s@%s/%s", m.GetNodeId(), m.GetRaftAddr(), m.GetGrpcAddr()))
	}
	slices.Sort(out)
	return out
}

// eventually polls cond every 20ms until it returns nil or 15s pass.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 15s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJoinedNodesAreMembersWithTheirAdvertisedAddresses(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	var want []string
	for _, d := range nodes {
		want = append(want, fmt.Sprintf("%s@%s/%s", d.NodeID(), d.Store().RaftAddr(), d.TCPAddr()))
	}
	slices.Sort(want)
	for _, d := range nodes {
		eventually(t, "members of "+d.NodeID(), func() error {
			if got := memberIDs(t, d); !slices.Equal(got, want) {
				return fmt.Errorf("members = %v, want %v", got, want)
			}
			return nil
		})
	}
	st, err := clusterClient(t, nodes[2]).NodeStatus(testContext(t), &statedv1.NodeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetRole() != "follower" || st.GetLeaderId() != "node1" || st.GetLeaderGrpcAddr() != nodes[0].TCPAddr() || st.GetClusterId() == "" {
		t.Errorf("node3 status = %v", st)
	}
}

func TestCommitOnAFollowerIsForwardedAndReadableOnEveryNodeAtItsIndex(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	ctx := testContext(t)
	resp, err := stateClient(t, nodes[2]).Commit(ctx, putReq("k", "from-follower"))
	if err != nil {
		t.Fatalf("commit on a follower: %v", err)
	}
	for _, d := range nodes {
		got, err := stateClient(t, d).Get(ctx, getReq("k", statedv1.Consistency_CONSISTENCY_SESSION, resp.GetIndex()))
		if err != nil {
			t.Fatalf("session read on %s: %v", d.NodeID(), err)
		}
		if !got.GetFound() || string(got.GetValue()) != "from-follower" || got.GetAppliedIndex() < resp.GetIndex() {
			t.Errorf("session read on %s = %v, want the value at index >= %d", d.NodeID(), got, resp.GetIndex())
		}
	}
}

func TestLinearizableReadsOnAFollowerSeeACommitAcknowledgedBeforeThem(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	ctx := testContext(t)
	leader, follower := stateClient(t, nodes[0]), stateClient(t, nodes[1])
	// Each call is sent again while Unavailable (daemontest.WhileUnavailable:
	// the commit puts a fixed value and offset, the rest read).
	for i := range 20 {
		want := fmt.Sprintf("v%d", i)
		req := putReq("k", want)
		req.Offsets = []*statedv1.Offset{{Group: "g", Topic: "t", Partition: 0, Offset: int64(i + 1)}}
		if err := daemontest.WhileUnavailable(ctx, func() error { _, err := leader.Commit(ctx, req); return err }); err != nil {
			t.Fatal(err)
		}
		var got *statedv1.GetResponse
		err := daemontest.WhileUnavailable(ctx, func() (err error) {
			got, err = follower.Get(ctx, getReq("k", statedv1.Consistency_CONSISTENCY_LINEARIZABLE, 0))
			return err
		})
		if err != nil {
			t.Fatalf("linearizable get on a follower: %v", err)
		}
		if string(got.GetValue()) != want {
			t.Fatalf("linearizable get after commit %d = %q, want %q", i, got.GetValue(), want)
		}
		var offs *statedv1.GetOffsetsResponse
		err = daemontest.WhileUnavailable(ctx, func() (err error) {
			offs, err = follower.GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g",
				Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
			return err
		})
		if err != nil || len(offs.GetOffsets()) != 1 || offs.GetOffsets()[0].GetOffset() != int64(i+1) {
			t.Fatalf("linearizable offsets after commit %d = %v, %v", i, offs, err)
		}
		var sr *statedv1.ScanResponse
		err = daemontest.WhileUnavailable(ctx, func() error {
			stream, err := follower.Scan(ctx, &statedv1.ScanRequest{Namespace: "ns",
				Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
			if err != nil {
				return err
			}
			sr, err = stream.Recv()
			return err
		})
		if err != nil || len(sr.GetEntries()) != 1 || string(sr.GetEntries()[0].GetValue()) != want {
			t.Fatalf("linearizable scan after commit %d = %v, %v", i, sr, err)
		}
	}
}

func TestAForwardedCallThatReachesAFollowerIsNotForwardedAgain(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	conn := dial(t, nodes[1].TCPAddr())
	ctx := metadataContext(testContext(t))
	_, err := statedv1.NewStateClient(conn).Commit(ctx, putReq("k", "v"))
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "leader is node1") {
		t.Fatalf("forwarded commit on a follower = %v, want Unavailable naming the leader", err)
	}
}

func TestJoinIsRefusedForATakenIDOrAddressAndMembershipStaysTheSame(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	before := memberIDs(t, nodes[0])
	cases := []struct {
		name string
		req  *statedv1.JoinRequest
		want string
	}{
		{"duplicate node id at another address",
			&statedv1.JoinRequest{NodeId: "node2", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"}, `"node2"`},
		{"duplicate node id, with the way out",
			&statedv1.JoinRequest{NodeId: "node2", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2"}, "stated cluster remove node2"},
		{"raft address used by another node",
			&statedv1.JoinRequest{NodeId: "node9", RaftAddr: nodes[1].Store().RaftAddr(), GrpcAddr: "127.0.0.1:2"}, nodes[1].Store().RaftAddr()},
		{"raft address used by another node, with the way out",
			&statedv1.JoinRequest{NodeId: "node9", RaftAddr: nodes[1].Store().RaftAddr(), GrpcAddr: "127.0.0.1:2"}, "stated cluster remove node2"},
		{"grpc address used by another node",
			&statedv1.JoinRequest{NodeId: "node9", RaftAddr: "127.0.0.1:1", GrpcAddr: nodes[1].TCPAddr()}, nodes[1].TCPAddr()},
		{"the leader's own id and address",
			&statedv1.JoinRequest{NodeId: "node1", RaftAddr: nodes[0].Store().RaftAddr(), GrpcAddr: nodes[0].TCPAddr()}, `"node1"`},
		{"data of another cluster",
			&statedv1.JoinRequest{NodeId: "node9", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2", ClusterId: "another-cluster"}, "another-cluster"},
	}
	for _, tc := range cases {
		for _, via := range nodes { // the leader, and a follower that forwards
			t.Run(tc.name+" via "+via.NodeID(), func(t *testing.T) {
				ctx, cc := testContext(t), clusterClient(t, via)
				err := daemontest.WhileUnavailable(ctx, func() error { _, err := cc.Join(ctx, tc.req); return err })
				st := status.Convert(err)
				if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), tc.want) {
					t.Fatalf("join = %v, want FailedPrecondition naming %s", err, tc.want)
				}
			})
		}
	}
	long := &statedv1.JoinRequest{NodeId: "node9", RaftAddr: "127.0.0.1:1", GrpcAddr: "127.0.0.1:2", Incarnation: strings.Repeat("f", 65)}
	if _, err := clusterClient(t, nodes[0]).Join(testContext(t), long); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "incarnation: 65 bytes, limit 64") {
		t.Errorf("join with a 65-byte incarnation = %v, want InvalidArgument naming incarnation", err)
	}
	for _, bad := range []struct{ raft, grpc, want string }{
		{"127.0.0.1:", "127.0.0.1:2", `raft_addr: "127.0.0.1:" has no port`},
		{"127.0.0.1:0", "127.0.0.1:2", `raft_addr: "127.0.0.1:0": port 0`},
		{"127.0.0.1:99999", "127.0.0.1:2", `raft_addr: "127.0.0.1:99999": port 99999`},
		{"127.0.0.1:1", "127.0.0.1:", `grpc_addr: "127.0.0.1:" has no port`},
	} {
		req := &statedv1.JoinRequest{NodeId: "node9", RaftAddr: bad.raft, GrpcAddr: bad.grpc}
		if _, err := clusterClient(t, nodes[0]).Join(testContext(t), req); status.Code(err) != codes.InvalidArgument ||
			!strings.Contains(status.Convert(err).Message(), bad.want) {
			t.Errorf("join at %s, %s = %v, want InvalidArgument containing %q", bad.raft, bad.grpc, err, bad.want)
		}
	}
	if after := memberIDs(t, nodes[0]); !slices.Equal(after, before) {
		t.Errorf("members after refused joins = %v, want %v", after, before)
	}
}

func TestStartFailsWhenTheClusterRefusesTheJoiningNode(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	before := memberIDs(t, nodes[0])
	cfg := daemontest.Config(t, "node2") // node2 is a member at another address
	cfg.Join = []string{nodes[1].TCPAddr()}
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start joined with a duplicate node id")
	}
	if !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), `"node2"`) {
		t.Errorf("error %q does not say that the cluster refused node2", err)
	}
	if after := memberIDs(t, nodes[0]); !slices.Equal(after, before) {
		t.Errorf("members = %v, want %v", after, before)
	}
}

func TestStartFailsClearlyWhenAJoinAddressIsNotAStatedNode(t *testing.T) {
	t.Parallel()
	// A TCP listener that closes every connection at once.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close() })
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A gRPC server without the Cluster service.
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(other)
	t.Cleanup(srv.Stop)

	cases := []struct {
		name, addr, want string
	}{
		{"plain tcp listener", plain.Addr().String(), "no stated node at " + plain.Addr().String()},
		{"grpc server without the cluster service", other.Addr().String(), "is not a stated node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := daemontest.Config(t, "joiner")
			cfg.Join = []string{tc.addr}
			cfg.JoinTimeout = 2 * time.Second
			d, err := daemon.Start(testContext(t), cfg)
			if err == nil {
				d.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestANodeWhoseJoinFailedStillHasToJoin: a node whose join did not
// complete is not a member, whatever its data dir holds. Restarted without
// --join it refuses to start and says to give one (it must not bootstrap a
// cluster of its own); restarted with the address of a member it joins.
func TestANodeWhoseJoinFailedStillHasToJoin(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 1)
	cfg := daemontest.Config(t, "node2")
	cfg.Join = []string{"127.0.0.1:1"} // nobody listens
	cfg.JoinTimeout = 300 * time.Millisecond
	if d, err := daemon.Start(testContext(t), cfg); err == nil {
		d.Close()
		t.Fatal("Start joined through an address nobody listens on")
	}

	cfg.Join = nil // and Bootstrap is true, as by default
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("a node whose join failed started without --join")
	}
	if !strings.Contains(err.Error(), "--join") || !strings.Contains(err.Error(), "has to join") {
		t.Errorf("error %q does not say the node has to join and how", err)
	}

	cfg.Join = []string{nodes[0].TCPAddr()}
	cfg.JoinTimeout = time.Minute
	d, err = daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("join after a failed one: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Store().NeedsJoin() {
		t.Error("the node still needs a join after joining")
	}
	if got := memberIDs(t, nodes[0]); len(got) != 2 || !strings.HasPrefix(got[0], "node1@") || !strings.HasPrefix(got[1], "node2@") {
		t.Errorf("members = %v, want node1 and node2", got)
	}
}

func TestARestartedMemberIgnoresJoinAndKeepsItsData(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	resp, err := stateClient(t, nodes[0]).Commit(testContext(t), putReq("k", "v"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemontest.Config(t, "node3")
	cfg.Join = []string{nodes[0].TCPAddr()}
	d3, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A restart keeps its addresses: the cluster knows it by them.
	cfg.RaftAddr, cfg.GRPCAddr = d3.Store().RaftAddr(), d3.TCPAddr()
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Join = []string{"127.0.0.1:1"} // nobody listens: a join would fail
	d3, err = daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("restart of a member with a dead join address: %v", err)
	}
	t.Cleanup(func() { d3.Close() })
	got, err := stateClient(t, d3).Get(testContext(t), getReq("k", statedv1.Consistency_CONSISTENCY_SESSION, resp.GetIndex()))
	if err != nil || string(got.GetValue()) != "v" {
		t.Errorf("read on the restarted member = %v, %v", got, err)
	}
}

func TestRemovedMemberIsGoneAndTheClusterStillCommits(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	ctx := testContext(t)
	if _, err := clusterClient(t, nodes[1]).Remove(ctx, &statedv1.RemoveRequest{NodeId: "node3"}); err != nil {
		t.Fatalf("remove node3 via a follower: %v", err)
	}
	for _, d := range nodes[:2] {
		eventually(t, "node3 gone on "+d.NodeID(), func() error {
			for _, m := range memberIDs(t, d) {
				if strings.HasPrefix(m, "node3@") {
					return fmt.Errorf("members %v", memberIDs(t, d))
				}
			}
			return nil
		})
	}
	if _, err := stateClient(t, nodes[1]).Commit(ctx, putReq("k", "after-remove")); err != nil {
		t.Fatalf("commit after remove: %v", err)
	}
	_, err := clusterClient(t, nodes[0]).Remove(ctx, &statedv1.RemoveRequest{NodeId: "node3"})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "node3") {
		t.Errorf("removing node3 again = %v, want NotFound naming node3", err)
	}
}

func TestSDKGivenADeadAndALiveAddressWorks(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	ctx := testContext(t)
	c, err := stated.Dial(ctx, dead+","+nodes[1].TCPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	item, found, err := c.Get(ctx, "ns", []byte("k"))
	if err != nil || !found || string(item.Value) != "v" {
		t.Fatalf("get = %v %v %v", item, found, err)
	}
}

func TestSDKCommitsSurviveTheCloseOfTheirDaemonAndApplyOnce(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	ctx := testContext(t)
	var addrs []string
	for _, d := range nodes {
		addrs = append(addrs, d.TCPAddr())
	}
	// The client talks to node1, the leader, first.
	c, err := stated.Dial(ctx, strings.Join(addrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	counter := stated.NewCounter(c, "ns")

	const workers, perWorker = 4, 25
	var acked sync.WaitGroup
	errs := make(chan error, workers)
	closed := make(chan struct{})
	var once sync.Once
	var n sync.Mutex
	done := 0
	for range workers {
		acked.Add(1)
		go func() {
			defer acked.Done()
			for range perWorker {
				if err := counter.Add(ctx, "hits", 1); err != nil {
					errs <- err
					return
				}
				n.Lock()
				done++
				if done == workers*perWorker/4 {
					once.Do(func() { close(closed) })
				}
				n.Unlock()
			}
		}()
	}
	<-closed
	if err := nodes[0].Close(); err != nil {
		t.Fatalf("close node1: %v", err)
	}
	acked.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a commit failed instead of being retried: %v", err)
	}
	got, err := c.GetCounter(ctx, "ns", []byte("hits"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatal(err)
	}
	if got != workers*perWorker {
		t.Errorf("counter = %d after %d acknowledged increments", got, workers*perWorker)
	}
}

// metadataContext marks ctx's calls as forwarded by another node.
func metadataContext(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, grpcapi.ForwardedKey, "1")
}

func TestAMemberRestartedWithJoinAddressesOfAnotherClusterRefusesToStart(t *testing.T) {
	t.Parallel()
	a := daemontest.StartCluster(t, 2)
	b := daemontest.Start(t)
	cfg := daemontest.Config(t, "node3")
	cfg.Join = []string{a[0].TCPAddr()}
	d3, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr, cfg.GRPCAddr = d3.Store().RaftAddr(), d3.TCPAddr()
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Join = []string{b.TCPAddr()}
	d3, err = daemon.Start(testContext(t), cfg)
	if err == nil {
		d3.Close()
		t.Fatal("a member of one cluster started with the join address of another")
	}
	if !strings.Contains(err.Error(), "belongs to cluster") || !strings.Contains(err.Error(), b.TCPAddr()) {
		t.Errorf("error %q does not name the cluster mismatch", err)
	}
}

func TestAJoinAddressListNamingTwoClustersIsRefusedAndJoinsNeither(t *testing.T) {
	t.Parallel()
	a := daemontest.Start(t)
	b := daemontest.Start(t)
	beforeA, beforeB := memberIDs(t, a), memberIDs(t, b)
	cfg := daemontest.Config(t, "node2")
	cfg.Join = []string{a.TCPAddr(), b.TCPAddr()}
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("a node joined with join addresses of two clusters")
	}
	if !strings.Contains(err.Error(), "more than one cluster") || !strings.Contains(err.Error(), a.TCPAddr()) || !strings.Contains(err.Error(), b.TCPAddr()) {
		t.Errorf("error %q does not name the two clusters' addresses", err)
	}
	if after := memberIDs(t, a); !slices.Equal(after, beforeA) {
		t.Errorf("members of the first cluster = %v, want %v", after, beforeA)
	}
	if after := memberIDs(t, b); !slices.Equal(after, beforeB) {
		t.Errorf("members of the second cluster = %v, want %v", after, beforeB)
	}
}

func TestANodeWhoseRaftAddressTheLeaderCannotReachIsNotAdded(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 1)
	before := memberIDs(t, nodes[0])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()
	cfg := daemontest.Config(t, "node2")
	cfg.AdvertiseRaftAddr = nobody // a wrong --advertise-raft-addr
	cfg.Join = []string{nodes[0].TCPAddr()}
	cfg.JoinTimeout = 3 * time.Second
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("a node whose raft address nobody can reach joined")
	}
	if !strings.Contains(err.Error(), "raft address cannot be reached") || !strings.Contains(err.Error(), nobody) {
		t.Errorf("error %q does not say the leader cannot reach %s", err, nobody)
	}
	if after := memberIDs(t, nodes[0]); !slices.Equal(after, before) {
		t.Errorf("members = %v, want %v", after, before)
	}
	if _, err := stateClient(t, nodes[0]).Commit(testContext(t), putReq("k", "v")); err != nil {
		t.Errorf("commit after the refused join: %v", err)
	}
}

// TestARemovedMemberRestartedWithItsDataDirRefusesToStart: no leader
// replicates to a node it removed, so such a node, restarted with its data
// dir, waited for a leader for ever (`stated run` has no deadline) and
// said only that it ignored its join addresses.
func TestARemovedMemberRestartedWithItsDataDirRefusesToStart(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 2)
	cfg := daemontest.Config(t, "node3")
	cfg.Join = []string{nodes[1].TCPAddr()} // a follower: the leader is asked too
	d3, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr, cfg.GRPCAddr = d3.Store().RaftAddr(), d3.TCPAddr()
	if _, err := clusterClient(t, nodes[0]).Remove(testContext(t), &statedv1.RemoveRequest{NodeId: "node3"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node3 gone on node2", func() error {
		for _, m := range memberIDs(t, nodes[1]) {
			if strings.HasPrefix(m, "node3@") {
				return fmt.Errorf("members %v", memberIDs(t, nodes[1]))
			}
		}
		return nil
	})
	if err := d3.Close(); err != nil {
		t.Fatal(err)
	}
	d3, err = daemon.Start(testContext(t), cfg)
	if err == nil {
		d3.Close()
		t.Fatal("a removed member started")
	}
	if !strings.Contains(err.Error(), "not a member") || !strings.Contains(err.Error(), "wipe the data dir") {
		t.Errorf("error %q does not say the node was removed and what to do", err)
	}
}
