package grpcapi

import (
	"context"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Claim gives the request's partitions new epochs owned by its owner; a
// follower forwards it to the leader.
func (s *Server) Claim(ctx context.Context, r *statedv1.ClaimRequest) (*statedv1.ClaimResponse, error) {
	if err := validateClaim(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn != nil {
		resp, err := statedv1.NewStateClient(conn).Claim(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	c := &command.Claim{Group: r.GetGroup(), Owner: r.GetOwner(), Partitions: make([]command.PartitionEpoch, len(r.GetPartitions()))}
	for i, p := range r.GetPartitions() {
		c.Partitions[i] = command.PartitionEpoch{Topic: p.GetTopic(), Partition: p.GetPartition()}
	}
	claimed, idx, err := s.store.Claim(ctx, c)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &statedv1.ClaimResponse{Index: idx, Partitions: make([]*statedv1.ClaimedPartition, len(claimed))}
	for i, p := range claimed {
		resp.Partitions[i] = &statedv1.ClaimedPartition{
			Topic: p.Topic, Partition: p.Partition, Epoch: p.Epoch, HasOffset: p.HasOffset, Offset: p.Offset,
		}
	}
	return resp, nil
}

// Release gives up the request's partitions at their epochs; a follower
// forwards it to the leader.
func (s *Server) Release(ctx context.Context, r *statedv1.ReleaseRequest) (*statedv1.ReleaseResponse, error) {
	if err := validateRelease(r); err != nil {
		return nil, s.toStatus(ctx, err)
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	if conn != nil {
		resp, err := statedv1.NewStateClient(conn).Release(fctx, r)
		return resp, s.toStatus(ctx, forwardedError(err))
	}
	c := &command.Claim{Group: r.GetGroup(), Owner: r.GetOwner(), Partitions: make([]command.PartitionEpoch, len(r.GetPartitions()))}
	for i, p := range r.GetPartitions() {
		c.Partitions[i] = command.PartitionEpoch{Topic: p.GetTopic(), Partition: p.GetPartition(), Epoch: p.GetEpoch()}
	}
	idx, err := s.store.Release(ctx, c)
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &statedv1.ReleaseResponse{Index: idx}, nil
}

// offsetsResponse joins a group's offsets with its claims: each offset
// carries its partition's newest claim epoch.
func offsetsResponse(applied uint64, offs []command.Offset, claims []fsm.Claim) *statedv1.GetOffsetsResponse {
	type tp struct {
		topic     string
		partition int32
	}
	epochs := make(map[tp]uint64, len(claims))
	resp := &statedv1.GetOffsetsResponse{
		AppliedIndex: applied,
		Offsets:      make([]*statedv1.Offset, len(offs)),
		Claims:       make([]*statedv1.PartitionClaim, len(claims)),
	}
	for i, c := range claims {
		epochs[tp{c.Topic, c.Partition}] = c.Epoch
		resp.Claims[i] = &statedv1.PartitionClaim{
			Topic: c.Topic, Partition: c.Partition, Epoch: c.Epoch, Owner: c.Owner,
			Released: c.Released, ClaimedAtUnixMillis: unixMillis(c.ClaimedAt),
		}
	}
	for i, o := range offs {
		resp.Offsets[i] = &statedv1.Offset{
			Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset,
			Epoch: epochs[tp{o.Topic, o.Partition}],
		}
	}
	return resp
}
