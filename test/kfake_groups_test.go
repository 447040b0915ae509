package test

// These tests pin the three fixes to kfake's classic group coordinator
// that third_party/kfake carries (see third_party/kfake/PATCHES.md). Each
// drives the coordinator with raw JoinGroup/SyncGroup/Heartbeat/LeaveGroup
// requests, one kgo client (so one set of connections) per member, and
// fails against the unpatched groups.go. They use only kfake's public API,
// so they double as the upstream reproductions.

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const rawGroupTopic = "t"

// rawGroup is a kfake cluster with one topic of two partitions, and a
// client to describe the group with.
type rawGroup struct {
	t       *testing.T
	brokers []string
	name    string
	admin   *kgo.Client
}

func newRawGroup(t *testing.T) *rawGroup {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, rawGroupTopic), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	g := &rawGroup{t: t, brokers: c.ListenAddrs(), name: "g"}
	g.admin = g.client()
	return g
}

func (g *rawGroup) client(opts ...kgo.Opt) *kgo.Client {
	g.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(g.brokers...)}, opts...)...)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(cl.Close)
	return cl
}

// describe returns the group's state and its member ids, sorted.
func (g *rawGroup) describe(ctx context.Context) (string, []string) {
	g.t.Helper()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{g.name}
	resp, err := req.RequestWith(ctx, g.admin)
	if err != nil {
		g.t.Fatalf("describe group: %v", err)
	}
	dg := resp.Groups[0]
	if err := kerr.ErrorForCode(dg.ErrorCode); err != nil {
		g.t.Fatalf("describe group: %v", err)
	}
	var ids []string
	for _, m := range dg.Members {
		ids = append(ids, m.MemberID)
	}
	slices.Sort(ids)
	return dg.State, ids
}

// waitState polls DescribeGroups until the group is in state.
func (g *rawGroup) waitState(ctx context.Context, state string) {
	g.t.Helper()
	eventually(g.t, 10*time.Second, "group in state "+state, func() bool {
		s, _ := g.describe(ctx)
		return s == state
	})
}

// rawMember is one consumer group member speaking the classic protocol by
// hand, on its own kgo client.
type rawMember struct {
	g         *rawGroup
	cl        *kgo.Client
	session   time.Duration
	rebalance time.Duration
	protocol  string // the one assignor the member offers
	topic     string // the topic it subscribes to

	// id and generation are written by join's goroutine; read them
	// after its answer, or under mu while it runs.
	mu          sync.Mutex
	id          string
	generation  int32
	syncWritten atomic.Bool // a SyncGroup request was written to the coordinator
}

func (g *rawGroup) member(session, rebalance time.Duration) *rawMember {
	m := &rawMember{g: g, session: session, rebalance: rebalance, protocol: "range", topic: rawGroupTopic}
	m.cl = g.client(kgo.WithHooks(syncWriteHook{&m.syncWritten}))
	return m
}

// syncWriteHook notes that a SyncGroup request was written.
type syncWriteHook struct{ written *atomic.Bool }

func (h syncWriteHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == kmsg.SyncGroup.Int16() && err == nil {
		h.written.Store(true)
	}
}

// joinResult is what a JoinGroup that was parked by the coordinator
// eventually got.
type joinResult struct {
	resp *kmsg.JoinGroupResponse
	err  error
}

// join sends JoinGroup (twice for a new member: the first answers
// MEMBER_ID_REQUIRED with the id) and returns the final answer on a
// channel, since the coordinator parks the request until the rebalance
// completes.
func (m *rawMember) join(ctx context.Context) <-chan joinResult {
	out := make(chan joinResult, 1)
	go func() {
		for {
			req := kmsg.NewPtrJoinGroupRequest()
			req.Group = m.g.name
			m.mu.Lock()
			req.MemberID = m.id
			m.mu.Unlock()
			req.SessionTimeoutMillis = int32(m.session.Milliseconds())
			req.RebalanceTimeoutMillis = int32(m.rebalance.Milliseconds())
			req.ProtocolType = "consumer"
			meta := kmsg.NewConsumerMemberMetadata()
			meta.Topics = []string{m.topic}
			req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: m.protocol, Metadata: meta.AppendTo(nil)}}
			resp, err := req.RequestWith(ctx, m.cl)
			m.mu.Lock()
			if err == nil && resp.ErrorCode == kerr.MemberIDRequired.Code && m.id == "" {
				m.id = resp.MemberID
				m.mu.Unlock()
				continue
			}
			if err == nil && resp.ErrorCode == 0 {
				m.id, m.generation = resp.MemberID, resp.Generation
			}
			m.mu.Unlock()
			out <- joinResult{resp, err}
			return
		}
	}()
	return out
}

