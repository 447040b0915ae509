package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/statedhq/stated/daemon/grpcapi"
	"github.com/statedhq/stated/daemon/recovery"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/uploader"
)

// checkpointsAPI serves the Checkpoints gRPC service from the coordinator.
type checkpointsAPI struct{ c *coordinator }

func (a checkpointsAPI) Trigger(ctx context.Context, wait bool) (uint64, *uploader.Manifest, error) {
	return a.c.Trigger(ctx, wait)
}

func (a checkpointsAPI) List(ctx context.Context) ([]*uploader.Manifest, []uploader.Unreadable, error) {
	return a.c.up.Catalog(ctx)
}

func (a checkpointsAPI) Get(ctx context.Context, epoch uint64, latest bool, savepoint string) (*uploader.Manifest, error) {
	switch {
	case latest:
		return a.c.up.Latest(ctx)
	case savepoint != "":
		ms, err := a.c.up.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if m.Savepoint == savepoint {
				return m, nil
			}
		}
		return nil, fmt.Errorf("savepoint %q: %w", savepoint, uploader.ErrNotFound)
	}
	return a.c.up.Get(ctx, epoch)
}

func (a checkpointsAPI) Savepoint(ctx context.Context, epoch uint64, name string) (uint64, error) {
	if epoch == 0 {
		m, err := a.c.up.Latest(ctx)
		if err != nil {
			return 0, err
		}
		epoch = m.Epoch
	}
	return epoch, a.c.up.Savepoint(ctx, epoch, name)
}

// Delete removes a checkpoint's manifest. The newest one is refused
// unless force: Kafka's committed offsets and the replicated checkpoint
// offsets are its, and without it they point past every checkpoint a
// restore could use until the next one completes.
func (a checkpointsAPI) Delete(ctx context.Context, epoch uint64, force bool) error {
	err := a.c.up.Delete(ctx, epoch, force)
	if errors.Is(err, uploader.ErrNewest) {
		return fmt.Errorf("%w: Kafka's committed offsets and the checkpointed offsets are this checkpoint's, so deleting it leaves them "+
			"ahead of every checkpoint a restore could use (a restore would skip the records in between) until the next checkpoint completes; "+
			"take a new checkpoint first (stated checkpoint trigger --wait), or delete it anyway with force (stated checkpoint delete --force)", err)
	}
	return err
}

func (a checkpointsAPI) DeleteSavepoint(ctx context.Context, name string) error {
	return a.c.up.DeleteSavepoint(ctx, name)
}

func (a checkpointsAPI) Status(context.Context) (*statedv1.CheckpointStatus, error) {
	st := a.c.Status()
	out := &statedv1.CheckpointStatus{
		Enabled: st.Enabled, Bucket: st.Bucket, IntervalMillis: st.Interval.Milliseconds(), Retain: int32(st.Retain),
		SharesDiskWithData: st.SharesDiskWithData,
		LastDurationMillis: st.LastDuration.Milliseconds(), LastBytesUploaded: uint64(st.LastBytesUploaded),
		LastFilesUploaded: uint64(st.LastFilesUploaded), Completed: st.Completed, Failures: st.Failures,
		LastError: st.LastError, KafkaError: st.KafkaError,
		InProgressEpoch: st.InProgressEpoch, InProgressBytesDone: uint64(st.InProgressBytesDone),
		InProgressBytesTotal: uint64(st.InProgressBytesTotal), NodeId: a.c.store.NodeID(),
		KafkaMemberGroups:         st.KafkaMemberGroups,
		MaterializeIntervalMillis: st.MaterializeInterval.Milliseconds(), ChangelogBaseEpoch: st.ChangelogBaseEpoch,
		ChangelogBytes: uint64(st.ChangelogBytes), ChangelogCheckpoints: st.ChangelogCheckpoints, CountingEpoch: st.CountingEpoch,
	}
	if !st.LastErrorAt.IsZero() {
		out.LastErrorAtUnixMillis = st.LastErrorAt.UnixMilli()
	}
	if st.LastCompleted != nil {
		out.LastCompleted = grpcapi.Summary(st.LastCompleted)
	}
	if st.LastCountEpoch != 0 {
		n := st.LastCount
		out.LastCount = &statedv1.CheckpointCountInfo{Epoch: st.LastCountEpoch,
			WholeReason: n.Whole, BaseEpoch: n.BaseEpoch, TablesRead: uint64(n.TablesRead), TableBytesRead: n.TableBytesRead,
			KeysCompared: n.KeysCompared, RangesCompared: uint64(n.RangesCompared), DurationMillis: st.LastCountDuration.Milliseconds(),
			TablesFromProperties: uint64(n.TablesFromProperties), KeysFromProperties: n.KeysFromProperties,
		}
	}
	return out, nil
}

func (a checkpointsAPI) Recovery(ctx context.Context, sel recovery.Selector, verify bool) (*recovery.Report, error) {
	m, err := recovery.Select(ctx, a.c.up, sel)
	if err != nil {
		return nil, err
	}
	var adm *kadm.Client
	if a.c.kafka != nil {
		adm = a.c.kafka.adm
	}
	return BuildRecovery(ctx, a.c.up, m, verify, adm)
}

// KafkaTimeout bounds the questions a recovery report asks Kafka.
const KafkaTimeout = 30 * time.Second

// BuildRecovery builds the recovery report of m. Verifying reads every
// file of the checkpoint and takes as long as that takes (ctx bounds it);
// Kafka, if adm is set, gets KafkaTimeout to answer, and a Kafka that does
// not is reported in the report, not as an error.
func BuildRecovery(ctx context.Context, up *uploader.Uploader, m *uploader.Manifest, verify bool, adm *kadm.Client) (*recovery.Report, error) {
	r, err := recovery.Build(ctx, up, m, recovery.Options{Verify: verify})
	if err != nil || adm == nil {
		return r, err
	}
	kctx, cancel := context.WithTimeout(ctx, KafkaTimeout)
	defer cancel()
	k, err := recovery.Build(kctx, up, m, recovery.Options{Kafka: adm})
	if err != nil {
		return nil, err
	}
	r.Partitions, r.Replay, r.Lost, r.KafkaChecked, r.KafkaError = k.Partitions, k.Replay, k.Lost, k.KafkaChecked, k.KafkaError
	return r, nil
}
