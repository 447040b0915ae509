package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrTopicRecreated is what Run returns when Kafka keeps answering that it
// does not know the id of a topic the processor consumes
// (UNKNOWN_TOPIC_ID) for unknownTopicIDFor: the topic was deleted, and
// maybe created again under the same name with a new id, which the Kafka
// client does not follow. The processor stops rather than poll in vain;
// started again, it consumes the topic as it is then, and stops with
// ErrOffsetPastLogEnd if stated's offsets are past its partitions' ends.
var ErrTopicRecreated = errors.New("kafka: a consumed topic was deleted or recreated (Kafka no longer knows its id)")

const (
	// unknownTopicIDFor is how long a topic's fetches may fail with
	// UNKNOWN_TOPIC_ID before Run stops with ErrTopicRecreated; a
	// broker that has not heard of a new topic yet answers so briefly.
	unknownTopicIDFor = 10 * time.Second
	// unknownTopicIDQuiet ends a spell of UNKNOWN_TOPIC_ID errors: two
	// brief ones further apart are not one that lasts.
	unknownTopicIDQuiet = 3 * time.Second
	// fetchErrorLogEvery is how often one kind of fetch error of one
	// partition is logged while it repeats.
	fetchErrorLogEvery = 5 * time.Second
	// maxFetchBackoff bounds Run's pause after a poll that brought fetch
	// errors and no records.
	maxFetchBackoff = time.Second
	// maxFetchErrorKeys bounds the memory of which fetch errors were
	// logged when.
	maxFetchErrorKeys = 1024
)

// unknownTopicID is a spell of UNKNOWN_TOPIC_ID fetch errors of a topic:
// the first and the last.
type unknownTopicID struct{ first, last time.Time }

// fetchErrorLog is when one kind of fetch error of one partition was last
// logged, and how many times it came since.
type fetchErrorLog struct {
	at         time.Time
	suppressed int
}

// fetchErrors handles the errors franz-go injected into fetches (Run's
// goroutine only). It returns the error that consuming cannot go on from
// (the client was closed, fail was called, a topic's id has been unknown
// for unknownTopicIDFor), and whether any partition's fetch failed. Other
// errors are logged, each kind of each partition at most every
// fetchErrorLogEvery, and consuming goes on; while fetches fail and bring
// no records, Stats shows WaitKafkaFetch.
func (p *Processor) fetchErrors(fetches kgo.Fetches) (failing bool, err error) {
	if err := p.failed(); err != nil {
		return true, err
	}
	now := time.Now()
	var first kgo.FetchError
	for _, fe := range fetches.Errors() {
		switch {
		case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, context.DeadlineExceeded):
			continue
		case errors.Is(fe.Err, kgo.ErrClientClosed):
			return true, fmt.Errorf("kafka: %w", fe.Err)
		}
		failing = true
		if fe.Topic != "" && first.Err == nil {
			first = fe
		}
		var loss *kgo.ErrDataLoss
		switch {
		case errors.As(fe.Err, &loss):
			lost := loss.ResetTo - loss.ConsumedTo
			if lost > 0 {
				p.waits.lost(lost)
			}
			p.logger.Warn("kafka: data loss: the brokers no longer hold records where this processor was consuming (an unclean leader election, a truncated log), and the Kafka client moved on",
				"group", p.cfg.Group, "topic", fe.Topic, "partition", fe.Partition, "consumed_to", loss.ConsumedTo, "reset_to", loss.ResetTo, "lost", max(lost, 0), "error", fe.Err)
			continue
		case errors.Is(fe.Err, kerr.UnknownTopicID):
			// Not every poll brings the error back: the client spaces
			// its fetches. The spell ends with a quiet
			// unknownTopicIDQuiet or the topic's records.
			u, ok := p.unknownTopicIDs[fe.Topic]
			if !ok || now.Sub(u.last) > unknownTopicIDQuiet {
				u.first = now
			}
			u.last = now
			p.unknownTopicIDs[fe.Topic] = u
			if now.Sub(u.first) >= unknownTopicIDFor {
				return true, fmt.Errorf("%w: group %q topic %q partition %d: fetches have failed with %v for %s: the topic was deleted, and maybe created again under its name (a new topic id, which the Kafka client does not follow); the processor stops",
					ErrTopicRecreated, p.cfg.Group, fe.Topic, fe.Partition, fe.Err, now.Sub(u.first).Round(time.Second))
			}
		}
		p.logFetchError(now, fe)
	}
	if len(p.unknownTopicIDs) > 0 {
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) > 0 {
				delete(p.unknownTopicIDs, ftp.Topic)
			}
		})
	}
	// An error without a topic is the group's (franz-go joins again; the
	// wait is WaitKafkaGroup's).
	switch {
	case first.Err != nil && fetches.NumRecords() == 0:
		p.waits.begin(WaitKafkaFetch, fmt.Sprintf("fetches fail and bring no records; topic %s partition %d: %v", first.Topic, first.Partition, first.Err))
	default:
		p.waits.end(WaitKafkaFetch)
	}
	return failing, nil
}

// logFetchError logs fe as a warning, unless the same kind of error of
// the same partition was logged less than fetchErrorLogEvery ago; the
// next line that is logged says how many were not.
func (p *Processor) logFetchError(now time.Time, fe kgo.FetchError) {
	key := fmt.Sprintf("%s\x00%d\x00%v", fe.Topic, fe.Partition, fe.Err)
	l, ok := p.fetchErrorLogs[key]
	if ok && now.Sub(l.at) < fetchErrorLogEvery {
		l.suppressed++
		p.fetchErrorLogs[key] = l
		return
	}
	if len(p.fetchErrorLogs) >= maxFetchErrorKeys {
		// Forget the oldest half.
		keys := make([]string, 0, len(p.fetchErrorLogs))
		for k := range p.fetchErrorLogs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return p.fetchErrorLogs[a].at.Compare(p.fetchErrorLogs[b].at) })
		for _, k := range keys[:len(keys)/2] {
			delete(p.fetchErrorLogs, k)
		}
	}
	p.fetchErrorLogs[key] = fetchErrorLog{at: now}
	attrs := []any{"group", p.cfg.Group, "topic", fe.Topic, "partition", fe.Partition, "error", fe.Err}
	if l.suppressed > 0 {
		attrs = append(attrs, "not_logged_since_last", l.suppressed)
	}
	what := "kafka: fetch error; the Kafka client retries"
	switch {
	case fe.Topic == "":
		what = "kafka: group error; the Kafka client joins the group again"
	case errors.Is(fe.Err, kerr.UnknownTopicID):
		what = fmt.Sprintf("kafka: fetch error: Kafka does not know the topic's id (the topic was deleted, or deleted and created again); the processor stops if it lasts %s", unknownTopicIDFor)
	}
	p.logger.Warn(what, attrs...)
}
