package test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/internal/commithook"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// lostCommitAnswer is a unary client interceptor that loses the answer of
// the first Commit attempt once armed: the attempt reaches the daemon and
// applies, then the interceptor holds it until release is closed and
// returns Unavailable, as a connection cut after the apply would.
type lostCommitAnswer struct {
	armed    atomic.Bool
	once     sync.Once
	applied  chan error // the held attempt's real outcome
	release  chan struct{}
	attempts atomic.Int32
}

func newLostCommitAnswer() *lostCommitAnswer {
	return &lostCommitAnswer{applied: make(chan error, 1), release: make(chan struct{})}
}

func (l *lostCommitAnswer) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method != statedv1.State_Commit_FullMethodName || !l.armed.Load() {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	l.attempts.Add(1)
	hold := false
	l.once.Do(func() { hold = true })
	if !hold {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	l.applied <- err
	select {
	case <-l.release:
	case <-ctx.Done():
	}
	return status.Error(codes.Unavailable, "test: the answer was lost")
}

// checkpointLoseAndRestore checkpoints n, kills it, wipes its data dir, restores
// the latest checkpoint from bucket into it and starts it again.
func checkpointLoseAndRestore(ctx context.Context, t *testing.T, n *node, bucket string) {
	t.Helper()
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", n.socket, "--timeout", "30s")
	n.kill()
	if err := os.RemoveAll(n.dataDir); err != nil {
		t.Fatal(err)
	}
	mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n.dataDir)
	n.start(ctx)
}

