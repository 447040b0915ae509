package grpcapi_test

import (
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func tp(topic string, p int32) *statedv1.TopicPartition {
	return &statedv1.TopicPartition{Topic: topic, Partition: p}
}

func claim(t *testing.T, c statedv1.StateClient, owner string, parts ...*statedv1.TopicPartition) *statedv1.ClaimResponse {
	t.Helper()
	resp, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: owner, Partitions: parts})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return resp
}

// counterCommit is a commit of client without a session: these tests are
// about fencing of partitions, not retries; seq only numbers the calls.
func counterCommit(client string, _ uint64, offs ...*statedv1.Offset) *statedv1.CommitRequest {
	return &statedv1.CommitRequest{
		ClientId: client, Offsets: offs,
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("n"), Delta: 1}},
	}
}

func epochOffset(p int32, off int64, epoch uint64) *statedv1.Offset {
	return &statedv1.Offset{Group: "g", Topic: "t", Partition: p, Offset: off, Epoch: epoch}
}

// TestZombieCommitIsFencedWithTheFencedPartitionInItsDetails runs on a
// three-node cluster and claims through a follower, so that the claim
// and the refusal both cross the forwarding path.
func TestZombieCommitIsFencedWithTheFencedPartitionInItsDetails(t *testing.T) {
	t.Parallel()
	nodes := daemontest.StartCluster(t, 3)
	leader, follower := dial(t, "unix://"+nodes[0].SocketPath()), dial(t, "unix://"+nodes[2].SocketPath())

	mustCommit(t, leader, counterCommit("a", 1, epochOffset(0, 5, 0)))
	first := claim(t, follower, "a", tp("t", 0), tp("t", 1))
	if got := first.GetPartitions(); len(got) != 2 || got[0].GetEpoch() != 1 || !got[0].GetHasOffset() || got[0].GetOffset() != 5 ||
		got[1].GetEpoch() != 1 || got[1].GetHasOffset() {
		t.Fatalf("claim = %v, want epoch 1 at offset 5, and epoch 1 with no offset", got)
	}
	mustCommit(t, follower, counterCommit("a", 2, epochOffset(0, 6, 1), epochOffset(1, 1, 1)))
	second := claim(t, leader, "b", tp("t", 0))
	if p := second.GetPartitions()[0]; p.GetEpoch() != 2 || p.GetOffset() != 6 {
		t.Fatalf("second claim = %v, want epoch 2 at offset 6", p)
	}

	// a is now a zombie on partition 0: its commit moves nothing, not
	// even partition 1, which it still owns.
	before := nodes[0].Store().AppliedIndex()
	_, err := follower.Commit(testContext(t), counterCommit("a", 3, epochOffset(1, 2, 1), epochOffset(0, 7, 1)))
	wantStatus(t, err, codes.FailedPrecondition, `offsets[1].epoch: group "g" topic "t" partition 0: epoch 1 was superseded by epoch 2 (owner "b")`)
	var fp *statedv1.FencedPartition
	for _, d := range status.Convert(err).Details() {
		if v, ok := d.(*statedv1.FencedPartition); ok {
			fp = v
		}
	}
	if fp == nil || fp.GetTopic() != "t" || fp.GetPartition() != 0 || fp.GetEpoch() != 1 || fp.GetCurrentEpoch() != 2 || fp.GetOwner() != "b" {
		t.Fatalf("details = %v, want the fenced partition t/0 at epoch 1 of 2, owner b", fp)
	}
	mustCommit(t, leader, counterCommit("b", 1, epochOffset(0, 7, 2)))
	if n := counterValue(t, leader); n != 3 {
		t.Fatalf("counter = %d, want 3: the zombie's commit must not apply", n)
	}
	if after := nodes[0].Store().AppliedIndex(); after <= before {
		t.Fatalf("applied index %d, want past %d", after, before)
	}

	// GetOffsets reports each offset with its partition's newest epoch, and
	// the claims with their owners.
	offs, err := follower.GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{Group: "g", Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range offs.GetOffsets() {
		got = append(got, strings.Join([]string{o.GetTopic(), itoa(int64(o.GetPartition())), itoa(o.GetOffset()), itoa(int64(o.GetEpoch()))}, "/"))
	}
	for _, c := range offs.GetClaims() {
		got = append(got, strings.Join([]string{c.GetTopic(), itoa(int64(c.GetPartition())), itoa(int64(c.GetEpoch())), c.GetOwner()}, "/"))
		if c.GetClaimedAtUnixMillis() == 0 {
			t.Errorf("claim %v without a time", c)
		}
	}
	if want := "t/0/7/2 t/1/1/1 t/0/2/b t/1/1/a"; strings.Join(got, " ") != want {
		t.Fatalf("offsets and claims = %q, want %q", strings.Join(got, " "), want)
	}

	// b releases partition 0; a's stale release of it changes nothing first.
	for _, owner := range []string{"a", "b"} {
		if _, err := follower.Release(testContext(t), &statedv1.ReleaseRequest{Group: "g", Owner: owner,
			Partitions: []*statedv1.PartitionEpoch{{Topic: "t", Partition: 0, Epoch: map[string]uint64{"a": 1, "b": 2}[owner]}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = leader.Commit(testContext(t), counterCommit("b", 2, epochOffset(0, 8, 2)))
	wantStatus(t, err, codes.FailedPrecondition, `epoch 2 was released by its owner "b"`)
}

func counterValue(t *testing.T, c statedv1.StateClient) int64 {
	t.Helper()
	resp, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: "ns", Key: []byte("n"), Kind: statedv1.Kind_KIND_COUNTER,
		Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetCounter()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestClaimsAndFencedCommitsRejectBadInputNamingTheField(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	claim(t, c, "a", tp("t", 0))
	long := strings.Repeat("x", 250)
	for name, tc := range map[string]struct {
		call func() error
		code codes.Code
		msg  string
	}{
		"claim without group": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Owner: "a", Partitions: []*statedv1.TopicPartition{tp("t", 0)}})
			return err
		}, codes.InvalidArgument, "group: empty"},
		"claim without owner": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Partitions: []*statedv1.TopicPartition{tp("t", 0)}})
			return err
		}, codes.InvalidArgument, "owner: empty"},
		"claim by an owner with a control character": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a\nb", Partitions: []*statedv1.TopicPartition{tp("t", 0)}})
			return err
		}, codes.InvalidArgument, "owner: control character U+000A at byte 1"},
		"session of a client id with a control character": {func() error {
			_, err := c.OpenSession(testContext(t), &statedv1.OpenSessionRequest{ClientId: "a\x00"})
			return err
		}, codes.InvalidArgument, "client_id: control character U+0000 at byte 1"},
		"session of a client id over 256 bytes": {func() error {
			_, err := c.OpenSession(testContext(t), &statedv1.OpenSessionRequest{ClientId: strings.Repeat("c", 257)})
			return err
		}, codes.InvalidArgument, "client_id: 257 bytes, limit 256"},
		"claim of nothing": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a"})
			return err
		}, codes.InvalidArgument, "partitions: empty"},
		"claim of a bad topic": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a", Partitions: []*statedv1.TopicPartition{tp("t", 1), tp("a/b", 0)}})
			return err
		}, codes.InvalidArgument, `partitions[1].topic: invalid character '/' at 1`},
		"claim of a too long topic": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a", Partitions: []*statedv1.TopicPartition{tp(long, 0)}})
			return err
		}, codes.InvalidArgument, "partitions[0].topic: 250 characters, limit 249"},
		"claim of a negative partition": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a", Partitions: []*statedv1.TopicPartition{tp("t", -1)}})
			return err
		}, codes.InvalidArgument, "partitions[0].partition: negative (-1)"},
		"claim of a partition twice": {func() error {
			_, err := c.Claim(testContext(t), &statedv1.ClaimRequest{Group: "g", Owner: "a", Partitions: []*statedv1.TopicPartition{tp("t", 0), tp("t", 0)}})
			return err
		}, codes.InvalidArgument, "partitions[1]: duplicate of partitions[0]"},
		"release without owner": {func() error {
			_, err := c.Release(testContext(t), &statedv1.ReleaseRequest{Group: "g", Partitions: []*statedv1.PartitionEpoch{{Topic: "t", Epoch: 1}}})
			return err
		}, codes.InvalidArgument, "owner: empty"},
		"epoch without client id": {func() error {
			_, err := c.Commit(testContext(t), counterCommit("", 0, epochOffset(0, 1, 1)))
			return err
		}, codes.InvalidArgument, "offsets[0].epoch: set without client_id"},
		"offset of an unclaimed partition with an epoch": {func() error {
			_, err := c.Commit(testContext(t), counterCommit("a", 0, epochOffset(5, 1, 1)))
			return err
		}, codes.FailedPrecondition, "partition 5: epoch 1 was never issued: the partition is not claimed"},
		"offset of a claimed partition without an epoch": {func() error {
			_, err := c.Commit(testContext(t), counterCommit("a", 0, epochOffset(0, 1, 0)))
			return err
		}, codes.FailedPrecondition, `the partition is claimed (epoch 1, owner "a") and the commit carries no epoch`},
		"epoch from the future": {func() error {
			_, err := c.Commit(testContext(t), counterCommit("a", 0, epochOffset(0, 1, 9)))
			return err
		}, codes.FailedPrecondition, "epoch 9 is from the future: the newest claim is epoch 1"},
		"another client with the owner's epoch": {func() error {
			_, err := c.Commit(testContext(t), counterCommit("z", 0, epochOffset(0, 1, 1)))
			return err
		}, codes.FailedPrecondition, `epoch 1 belongs to owner "a", not to client "z"`},
	} {
		t.Run(name, func(t *testing.T) {
			wantStatus(t, tc.call(), tc.code, tc.msg)
		})
	}
	if n := counterValue(t, c); n != 0 {
		t.Fatalf("counter = %d, want 0: refused commits apply nothing", n)
	}
	offs, err := c.GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if len(offs.GetOffsets()) != 0 || len(offs.GetClaims()) != 1 || offs.GetClaims()[0].GetEpoch() != 1 {
		t.Fatalf("after refusals: offsets %v claims %v, want no offsets and one claim at epoch 1", offs.GetOffsets(), offs.GetClaims())
	}
}
