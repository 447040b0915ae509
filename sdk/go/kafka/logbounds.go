package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	stated "github.com/statedhq/stated/sdk/go"
)

// ErrOffsetPastLogEnd is what Run returns when stated holds an offset for
// a claimed partition past the partition's end in Kafka: the records
// stated counted are not the partition's (the topic was deleted and
// created again, or the brokers lost records they had acknowledged).
// Consuming from there would skip the partition's records below that
// offset without a word, as Kafka's own consumer does when it resets, so
// the processor stops instead. OPERATIONS.md, "A Kafka topic deleted or
// recreated", says what to do.
var ErrOffsetPastLogEnd = errors.New("kafka: stated's offset for a partition is past the partition's end in Kafka")

// Log bounds checks: the end of a partition is listed again this many
// times, this far apart, before an offset past it stops the processor (a
// new partition leader's end can trail the old one's for a moment).
const (
	pastEndChecks   = 3
	pastEndInterval = time.Second
)

// checkLogBounds compares the offsets stated holds for claims with the
// partitions' log start and end in Kafka. An offset below the log start
// means Kafka deleted records (retention, DeleteRecords) before this
// group processed them: they are lost for good, and the processor goes
// on from the log start, so it logs a warning naming the partition and
// counts them (Stats.Lost). An offset past the log end, still there after
// pastEndChecks listings, returns an error matching ErrOffsetPastLogEnd.
// A listing that fails is logged and skipped: the check must not keep a
// group from consuming when Kafka's ListOffsets is refused (an ACL that
// allows fetching only, say).
func (p *Processor) checkLogBounds(ctx context.Context, claims []stated.PartitionClaim) error {
	held := map[string]bool{}
	for _, c := range claims {
		if c.HasOffset {
			held[c.Topic] = true
		}
	}
	if len(held) == 0 {
		return nil
	}
	topics := slices.Sorted(maps.Keys(held))
	adm := kadm.NewClient(p.cl)
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		p.logger.Warn("kafka: listing the log start of claimed partitions failed; records Kafka deleted before they were processed are not reported", "group", p.cfg.Group, "error", err)
	} else {
		for _, c := range claims {
			start, ok := starts.Lookup(c.Topic, c.Partition)
			if !c.HasOffset || !ok || c.Offset >= start.Offset {
				continue
			}
			lost := start.Offset - c.Offset
			p.waits.lost(lost)
			p.logger.Warn("kafka: records deleted by Kafka before this group processed them are lost for good: stated's offset is below the partition's log start (retention or DeleteRecords); processing goes on from the log start",
				"group", p.cfg.Group, "topic", c.Topic, "partition", c.Partition, "stated_offset", c.Offset, "log_start", start.Offset, "lost", lost)
		}
	}
	past := claims
	for check := 1; ; check++ {
		ends, err := adm.ListEndOffsets(ctx, topics...)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			p.logger.Warn("kafka: listing the log end of claimed partitions failed; not checked against stated's offsets", "group", p.cfg.Group, "error", err)
			return nil
		}
		past = slices.DeleteFunc(slices.Clone(past), func(c stated.PartitionClaim) bool {
			end, ok := ends.Lookup(c.Topic, c.Partition)
			return !c.HasOffset || !ok || c.Offset <= end.Offset
		})
		if len(past) == 0 {
			return nil
		}
		if check == pastEndChecks {
			c := past[0]
			end, _ := ends.Lookup(c.Topic, c.Partition)
			return fmt.Errorf("%w: group %q topic %q partition %d: stated holds offset %d, the partition ends at %d (%d of %d claimed partitions are past their end): "+
				"the topic was deleted and created again, or the brokers lost records they had acknowledged, and consuming from %d would skip the partition's records below it; the processor stops",
				ErrOffsetPastLogEnd, p.cfg.Group, c.Topic, c.Partition, c.Offset, end.Offset, len(past), len(claims), c.Offset)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pastEndInterval):
		}
	}
}

// fail stops Run with err (the first error given wins): it ends the poll
// that Run waits in, and Run returns err after it.
func (p *Processor) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fatal == nil {
		p.fatal = err
	}
	if p.pollCancel != nil {
		p.pollCancel()
	}
}

// failed is the error given to fail, if any.
func (p *Processor) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fatal
}