func linearizableCounter(ctx context.Context, t *testing.T, st statedv1.StateClient, ns, key string) int64 {
	t.Helper()
	got, err := st.Get(ctx, &statedv1.GetRequest{Namespace: ns, Key: []byte(key), Kind: statedv1.Kind_KIND_COUNTER,
		Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
	if err != nil {
		t.Fatalf("get %s/%s: %v", ns, key, err)
	}
	return got.GetCounter()
}

// TestAnSDKRetryOfACheckpointedCommitIsNotAppliedTwiceAfterARestore (a
// review's check): an SDK commit applies, its answer is lost, the
// cluster is checkpointed (the commit is in the checkpoint), lost and
// restored, and the SDK's retry reaches the restored cluster. The retry
// must not apply a second time; GUARANTEES §2 says the SDK returns
// ErrSessionExpired (outcome unknown). The same Client then goes on
// committing into the restored cluster (same lineage).
func TestAnSDKRetryOfACheckpointedCommitIsNotAppliedTwiceAfterARestore(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	lost := newLostCommitAnswer()
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithBlock(), stated.WithAttemptTimeout(2*time.Minute),
		stated.WithDialOptions(grpc.WithUnaryInterceptor(lost.intercept), grpc.WithStreamInterceptor(commithook.Stream(lost.intercept))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lineage := c.Lineage()
	lost.armed.Store(true)
	type outcome struct {
		res stated.CommitResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx)
		done <- outcome{res, err}
	}()
	select {
	case err := <-lost.applied:
		if err != nil {
			t.Fatalf("the held attempt did not apply: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the commit's first attempt never came back")
	}
	checkpointLoseAndRestore(ctx, t, n, bucket)
	close(lost.release)
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		t.Fatal("the retried commit did not return")
	}
	st, closeSt := n.client()
	defer closeSt()
	got := linearizableCounter(ctx, t, st, "ns", "c")
	t.Logf("retried commit after the restore: res=%+v err=%v (attempts seen by the interceptor: %d); counter=%d",
		o.res, o.err, lost.attempts.Load(), got)
	if got != 2 {
		t.Errorf("counter = %d after the restore and the retry, want 2 (1 + the commit in the checkpoint)", got)
	}
	if o.err == nil && !o.res.Duplicate {
		t.Errorf("the retry of a commit that is in the restored checkpoint was acknowledged as a new apply: %+v", o.res)
	}
	if o.err != nil && !errors.Is(o.err, stated.ErrSessionExpired) {
		t.Errorf("the retried commit failed with %v; GUARANTEES §2 says ErrSessionExpired", o.err)
	}
	// The Client keeps committing into the restored cluster.
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if _, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(cctx); err != nil {
		t.Fatalf("a new commit of the client that stayed up through the restore: %v", err)
	}
	if c.Lineage() != lineage {
		t.Errorf("lineage %q after the restore, %q before", c.Lineage(), lineage)
	}
	if got := linearizableCounter(ctx, t, st, "ns", "c"); got != 3 {
		t.Errorf("counter = %d after one more commit, want 3", got)
	}
}

// TestALateOpenAfterARestoreIsRefusedAndTheSDKRetryIsNotAppliedTwice (a
// review's reproduction, with the SDK): as above, but before the SDK's
// retry reaches the restored cluster an attempt of the Client's own
// session open arrives late (the same client id and session id, as every
// attempt of the SDK's open carries). The restore ended the session, so
// the late open is refused as an open of an ended session (REASON_ENDED),
// and the SDK's retry of the commit that is already in the checkpoint is
// refused as not open: ErrSessionExpired, counter 2. Before, the restore
// dropped the session without an ended record: the late open opened it
// afresh with no lanes, and the retry applied a second time, acknowledged
// as a new commit.
func TestALateOpenAfterARestoreIsRefusedAndTheSDKRetryIsNotAppliedTwice(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	lost := newLostCommitAnswer()
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithBlock(), stated.WithAttemptTimeout(2*time.Minute),
		stated.WithDialOptions(grpc.WithUnaryInterceptor(lost.intercept), grpc.WithStreamInterceptor(commithook.Stream(lost.intercept))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sid := c.SessionID()
	lost.armed.Store(true)
	type outcome struct {
		res stated.CommitResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := c.Txn().CounterAdd("ns", []byte("c"), 1).Commit(ctx)
		done <- outcome{res, err}
	}()
	select {
	case err := <-lost.applied:
		if err != nil {
			t.Fatalf("the held attempt did not apply: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the commit's first attempt never came back")
	}
	checkpointLoseAndRestore(ctx, t, n, bucket)
	st, closeSt := n.client()
	defer closeSt()
	// The late attempt of the Client's open: what the SDK sends (client id
	// and session id only), arriving after the restore.
	lateResp, lateErr := st.OpenSession(ctx, &statedv1.OpenSessionRequest{ClientId: c.ClientID(), SessionId: sid})
	close(lost.release)
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		t.Fatal("the retried commit did not return")
	}
	got := linearizableCounter(ctx, t, st, "ns", "c")
	t.Logf("late open of session %d: %v, %v; retried commit: res=%+v err=%v; counter=%d", sid, lateResp, lateErr, o.res, o.err, got)
	if got != 2 {
		t.Errorf("counter = %d, want 2: the commit in the checkpoint applied again after a late open of its session", got)
	}
	if o.err == nil && !o.res.Duplicate {
		t.Errorf("the SDK acknowledged the retry of a commit that is in the restored checkpoint as a new apply: %+v", o.res)
	}
	lateOpenOfEndedRefused(t, lateErr)
	if !errors.Is(o.err, stated.ErrSessionExpired) {
		t.Errorf("the retried commit returned %v, %+v; want ErrSessionExpired (an earlier attempt may have applied)", o.err, o.res)
	}
}

// lateOpenOfEndedRefused fails t unless err refuses an open as a late
// open of an ended session: INVALID_ARGUMENT with a SessionRefused
// detail of reason REASON_ENDED.
func lateOpenOfEndedRefused(t *testing.T, err error) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Errorf("late open: %v; want InvalidArgument, refused as an open of an ended session", err)
		return
	}
	for _, d := range st.Details() {
		if sr, ok := d.(*statedv1.SessionRefused); ok && sr.GetReason() == statedv1.SessionRefused_REASON_ENDED {
			return
		}
	}
	t.Errorf("late open: %v (details %v); want a SessionRefused detail with REASON_ENDED", err, st.Details())
}

// TestARawLateOpenAfterARestoreIsRefusedAndTheRetryIsNotAppliedTwice (a
// review's reproduction over the raw API, exact ids): session S opens and
// commits lane 0 sequence 1; a checkpoint takes it; the node is lost and
// restored. The retried commit alone is refused (not open). A late open of
// S is refused (REASON_ENDED), and the same retried commit again: counter
// 1. Before, the late open opened S afresh and the retry applied again.
func TestARawLateOpenAfterARestoreIsRefusedAndTheRetryIsNotAppliedTwice(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	st, closeSt := n.client()
	const client, session = "restore-raw", 4242
	open := &statedv1.OpenSessionRequest{ClientId: client, SessionId: session}
	if _, err := st.OpenSession(ctx, open); err != nil {
		t.Fatal(err)
	}
	commit := &statedv1.CommitRequest{ClientId: client, SessionId: session, Lane: 0, Sequence: 1,
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD,
			Namespace: "ns", Key: []byte("c"), Delta: 1}}}
	if resp, err := st.Commit(ctx, commit); err != nil || resp.GetDuplicate() {
		t.Fatalf("commit: %v, %v", resp, err)
	}
	closeSt()
	checkpointLoseAndRestore(ctx, t, n, bucket)
	st, closeSt = n.client()
	defer closeSt()
	_, retryErr := st.Commit(ctx, commit)
	t.Logf("retry after the restore: %v", retryErr)
	if status.Code(retryErr) != codes.FailedPrecondition {
		t.Errorf("retry after the restore: %v; want FailedPrecondition (not open)", retryErr)
	}
	openResp, openErr := st.OpenSession(ctx, open)
	resp, commitErr := st.Commit(ctx, commit)
	got := linearizableCounter(ctx, t, st, "ns", "c")
	t.Logf("late open: %v, %v; retried commit: %v, %v; counter=%d", openResp, openErr, resp, commitErr, got)
	if got != 1 {
		t.Errorf("counter = %d, want 1: the late open of the session current at the checkpoint let its retried commit apply again", got)
	}
	lateOpenOfEndedRefused(t, openErr)
	if status.Code(commitErr) != codes.FailedPrecondition {
		t.Errorf("retry after the late open: %v, %v; want FailedPrecondition (not open)", resp, commitErr)
	}
}