// joined waits for a join to be answered without error.
func (m *rawMember) joined(ctx context.Context, what string, c <-chan joinResult) *kmsg.JoinGroupResponse {
	m.g.t.Helper()
	select {
	case r := <-c:
		if r.err != nil {
			m.g.t.Fatalf("%s: JoinGroup: %v", what, r.err)
		}
		if err := kerr.ErrorForCode(r.resp.ErrorCode); err != nil {
			m.g.t.Fatalf("%s: JoinGroup: %v", what, err)
		}
		return r.resp
	case <-ctx.Done():
		m.g.t.Fatalf("%s: JoinGroup got no answer: %v", what, ctx.Err())
		return nil
	}
}

// waitMemberID waits until the coordinator has given a new member its id
// (the first of its two JoinGroups was answered).
func (m *rawMember) waitMemberID(ctx context.Context) {
	m.g.t.Helper()
	eventually(m.g.t, 10*time.Second, "member id assigned", func() bool {
		_, ids := m.g.describe(ctx)
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.id != "" && slices.Contains(ids, m.id)
	})
}

// sync sends SyncGroup; the leader passes the assignment, partition i of
// the topic to assign[i].
func (m *rawMember) sync(ctx context.Context, assign ...*rawMember) (*kmsg.SyncGroupResponse, error) {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group = m.g.name
	req.MemberID = m.id
	req.Generation = m.generation
	req.ProtocolType = kmsg.StringPtr("consumer")
	req.Protocol = kmsg.StringPtr(m.protocol)
	byMember := map[string][]int32{}
	for i, a := range assign {
		byMember[a.id] = append(byMember[a.id], int32(i))
	}
	for id, parts := range byMember {
		a := kmsg.NewConsumerMemberAssignment()
		a.Topics = []kmsg.ConsumerMemberAssignmentTopic{{Topic: m.topic, Partitions: parts}}
		req.GroupAssignment = append(req.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: id, MemberAssignment: a.AppendTo(nil)})
	}
	resp, err := req.RequestWith(ctx, m.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	return resp, err
}

func (m *rawMember) mustSync(ctx context.Context, assign ...*rawMember) {
	m.g.t.Helper()
	if _, err := m.sync(ctx, assign...); err != nil {
		m.g.t.Fatalf("SyncGroup: %v", err)
	}
}

// heartbeat sends one Heartbeat and returns its error code as an error.
func (m *rawMember) heartbeat(ctx context.Context) error {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group = m.g.name
	req.MemberID = m.id
	req.Generation = m.generation
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.ErrorCode)
}

// rejoinOnHeartbeat heartbeats until the coordinator says a rebalance is
// in progress, as a franz-go member learns of one, then joins.
func (m *rawMember) rejoinOnHeartbeat(ctx context.Context) <-chan joinResult {
	m.g.t.Helper()
	eventually(m.g.t, 10*time.Second, "heartbeat answers REBALANCE_IN_PROGRESS", func() bool {
		return m.heartbeat(ctx) == kerr.RebalanceInProgress
	})
	return m.join(ctx)
}

// stable makes a stable group of a single member, leader.
func (g *rawGroup) stable(ctx context.Context, m *rawMember) {
	g.t.Helper()
	m.joined(ctx, "first member", m.join(ctx))
	m.mustSync(ctx, m, m)
	g.waitState(ctx, "Stable")
}

// A member whose client dies while its JoinGroup is parked must still be
// expired after its session timeout. Unpatched, the coordinator stopped
// its timer when it moved from pending to joining and armed a new one only
// after a successful send of the join answer. The send into a closed
// connection fails about half the time (it races a two-slot response
// buffer against the connection's end), so the test kills twelve members
// at once: unpatched, at least one of them stays (all twelve answers would
// have to land in the buffer, a chance of 1 in 4096) as a "ghost" in the
// stable group, holding its partitions for good.
func TestKfakeMemberKilledWhileJoiningIsExpired(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := newRawGroup(t)

	// a lives through the test without heartbeats; the ghosts' sessions
	// are short, and no rebalance timeout can clear them within the test.
	a := g.member(time.Minute, 5*time.Minute)
	g.stable(ctx, a)

	const n = 12
	var ghosts []*rawMember
	var joins []<-chan joinResult
	for range n {
		m := g.member(300*time.Millisecond, 5*time.Minute)
		joins = append(joins, m.join(ctx)) // parked: the group waits for a
		m.waitMemberID(ctx)
		ghosts = append(ghosts, m)
	}
	g.waitState(ctx, "PreparingRebalance")
	for i, m := range ghosts {
		m.cl.Close() // the process dies with its JoinGroup parked
		if r := <-joins[i]; r.err == nil {
			t.Fatalf("ghost %d: the closed client's JoinGroup was answered: %+v", i, r.resp)
		}
	}

	// a rejoins, which completes the rebalance: the coordinator answers
	// the ghosts' JoinGroups into closed connections.
	resp := a.joined(ctx, "a", a.rejoinOnHeartbeat(ctx))
	if len(resp.Members) != n+1 {
		t.Fatalf("leader a sees %d members; want a and %d ghosts", len(resp.Members), n)
	}
	a.mustSync(ctx, a, ghosts[0]) // a ghost is given partition 1

	ghostsLeft := func() (left int) {
		_, ids := g.describe(ctx)
		for _, m := range ghosts {
			if slices.Contains(ids, m.id) {
				left++
			}
		}
		return left
	}
	for deadline := time.Now().Add(10 * time.Second); ghostsLeft() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d members killed while their JoinGroup was parked are still in the group 10s after their 300ms session timeout; ghosts[0] holds partition 1", ghostsLeft(), n)
		}
	}
}

