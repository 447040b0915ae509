package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/recovery"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/uploader"
)

// Checkpointer is what the Checkpoints service needs from the daemon's
// checkpoint coordinator.
type Checkpointer interface {
	// Trigger starts a checkpoint and returns its epoch once its barrier
	// applied, and with wait its manifest once it completed.
	Trigger(ctx context.Context, wait bool) (uint64, *uploader.Manifest, error)
	List(ctx context.Context) ([]*uploader.Manifest, []uploader.Unreadable, error)
	// Get selects by epoch, the latest, or a savepoint name.
	Get(ctx context.Context, epoch uint64, latest bool, savepoint string) (*uploader.Manifest, error)
	// Savepoint pins epoch (zero: the latest) under name.
	Savepoint(ctx context.Context, epoch uint64, name string) (uint64, error)
	// Delete removes epoch's manifest; the newest checkpoint only with
	// force (else an error matching uploader.ErrNewest).
	Delete(ctx context.Context, epoch uint64, force bool) error
	DeleteSavepoint(ctx context.Context, name string) error
	Status(ctx context.Context) (*statedv1.CheckpointStatus, error)
	// Recovery reports the extent of a recovery from the selected
	// checkpoint.
	Recovery(ctx context.Context, sel recovery.Selector, verify bool) (*recovery.Report, error)
}

// CheckpointsServer implements statedv1.CheckpointsServer. The leader's
// coordinator runs the checkpoints, so a follower forwards every call.
type CheckpointsServer struct {
	statedv1.UnimplementedCheckpointsServer
	ckpt   Checkpointer
	logger *slog.Logger
	fwd    forwarding
}

// NewCheckpoints returns a CheckpointsServer over ckpt; lead tells whether
// this node leads, and where the leader is.
func NewCheckpoints(lead Leadership, ckpt Checkpointer, opts ...Option) *CheckpointsServer {
	o := newOptions(opts)
	return &CheckpointsServer{ckpt: ckpt, logger: o.logger, fwd: newForwarding(lead, o)}
}

// leader returns a client of the leader's Checkpoints service when this
// node is a follower, nil when it leads.
func (s *CheckpointsServer) leader(ctx context.Context) (statedv1.CheckpointsClient, context.Context, error) {
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil || conn == nil {
		return nil, ctx, err
	}
	return statedv1.NewCheckpointsClient(conn), fctx, nil
}

func forward[Req, Resp any](ctx context.Context, s *CheckpointsServer, r Req,
	call func(statedv1.CheckpointsClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	local func() (Resp, error)) (Resp, error) {
	var zero Resp
	c, fctx, err := s.leader(ctx)
	if err != nil {
		return zero, statusOf(ctx, s.logger, err)
	}
	if c != nil {
		resp, err := call(c, fctx, r)
		return resp, statusOf(ctx, s.logger, forwardedError(err))
	}
	resp, err := local()
	if err != nil {
		return zero, statusOf(ctx, s.logger, err)
	}
	return resp, nil
}

// Trigger starts a checkpoint on the leader.
func (s *CheckpointsServer) Trigger(ctx context.Context, r *statedv1.TriggerCheckpointRequest) (*statedv1.TriggerCheckpointResponse, error) {
	return forward(ctx, s, r, statedv1.CheckpointsClient.Trigger, func() (*statedv1.TriggerCheckpointResponse, error) {
		epoch, m, err := s.ckpt.Trigger(ctx, r.GetWait())
		if err != nil {
			return nil, checkpointFailed(err)
		}
		resp := &statedv1.TriggerCheckpointResponse{Epoch: epoch}
		if m != nil {
			resp.Summary = Summary(m)
		}
		return resp, nil
	})
}

// checkpointFailed is err, a checkpoint's failure, as the caller sees it:
// RESOURCE_EXHAUSTED when a disk it wrote to (the data dir's, or a file://
// bucket's) is full, since freeing space is what makes the next one
// complete; UNAVAILABLE, with what was abandoned, when this node stopped
// leading during it (the failure's cause is then a cancellation, but not
// the caller's); anything else as statusOf maps it.
func checkpointFailed(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return status.Error(codes.ResourceExhausted, "stated: the checkpoint failed on a full disk (free space on the data dir's or the bucket's disk, then trigger it again): "+err.Error())
	case errors.Is(err, raftstore.ErrNotLeader):
		return status.Error(codes.Unavailable, "stated: "+err.Error()+" (trigger it again: the new leader takes it)")
	}
	return err
}

// List returns the completed checkpoints, oldest first.
func (s *CheckpointsServer) List(ctx context.Context, r *statedv1.ListCheckpointsRequest) (*statedv1.ListCheckpointsResponse, error) {
	return forward(ctx, s, r, statedv1.CheckpointsClient.List, func() (*statedv1.ListCheckpointsResponse, error) {
		ms, unreadable, err := s.ckpt.List(ctx)
		if err != nil {
			return nil, err
		}
		resp := &statedv1.ListCheckpointsResponse{}
		for _, m := range ms {
			resp.Checkpoints = append(resp.Checkpoints, Summary(m))
		}
		for _, un := range unreadable {
			resp.Unreadable = append(resp.Unreadable, &statedv1.UnreadableCheckpointFile{Key: un.Key, Epoch: un.Epoch, Error: un.Err.Error()})
		}
		return resp, nil
	})
}