// TestARetriedClaimedOffsetCommitAfterARestoreIsNotAppliedTwice
// (a review's check): the same sequence as above, but the commit moves a
// claimed partition's offset with the counter, as the Kafka processor's
// do. The restore releases the claim, so the retry after the late open is
// refused whatever its session (the late open is refused too; before it
// was not, and the claim alone fenced the retry): the counter stays the
// checkpoint's.
func TestARetriedClaimedOffsetCommitAfterARestoreIsNotAppliedTwice(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	st, closeSt := n.client()
	const client, session, group, topic = "restore-kafka", 5151, "g", "events"
	claim, err := st.Claim(ctx, &statedv1.ClaimRequest{Group: group, Owner: client,
		Partitions: []*statedv1.TopicPartition{{Topic: topic, Partition: 0}}})
	if err != nil || len(claim.GetPartitions()) != 1 {
		t.Fatalf("claim: %v, %v", claim, err)
	}
	epoch := claim.GetPartitions()[0].GetEpoch()
	open := &statedv1.OpenSessionRequest{ClientId: client, SessionId: session}
	if _, err := st.OpenSession(ctx, open); err != nil {
		t.Fatal(err)
	}
	commit := &statedv1.CommitRequest{ClientId: client, SessionId: session, Lane: 0, Sequence: 1,
		Mutations: []*statedv1.Mutation{{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD,
			Namespace: "ns", Key: []byte("c"), Delta: 1}},
		Offsets: []*statedv1.Offset{{Group: group, Topic: topic, Partition: 0, Offset: 1, Epoch: epoch}}}
	if resp, err := st.Commit(ctx, commit); err != nil || resp.GetDuplicate() {
		t.Fatalf("commit: %v, %v", resp, err)
	}
	closeSt()
	checkpointLoseAndRestore(ctx, t, n, bucket)
	st, closeSt = n.client()
	defer closeSt()
	openResp, openErr := st.OpenSession(ctx, open)
	resp, commitErr := st.Commit(ctx, commit)
	got := linearizableCounter(ctx, t, st, "ns", "c")
	offs, err := st.GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: group})
	t.Logf("late open: %v, %v; retried commit: %v, %v; counter=%d; offsets=%v (%v)", openResp, openErr, resp, commitErr, got, offs, err)
	if got != 1 {
		t.Errorf("counter = %d, want 1: a claimed-offset commit in the checkpoint applied again", got)
	}
	if commitErr == nil && !resp.GetDuplicate() {
		t.Errorf("the retried claimed-offset commit applied again: %v", resp)
	}
}