// A live member parked in JoinGroup must not be expired by its session
// timer: franz-go (like the Java client) does not heartbeat while it
// joins, so a rebalance that waits longer than the session timeout (for
// a silent member to expire) dropped every member already joined and
// never answered their JoinGroups; each client then hung until its
// request timed out. Kafka keeps members alive while their request is
// parked, bounded by the rebalance timeout.
func TestKfakeMemberParkedInJoinIsNotExpired(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := newRawGroup(t)

	// a's session is short, silent's long: 2s against 8s. a never
	// heartbeats between the steps below, which take milliseconds.
	a := g.member(2*time.Second, time.Minute)
	g.stable(ctx, a)

	// silent joins and syncs once, then never heartbeats again.
	silent := g.member(8*time.Second, time.Minute)
	silentJoin := silent.join(ctx)
	silent.waitMemberID(ctx)
	a.joined(ctx, "a", a.rejoinOnHeartbeat(ctx))
	silent.joined(ctx, "silent", silentJoin)
	silentSync := make(chan error, 1)
	go func() { _, err := silent.sync(ctx); silentSync <- err }() // parked until the leader's
	a.mustSync(ctx, a, silent)
	if err := <-silentSync; err != nil {
		t.Fatalf("silent: SyncGroup: %v", err)
	}
	g.waitState(ctx, "Stable")

	// b joins; a rejoins and waits, parked, for silent, which is expired
	// only after its 8s session: long after a's own 2s.
	b := g.member(time.Minute, time.Minute)
	bJoin := b.join(ctx)
	b.waitMemberID(ctx)
	aJoin := a.rejoinOnHeartbeat(ctx)

	wait, cancelWait := context.WithTimeout(ctx, 20*time.Second)
	defer cancelWait()
	a.joined(wait, "a, parked in JoinGroup past its session timeout while the group waited for a silent member", aJoin)
	b.joined(wait, "b", bJoin)
	if _, ids := g.describe(ctx); !slices.Equal(ids, sortedCopy([]string{a.id, b.id})) {
		t.Fatalf("members %v; want a %s and b %s (silent expired, a kept)", ids, a.id, b.id)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// Removing a member parked in SyncGroup must not change the count of
// members parked in JoinGroup. Unpatched, removeMember decremented it for
// any parked request, so after a member left while waiting in SyncGroup
// the count was one short and the next rebalance waited its full
// rebalance timeout even with every member joined.
func TestKfakeMemberLeavingInSyncKeepsTheJoinCount(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := newRawGroup(t)

	a := g.member(time.Minute, 5*time.Minute)
	g.stable(ctx, a)

	b := g.member(time.Minute, 5*time.Minute)
	bJoin := b.join(ctx)
	b.waitMemberID(ctx)
	a.joined(ctx, "a", a.rejoinOnHeartbeat(ctx))
	b.joined(ctx, "b", bJoin)

	// b's SyncGroup is parked until the leader syncs; b leaves meanwhile
	// (LeaveGroup goes on another connection than SyncGroup).
	bSync := make(chan error, 1)
	go func() { _, err := b.sync(ctx); bSync <- err }()
	// LeaveGroup goes on another connection than SyncGroup, so wait for
	// the SyncGroup to have been written, and give the coordinator one
	// round trip to take it in; the end of the test checks that it was
	// parked, not answered, when b left.
	eventually(t, 10*time.Second, "b's SyncGroup written", func() bool { return b.syncWritten.Load() })
	g.describe(ctx)
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = g.name
	leave.Members = []kmsg.LeaveGroupRequestMember{{MemberID: b.id}}
	lresp, err := leave.RequestWith(ctx, b.cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(lresp.Members[0].ErrorCode); err != nil {
		t.Fatalf("b: LeaveGroup: %v", err)
	}

	// a alone rejoins: every member has joined, so the rebalance must
	// complete at once, not after a's 5 minute rebalance timeout.
	wait, cancelWait := context.WithTimeout(ctx, 15*time.Second)
	defer cancelWait()
	a.joined(wait, "a, the only member left, rejoining", a.rejoinOnHeartbeat(ctx))
	select {
	case err := <-bSync:
		t.Fatalf("setup: b's SyncGroup was answered (%v): it was not parked when b left", err)
	default:
	}
}
