package kafka

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	stated "github.com/statedhq/stated/sdk/go"
)

// WaitKind names what a Processor waits for. A kind that starts with
// "kafka_" waits on the Kafka cluster (its group coordinator); one that
// starts with "stated_" waits on stated. Either side's stall shows as its
// own kinds, in Stats and in the processor's log.
type WaitKind string

const (
	// WaitKafkaGroup: joining the consumer group, from the first
	// JoinGroup (or the error that ended the last group session) until
	// Kafka hands out the assignment. The group coordinator decides how
	// long it lasts: it waits for every member to join again, at most
	// the rebalance timeout. Detail names the request in flight.
	WaitKafkaGroup WaitKind = "kafka_group"
	// WaitKafkaReassign: partitions that stated fenced (another
	// processor claimed them since), paused until Kafka revokes them
	// from this member or assigns them to it again, or until the
	// processor claims them again (Config.ReclaimFencedAfter).
	WaitKafkaReassign WaitKind = "kafka_reassign"
	// WaitKafkaFetch: fetches fail and bring no records (a partition
	// whose leader is unavailable, an authorization error, a topic that
	// was deleted); Detail names the first failing partition and its
	// error. The Kafka client retries; polls back off meanwhile.
	WaitKafkaFetch WaitKind = "kafka_fetch"
	// WaitKafkaOffsetCommit: committing the checkpointed offsets to the
	// Kafka group (Config.KafkaCommitInterval).
	WaitKafkaOffsetCommit WaitKind = "kafka_offset_commit"
	// WaitStatedClaim: claiming newly assigned partitions (or fenced
	// ones again) in stated. The client retries while stated is
	// unavailable.
	WaitStatedClaim WaitKind = "stated_claim"
	// WaitStatedCommit: committing a batch to stated. The client retries
	// while stated is unavailable.
	WaitStatedCommit WaitKind = "stated_commit"
	// WaitStatedRead: reading the newest checkpoint's offsets from stated
	// before committing them to Kafka.
	WaitStatedRead WaitKind = "stated_read"
)

// OnKafka reports whether k waits on the Kafka cluster, not on stated.
func (k WaitKind) OnKafka() bool { return strings.HasPrefix(string(k), "kafka_") }

// Wait is one thing a Processor waits for.
type Wait struct {
	Kind WaitKind
	// Since is when the wait began.
	Since time.Time
	// Detail says more: the group request in flight, the size of the
	// batch being committed, the fenced partitions.
	Detail string
}

// Stats is a snapshot of a Processor, for logs, metrics and tests.
type Stats struct {
	// Waiting lists what the processor waits for now, oldest first; it
	// is empty while the processor processes records or has none.
	Waiting []Wait
	// Owned is the number of partitions the processor consumes: assigned
	// by Kafka and claimed in stated.
	Owned int
	// Fenced lists the partitions stated fenced, which the processor
	// no longer consumes (see WaitKafkaReassign).
	Fenced []stated.TopicPartition
	// Batches and Records count the batches committed to stated and the
	// records in them; LastCommit is when the last one committed.
	Batches, Records int64
	LastCommit       time.Time
	// Emissions counts the window emissions delivered to OnWindowClosed
	// callbacks whose transactions committed (acknowledging them).
	Emissions int64
	// Lost counts records this processor never processed because Kafka
	// had deleted them first (retention, DeleteRecords): at a claim, the
	// records between the offset stated holds and the partition's log
	// start (stated's offset is then moved up to the log start, so a gap
	// is counted once); while consuming, those the Kafka client skipped
	// when it moved to the log start because the records it was
	// consuming were deleted. Each gap is logged as a warning naming the
	// partition.
	Lost int64
	// Assignments counts the group assignments Kafka handed out to this
	// member (the ends of its rebalances).
	Assignments int64
	// GroupError is the error that ended the last group session, until
	// the next assignment.
	GroupError string
}

// Oldest returns the wait that began first, if any.
func (s Stats) Oldest() (Wait, bool) {
	if len(s.Waiting) == 0 {
		return Wait{}, false
	}
	return s.Waiting[0], true
}

