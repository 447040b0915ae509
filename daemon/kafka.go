package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/uploader"
)

// kafkaCommitter commits a completed checkpoint's offsets to each consumer
// group with franz-go's admin client, so that Kafka's committed offsets
// (what lag tools read, and where a consumer that ignores stated starts)
// never run ahead of a recoverable checkpoint.
type kafkaCommitter struct {
	cl     *kgo.Client
	adm    *kadm.Client
	logger *slog.Logger

	// Groups committed, failed, and left to their live members, since
	// start (for metrics).
	committed, failed, members atomic.Uint64
}

func newKafkaCommitter(brokers []string, logger *slog.Logger) (*kafkaCommitter, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, fmt.Errorf("daemon: kafka client for %s: %w", strings.Join(brokers, ","), err)
	}
	return &kafkaCommitter{cl: cl, adm: kadm.NewClient(cl), logger: logger}, nil
}

func (k *kafkaCommitter) close() { k.cl.Close() }

// commit commits m's offsets group by group. It returns the groups Kafka
// refused because they have live members (Kafka accepts commits for such
// a group from its members only; sdk/go/kafka processors commit the
// checkpointed offsets themselves), and the other failures.
func (k *kafkaCommitter) commit(ctx context.Context, m *uploader.Manifest) (memberGroups []string, err error) {
	groups := map[string]kadm.Offsets{}
	for _, o := range m.Offsets {
		offs := groups[o.Group]
		if offs == nil {
			offs = kadm.Offsets{}
			groups[o.Group] = offs
		}
		offs.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1})
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	var errs []error
	for _, g := range names {
		resp, err := k.adm.CommitOffsets(ctx, g, groups[g])
		if err == nil {
			err = resp.Error()
		}
		switch {
		case err == nil:
			k.committed.Add(1)
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.RebalanceInProgress):
			k.members.Add(1)
			memberGroups = append(memberGroups, g)
		default:
			k.failed.Add(1)
			errs = append(errs, fmt.Errorf("group %q: %w", g, err))
		}
	}
	return memberGroups, errors.Join(errs...)
}
