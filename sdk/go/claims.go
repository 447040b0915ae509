package stated

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TopicPartition names one partition of a Kafka topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// PartitionClaim is a partition claimed with Claim: the epoch that fences
// every earlier owner out, and where to resume consuming.
type PartitionClaim struct {
	Topic     string
	Partition int32
	// Epoch is the claim's epoch; commits that move this partition's
	// offset carry it (Txn.CommitClaimedOffset).
	Epoch uint64
	// Offset is the next offset to consume, as stored when the claim
	// applied; valid only when HasOffset is set.
	Offset    int64
	HasOffset bool
}

// ClaimInfo is a partition's current claim as GetGroup reports it.
type ClaimInfo struct {
	Topic     string
	Partition int32
	Epoch     uint64
	// Owner is the client id of the claimant.
	Owner string
	// Released is set when the owner gave the partition up.
	Released  bool
	ClaimedAt time.Time
}

// Claim makes this Client the owner of partitions of a consumer group:
// each gets a new epoch, and from then on the daemon refuses every commit
// that moves one of their offsets without this Client's id and that epoch
// (a zombie's commit fails with a *FencedError). It returns the epochs and
// the offsets stored for the partitions when the claim applied, in the
// order asked. Call it when Kafka assigns the partitions, and seek them to
// the offsets it returns.
//
// Claim is retried like a commit; a retried claim claims again, with a
// newer epoch, which is harmless.
func (c *Client) Claim(ctx context.Context, group string, partitions []TopicPartition) ([]PartitionClaim, error) {
	if err := c.checkOpen("claim"); err != nil {
		return nil, err
	}
	req := &statedv1.ClaimRequest{Group: group, Owner: c.id, Partitions: make([]*statedv1.TopicPartition, len(partitions))}
	for i, p := range partitions {
		req.Partitions[i] = &statedv1.TopicPartition{Topic: p.Topic, Partition: p.Partition}
	}
	var resp *statedv1.ClaimResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.Claim(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr("claim", err)
	}
	c.observeIndex(resp.GetIndex())
	out := make([]PartitionClaim, len(resp.GetPartitions()))
	for i, p := range resp.GetPartitions() {
		out[i] = PartitionClaim{Topic: p.GetTopic(), Partition: p.GetPartition(), Epoch: p.GetEpoch(), Offset: p.GetOffset(), HasOffset: p.GetHasOffset()}
	}
	return out, nil
}

// Release gives up claims this Client holds. A partition that someone else
// claimed since is left alone, so releasing late is safe.
func (c *Client) Release(ctx context.Context, group string, claims []PartitionClaim) error {
	if err := c.checkOpen("release"); err != nil {
		return err
	}
	req := &statedv1.ReleaseRequest{Group: group, Owner: c.id, Partitions: make([]*statedv1.PartitionEpoch, len(claims))}
	for i, p := range claims {
		req.Partitions[i] = &statedv1.PartitionEpoch{Topic: p.Topic, Partition: p.Partition, Epoch: p.Epoch}
	}
	var resp *statedv1.ReleaseResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.Release(ctx, req)
		return err
	})
	if err != nil {
		return c.rpcErr("release", err)
	}
	c.observeIndex(resp.GetIndex())
	return nil
}

// GroupState is what the daemon stores for a consumer group: the offsets
// and the claims on its partitions, read together.
type GroupState struct {
	Offsets []Offset
	Claims  []ClaimInfo
	// Checkpointed are the group's offsets in the newest completed
	// checkpoint: a restore can always bring the state back to them, so
	// they are the offsets to commit to Kafka.
	Checkpointed []Offset
}

// GetGroup returns a consumer group's offsets and partition claims, each
// sorted by topic and partition, from one read.
func (c *Client) GetGroup(ctx context.Context, group string, opts ...ReadOption) (GroupState, error) {
	resp, err := c.getOffsets(ctx, group, opts)
	if err != nil {
		return GroupState{}, err
	}
	out := GroupState{Offsets: toOffsets(resp), Claims: make([]ClaimInfo, 0, len(resp.GetClaims()))}
	for _, o := range resp.GetCheckpointed() {
		out.Checkpointed = append(out.Checkpointed, Offset{Group: o.GetGroup(), Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset()})
	}
	for _, p := range resp.GetClaims() {
		out.Claims = append(out.Claims, ClaimInfo{
			Topic: p.GetTopic(), Partition: p.GetPartition(), Epoch: p.GetEpoch(), Owner: p.GetOwner(),
			Released: p.GetReleased(), ClaimedAt: time.UnixMilli(p.GetClaimedAtUnixMillis()),
		})
	}
	return out, nil
}

// CommitClaimedOffset is CommitOffset for a partition claimed with Claim:
// it carries the claim's epoch, and the daemon refuses the whole Txn with
// a *FencedError when that epoch is no longer the partition's claim.
func (t *Txn) CommitClaimedOffset(group string, claim PartitionClaim, next int64) *Txn {
	t.offsets = append(t.offsets, &statedv1.Offset{
		Group: group, Topic: claim.Topic, Partition: claim.Partition, Offset: next, Epoch: claim.Epoch,
	})
	return t
}

// FencedError is a commit the daemon refused because it moved the offset
// of a partition whose claim this Client no longer holds: another client
// claimed it since (this one is a zombie), the claim was released, or the
// epoch was never issued. Nothing of the commit was applied. Stop
// processing the partition; claim it again if Kafka assigns it again.
//
// It matches ErrFailedPrecondition with errors.Is.
type FencedError struct {
	Group     string
	Topic     string
	Partition int32
	// Epoch is the commit's epoch; CurrentEpoch and Owner describe the
	// partition's newest claim.
	Epoch        uint64
	CurrentEpoch uint64
	Owner        string
	Reason       string
	err          error
}

func (e *FencedError) Error() string { return e.err.Error() }

// Unwrap returns the call's status error, which matches
// ErrFailedPrecondition.
func (e *FencedError) Unwrap() error { return e.err }

// GRPCStatus lets status.Code see the original status.
func (e *FencedError) GRPCStatus() *status.Status {
	var se *statusError
	if errors.As(e.err, &se) {
		return se.st
	}
	return status.Convert(e.err)
}

// asFenced returns err as a *FencedError when its status carries a
// FencedPartition detail, else err.
func asFenced(err error) error {
	var se *statusError
	if !errors.As(err, &se) {
		return err
	}
	for _, d := range se.st.Details() {
		if fp, ok := d.(*statedv1.FencedPartition); ok {
			return &FencedError{
				Group: fp.GetGroup(), Topic: fp.GetTopic(), Partition: fp.GetPartition(),
				Epoch: fp.GetEpoch(), CurrentEpoch: fp.GetCurrentEpoch(), Owner: fp.GetOwner(),
				Reason: fp.GetReason(), err: err,
			}
		}
	}
	return err
}