// Stats returns a snapshot of what the processor does and waits for.
func (p *Processor) Stats() Stats {
	s := p.waits.snapshot()
	p.mu.Lock()
	s.Owned = len(p.owned)
	for tp := range p.fencedParts {
		s.Fenced = append(s.Fenced, stated.TopicPartition{Topic: tp.topic, Partition: tp.partition})
	}
	p.mu.Unlock()
	slices.SortFunc(s.Fenced, func(a, b stated.TopicPartition) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition) - int(b.Partition)
	})
	return s
}

// waits tracks what the processor waits for, and its counters.
type waits struct {
	mu  sync.Mutex
	now map[WaitKind]Wait
	// calls counts the calls of each kind entered and not left (enter,
	// leave): two can overlap (a claim of assigned partitions on
	// franz-go's goroutine while the poll loop claims fenced ones again),
	// and the first to return must not end the other's wait.
	calls map[WaitKind]int
	stats Stats // the counters; Waiting is built by snapshot
}

func newWaits() *waits { return &waits{now: map[WaitKind]Wait{}, calls: map[WaitKind]int{}} }

// enter starts a wait of kind for a call, as begin does; the wait ends
// when every call entered has left.
func (w *waits) enter(kind WaitKind, detail string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.beginLocked(kind, detail)
	w.calls[kind]++
}

// leave ends a call's wait of kind, and the wait once no other call of
// its kind is on.
func (w *waits) leave(kind WaitKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.calls[kind]--; w.calls[kind] > 0 {
		return
	}
	delete(w.calls, kind)
	delete(w.now, kind)
}

// begin starts a wait of kind, or updates the detail of the one that is
// on, keeping when it began.
func (w *waits) begin(kind WaitKind, detail string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.beginLocked(kind, detail)
}

func (w *waits) beginLocked(kind WaitKind, detail string) {
	cur, ok := w.now[kind]
	if !ok {
		cur = Wait{Kind: kind, Since: time.Now()}
	}
	cur.Detail = detail
	w.now[kind] = cur
}

// detail updates the detail of a wait that is on, and does nothing
// otherwise.
func (w *waits) detail(kind WaitKind, detail string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.now[kind]; ok {
		cur.Detail = detail
		w.now[kind] = cur
	}
}

func (w *waits) end(kind WaitKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.now, kind)
}

func (w *waits) committed(records int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Batches++
	w.stats.Records += int64(records)
	w.stats.LastCommit = time.Now()
}

func (w *waits) lost(records int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Lost += records
}

func (w *waits) delivered(emissions int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Emissions += int64(emissions)
}

func (w *waits) snapshot() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	for _, wt := range w.now {
		s.Waiting = append(s.Waiting, wt)
	}
	slices.SortFunc(s.Waiting, func(a, b Wait) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(string(a.Kind), string(b.Kind))
	})
	return s
}

// groupHooks follow the consumer group protocol for WaitKafkaGroup:
// franz-go does not tell when it joins, so its JoinGroup and SyncGroup
// requests, and the errors that end its group sessions, do.
type groupHooks struct{ w *waits }

var (
	_ kgo.HookBrokerWrite      = groupHooks{}
	_ kgo.HookBrokerE2E        = groupHooks{}
	_ kgo.HookGroupManageError = groupHooks{}

	groupRequestNames = map[int16]string{kmsg.JoinGroup.Int16(): "JoinGroup", kmsg.SyncGroup.Int16(): "SyncGroup"}
)

func (h groupHooks) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	name, ok := groupRequestNames[key]
	if !ok {
		return
	}
	if err != nil {
		h.w.begin(WaitKafkaGroup, fmt.Sprintf("%s to broker %d could not be sent: %v", name, meta.NodeID, err))
		return
	}
	h.w.begin(WaitKafkaGroup, fmt.Sprintf("%s sent to broker %d (%s:%d), no answer yet", name, meta.NodeID, meta.Host, meta.Port))
}