// Get returns one checkpoint's manifest.
func (s *CheckpointsServer) Get(ctx context.Context, r *statedv1.GetCheckpointRequest) (*statedv1.CheckpointManifest, error) {
	n := 0
	for _, set := range []bool{r.GetEpoch() != 0, r.GetLatest(), r.GetSavepoint() != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, statusOf(ctx, s.logger, invalid("epoch", "set exactly one of epoch, latest and savepoint"))
	}
	if r.GetSavepoint() != "" {
		if err := validateSavepointName("savepoint", r.GetSavepoint()); err != nil {
			return nil, statusOf(ctx, s.logger, err)
		}
	}
	return forward(ctx, s, r, statedv1.CheckpointsClient.Get, func() (*statedv1.CheckpointManifest, error) {
		m, err := s.ckpt.Get(ctx, r.GetEpoch(), r.GetLatest(), r.GetSavepoint())
		if err != nil {
			return nil, err
		}
		return ManifestProto(m), nil
	})
}

// Savepoint pins a checkpoint under a name.
func (s *CheckpointsServer) Savepoint(ctx context.Context, r *statedv1.SavepointRequest) (*statedv1.SavepointResponse, error) {
	if err := validateSavepointName("name", r.GetName()); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	// A new pin may not take a name that reads as an epoch or as latest
	// where checkpoints are selected (--checkpoint N|latest|NAME); older
	// pins under such names can still be read and deleted.
	if name := r.GetName(); name == "latest" || strings.Trim(name, "0123456789") == "" {
		return nil, statusOf(ctx, s.logger, invalid("name", "%q reads as an epoch or as latest where checkpoints are selected (--checkpoint N|latest|NAME); add a letter, e.g. %q", name, "sp-"+name))
	}
	return forward(ctx, s, r, statedv1.CheckpointsClient.Savepoint, func() (*statedv1.SavepointResponse, error) {
		epoch, err := s.ckpt.Savepoint(ctx, r.GetEpoch(), r.GetName())
		if err != nil {
			return nil, checkpointFailed(err)
		}
		return &statedv1.SavepointResponse{Epoch: epoch}, nil
	})
}

// Delete removes a checkpoint's manifest.
func (s *CheckpointsServer) Delete(ctx context.Context, r *statedv1.DeleteCheckpointRequest) (*statedv1.DeleteCheckpointResponse, error) {
	switch {
	case r.GetEpoch() == 0 && r.GetSavepoint() == "":
		return nil, statusOf(ctx, s.logger, invalid("epoch", "zero; set an epoch or a savepoint"))
	case r.GetEpoch() != 0 && r.GetSavepoint() != "":
		return nil, statusOf(ctx, s.logger, invalid("epoch", "set an epoch or a savepoint, not both"))
	case r.GetSavepoint() != "" && r.GetForce():
		return nil, statusOf(ctx, s.logger, invalid("force", "only for an epoch; a savepoint is deleted without it"))
	case r.GetSavepoint() != "":
		if err := validateSavepointName("savepoint", r.GetSavepoint()); err != nil {
			return nil, statusOf(ctx, s.logger, err)
		}
	}
	return forward(ctx, s, r, statedv1.CheckpointsClient.Delete, func() (*statedv1.DeleteCheckpointResponse, error) {
		var err error
		if r.GetSavepoint() != "" {
			err = s.ckpt.DeleteSavepoint(ctx, r.GetSavepoint())
		} else {
			err = s.ckpt.Delete(ctx, r.GetEpoch(), r.GetForce())
		}
		if err != nil {
			return nil, err
		}
		return &statedv1.DeleteCheckpointResponse{}, nil
	})
}

// Status is the leader coordinator's state.
func (s *CheckpointsServer) Status(ctx context.Context, r *statedv1.CheckpointStatusRequest) (*statedv1.CheckpointStatus, error) {
	return forward(ctx, s, r, statedv1.CheckpointsClient.Status, func() (*statedv1.CheckpointStatus, error) {
		return s.ckpt.Status(ctx)
	})
}

// Recovery reports the extent of a recovery from a checkpoint.
func (s *CheckpointsServer) Recovery(ctx context.Context, r *statedv1.RecoveryRequest) (*statedv1.RecoveryReport, error) {
	if r.GetEpoch() != 0 && r.GetSavepoint() != "" {
		return nil, statusOf(ctx, s.logger, invalid("epoch", "set at most one of epoch and savepoint"))
	}
	if r.GetSavepoint() != "" {
		if err := validateSavepointName("savepoint", r.GetSavepoint()); err != nil {
			return nil, statusOf(ctx, s.logger, err)
		}
	}
	return forward(ctx, s, r, statedv1.CheckpointsClient.Recovery, func() (*statedv1.RecoveryReport, error) {
		rep, err := s.ckpt.Recovery(ctx, recovery.Selector{Epoch: r.GetEpoch(), Savepoint: r.GetSavepoint()}, !r.GetSkipVerify())
		if err != nil {
			return nil, err
		}
		return RecoveryProto(rep), nil
	})
}

