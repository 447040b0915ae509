package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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
func (p *Processor) checkLogBounds(ctx context.Context, claims []stated.PartitionClaim) ([]stated.PartitionClaim, error) {
	held := map[string]bool{}
	for _, c := range claims {
		if c.HasOffset {
			held[c.Topic] = true
		}
	}
	if len(held) == 0 {
		return claims, nil
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
		claims = p.skipDeleted(ctx, claims, starts)
	}
	past := claims
	for check := 1; ; check++ {
		ends, err := adm.ListEndOffsets(ctx, topics...)
		if err == nil {
			err = ends.Error()
		}
		if err != nil {
			p.logger.Warn("kafka: listing the log end of claimed partitions failed; not checked against stated's offsets", "group", p.cfg.Group, "error", err)
			return claims, nil
		}
		past = slices.DeleteFunc(slices.Clone(past), func(c stated.PartitionClaim) bool {
			end, ok := ends.Lookup(c.Topic, c.Partition)
			return !c.HasOffset || !ok || c.Offset <= end.Offset
		})
		if len(past) == 0 {
			return claims, nil
		}
		if check == pastEndChecks {
			c := past[0]
			end, _ := ends.Lookup(c.Topic, c.Partition)
			return nil, fmt.Errorf("%w: group %q topic %q partition %d: stated holds offset %d, the partition ends at %d (%d of %d claimed partitions are past their end): "+
				"the topic was deleted and created again, or the brokers lost records they had acknowledged, and consuming from %d would skip the partition's records below it; the processor stops",
				ErrOffsetPastLogEnd, p.cfg.Group, c.Topic, c.Partition, c.Offset, end.Offset, len(past), len(claims), c.Offset)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pastEndInterval):
		}
	}
}

// skipDeleted reports the records below the log start (starts) of the
// claims whose offsets point there: Kafka deleted them before this group
// processed them. It logs each partition's gap and counts it
// (Stats.Lost), and moves the partition's offset in stated up to the log
// start, where the processor goes on, so that the next claim of the
// partition does not report the same gap again. It returns the claims
// with their new offsets; one whose move failed keeps its old offset (the
// Kafka client starts at the log start all the same).
func (p *Processor) skipDeleted(ctx context.Context, claims []stated.PartitionClaim, starts kadm.ListedOffsets) []stated.PartitionClaim {
	out := slices.Clone(claims)
	txn := p.cfg.State.Txn()
	var moved []int
	for i, c := range out {
		start, ok := starts.Lookup(c.Topic, c.Partition)
		if !c.HasOffset || !ok || c.Offset >= start.Offset {
			continue
		}
		lost := start.Offset - c.Offset
		p.waits.lost(lost)
		p.logger.Warn("kafka: records deleted by Kafka before this group processed them are lost for good: stated's offset is below the partition's log start (retention or DeleteRecords); processing goes on from the log start",
			"group", p.cfg.Group, "topic", c.Topic, "partition", c.Partition, "stated_offset", c.Offset, "log_start", start.Offset, "lost", lost)
		txn.CommitClaimedOffset(p.cfg.Group, c, start.Offset)
		moved = append(moved, i)
	}
	if len(moved) == 0 {
		return claims
	}
	p.waits.enter(WaitStatedCommit, "commit of the log start as the offset of partitions whose records Kafka deleted, unanswered (the client retries while stated is unavailable)")
	_, err := txn.Commit(ctx)
	p.waits.leave(WaitStatedCommit)
	if err != nil {
		p.logger.Warn("kafka: moving stated's offset up to the log start failed; the next claim reports the same deleted records again", "group", p.cfg.Group, "partitions", len(moved), "error", err)
		return claims
	}
	for _, i := range moved {
		start, _ := starts.Lookup(out[i].Topic, out[i].Partition)
		out[i].Offset = start.Offset
	}
	return out
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

// clientLogger is the Kafka client's logger: its warnings and errors go
// to Config.Logger, prefixed "kafka client:". When the client moves a
// partition to its log start because the records it was consuming were
// deleted under it (retention overtook the processor), it reports no
// error to the poll, only this warning: the partition is marked with the
// offset the client was fetching (prior_offset), and batch counts the gap
// at its first record at or past that offset (records fetched before the
// reset may still come first).
type clientLogger struct{ p *Processor }

// offsetOutOfRangeWhileConsuming begins the Kafka client's (franz-go
// v1.22) warning when it resets a partition it was consuming.
const offsetOutOfRangeWhileConsuming = "received OFFSET_OUT_OF_RANGE while consuming"

func (l clientLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if strings.HasPrefix(msg, offsetOutOfRangeWhileConsuming) {
		var tp topicPartition
		var prior int64
		for i := 0; i+1 < len(keyvals); i += 2 {
			switch keyvals[i] {
			case "topic":
				tp.topic, _ = keyvals[i+1].(string)
			case "partition":
				tp.partition, _ = keyvals[i+1].(int32)
			case "prior_offset":
				prior, _ = keyvals[i+1].(int64)
			}
		}
		l.p.mu.Lock()
		l.p.resets[tp] = prior
		l.p.mu.Unlock()
	}
	attrs := append([]any{"group", l.p.cfg.Group}, keyvals...)
	switch level {
	case kgo.LogLevelError:
		l.p.logger.Error("kafka client: "+msg, attrs...)
	case kgo.LogLevelWarn:
		l.p.logger.Warn("kafka client: "+msg, attrs...)
	}
}