func (h groupHooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	name, ok := groupRequestNames[key]
	if !ok {
		return
	}
	if err := e2e.Err(); err != nil {
		h.w.detail(WaitKafkaGroup, fmt.Sprintf("%s to broker %d failed after %s: %v", name, meta.NodeID, e2e.DurationE2E().Round(time.Millisecond), err))
		return
	}
	detail := fmt.Sprintf("%s answered by broker %d after %s", name, meta.NodeID, e2e.DurationE2E().Round(time.Millisecond))
	if key == kmsg.SyncGroup.Int16() {
		// franz-go hands out the assignment between two batches: a wait
		// that stays here waits for the batch in flight (see the other
		// waits), or joins again if the answer was an error.
		detail += "; handing out the assignment once no batch is in flight"
	}
	h.w.detail(WaitKafkaGroup, detail)
}

func (h groupHooks) OnGroupManageError(err error) {
	h.w.begin(WaitKafkaGroup, fmt.Sprintf("group session ended: %v; joining again", err))
	h.w.mu.Lock()
	h.w.stats.GroupError = err.Error()
	h.w.mu.Unlock()
}

// onAssignedDone ends WaitKafkaGroup: franz-go calls it at the end of
// every rebalance, whatever the member was assigned.
func (p *Processor) onAssignedDone(context.Context, *kgo.Client, map[string][]int32) {
	p.waits.end(WaitKafkaGroup)
	p.waits.mu.Lock()
	p.waits.stats.Assignments++
	p.waits.stats.GroupError = ""
	p.waits.mu.Unlock()
}

// startWatch runs watchWaits until the returned function is called.
func (p *Processor) startWatch() (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		p.watchWaits(p.cfg.WaitLogInterval, done)
	}()
	return func() { close(done); <-stopped }
}

// watchWaits logs, every interval while it lasts, each wait that has
// lasted an interval, and that it ended once it has. It returns when
// done is closed.
func (p *Processor) watchWaits(interval time.Duration, done <-chan struct{}) {
	if interval < 0 {
		return
	}
	type key struct {
		kind  WaitKind
		since time.Time
	}
	logged := map[key]time.Time{} // when each wait was last logged
	tick := time.NewTicker(max(interval/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		now := time.Now()
		on := map[key]bool{}
		for _, w := range p.waits.snapshot().Waiting {
			k := key{w.Kind, w.Since}
			on[k] = true
			last, ok := logged[k]
			if now.Sub(w.Since) < interval || ok && now.Sub(last) < interval {
				continue
			}
			logged[k] = now
			p.logger.Warn("kafka: processor waiting", "group", p.cfg.Group, "waiting_on", string(w.Kind),
				"side", side(w.Kind), "for", now.Sub(w.Since).Round(time.Millisecond), "detail", w.Detail)
		}
		for k := range logged {
			if !on[k] {
				delete(logged, k)
				// At the warning's level: whoever saw the warning sees its end.
				p.logger.Warn("kafka: processor no longer waiting", "group", p.cfg.Group, "waiting_on", string(k.kind),
					"side", side(k.kind), "after", now.Sub(k.since).Round(time.Millisecond))
			}
		}
	}
}

func side(k WaitKind) string {
	if k.OnKafka() {
		return "kafka"
	}
	return "stated"
}

// fencedDetail lists fenced partitions for WaitKafkaReassign; p.mu held.
func (p *Processor) fencedDetail() string {
	parts := make([]string, 0, len(p.fencedParts))
	for tp := range p.fencedParts {
		parts = append(parts, fmt.Sprintf("%s/%d", tp.topic, tp.partition))
	}
	slices.Sort(parts)
	return "fenced by stated, paused until Kafka revokes or reassigns them: " + strings.Join(parts, ", ")
}

// updateFencedWait starts, updates or ends WaitKafkaReassign to match
// p.fencedParts; p.mu held.
func (p *Processor) updateFencedWait() {
	if len(p.fencedParts) == 0 {
		p.waits.end(WaitKafkaReassign)
		return
	}
	p.waits.begin(WaitKafkaReassign, p.fencedDetail())
}