// RecoveryProto converts a recovery report.
func RecoveryProto(r *recovery.Report) *statedv1.RecoveryReport {
	out := &statedv1.RecoveryReport{
		Checkpoint: &statedv1.CheckpointSummary{
			Epoch: r.Epoch, RaftIndex: r.RaftIndex, RaftTerm: r.RaftTerm, CreatedAtUnixMillis: r.CreatedAt.UnixMilli(),
			ClusterId: r.ClusterID, Files: uint64(r.Files), Bytes: uint64(r.FileBytes), Keys: r.Keys, StateBytes: r.Bytes,
			KeysNotCounted: r.KeysNotCounted, Savepoint: r.Savepoint, Offsets: uint64(r.Offsets()),
			Encrypted: r.Encrypted, EncryptionKeeper: r.Keeper,
		},
		AgeMillis: r.Age.Milliseconds(), Verified: r.Verified, Intact: r.Intact,
		KafkaChecked: r.KafkaChecked, KafkaError: r.KafkaError, Replay: r.Replay, Lost: r.Lost,
	}
	if r.Changelog {
		out.Checkpoint.Changelog, out.Checkpoint.ChangelogBaseEpoch, out.Checkpoint.ChangelogSegments = true, r.ChangelogBaseEpoch, uint64(r.ChangelogSegments)
	}
	for _, p := range r.Problems {
		out.Problems = append(out.Problems, &statedv1.FileProblem{Path: p.Path, BlobKey: p.BlobKey, Problem: p.Problem})
	}
	for _, p := range r.Partitions {
		out.Partitions = append(out.Partitions, &statedv1.PartitionRecovery{
			Group: p.Group, Topic: p.Topic, Partition: p.Partition, CheckpointOffset: p.CheckpointOffset,
			LogStart: p.LogStart, LogEnd: p.LogEnd, Replay: p.Replay, Lost: p.Lost, Error: p.Error,
		})
	}
	// A manifest from before window statistics has none (nil): unknown,
	// not "no window namespaces".
	if r.Windows != nil {
		out.WindowsRecorded = true
		for _, w := range r.Windows {
			out.Windows = append(out.Windows, &statedv1.WindowNamespaceRecovery{
				Namespace: w.Namespace, Watermark: w.Watermark, MaxEventTime: w.MaxEventTime,
				PendingEmissions: w.Pending, OpenWindows: w.OpenWindows,
			})
		}
	}
	return out
}

func validateSavepointName(field, name string) error {
	switch {
	case name == "":
		return invalid(field, "empty")
	case len(name) > 128:
		return invalid(field, "%d characters, limit 128", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalid(field, "invalid character %q at %d; savepoint names use [a-zA-Z0-9._-]", c, i)
		}
	}
	if name == "." || name == ".." {
		return invalid(field, "%q is reserved", name)
	}
	return nil
}

// Summary converts a manifest's header.
func Summary(m *uploader.Manifest) *statedv1.CheckpointSummary {
	var bytes int64
	for _, f := range m.Files {
		bytes += f.Size
	}
	s := &statedv1.CheckpointSummary{
		Epoch: m.Epoch, RaftIndex: m.RaftIndex, RaftTerm: m.RaftTerm,
		CreatedAtUnixMillis: m.CreatedAt.UnixMilli(), ClusterId: m.ClusterID,
		Files: uint64(len(m.Files)), Bytes: uint64(bytes),
		Keys: m.Stats.Keys, StateBytes: m.Stats.Bytes, KeysNotCounted: m.Stats.KeysNotCounted,
		Savepoint: m.Savepoint, Offsets: uint64(len(m.Offsets)),
	}
	if e := m.Encryption; e != nil {
		s.Encrypted, s.EncryptionKeeper = true, e.Keeper
	}
	if cl := m.Changelog; cl != nil {
		s.Changelog, s.ChangelogBaseEpoch, s.ChangelogSegments = true, cl.BaseEpoch, uint64(len(cl.Segments))
	}
	return s
}

// ManifestProto converts a whole manifest.
func ManifestProto(m *uploader.Manifest) *statedv1.CheckpointManifest {
	out := &statedv1.CheckpointManifest{Summary: Summary(m), FormatVersion: int32(m.FormatVersion)}
	for _, o := range m.Offsets {
		out.Offsets = append(out.Offsets, &statedv1.Offset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.Offset})
	}
	for _, f := range m.Files {
		out.Files = append(out.Files, &statedv1.CheckpointFile{Path: f.Path, Size: f.Size, Sha256: f.SHA256})
	}
	return out
}
