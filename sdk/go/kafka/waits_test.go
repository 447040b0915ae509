package kafka

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// recorder keeps the records logged through it.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

// count returns how many records have msg and every attribute of attrs
// (compared as strings).
func (r *recorder) count(msg string, attrs map[string]string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		got := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool { got[a.Key] = a.Value.String(); return true })
		match := true
		for k, v := range attrs {
			if !strings.Contains(got[k], v) {
				match = false
			}
		}
		if match {
			n++
		}
	}
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
	}
}

// testProcessor is a Processor with no Kafka client: enough for the
// bookkeeping of waits.
func testProcessor(interval time.Duration) (*Processor, *recorder) {
	rec := &recorder{}
	return &Processor{
		cfg:         Config{Group: "g", WaitLogInterval: interval},
		logger:      slog.New(rec),
		owned:       map[topicPartition]*owned{},
		fencedParts: map[topicPartition]fencedPart{},
		waits:       newWaits(),
	}, rec
}

func TestFencedPartitionsAreReportedUntilKafkaMovesThem(t *testing.T) {
	t.Parallel()
	p, logs := testProcessor(50 * time.Millisecond)
	stop := p.startWatch()
	defer stop()

	p.mu.Lock()
	p.fencedParts[topicPartition{"events", 3}] = fencedPart{}
	p.fencedParts[topicPartition{"events", 1}] = fencedPart{}
	p.updateFencedWait()
	p.mu.Unlock()

	s := p.Stats()
	if want := []stated.TopicPartition{{Topic: "events", Partition: 1}, {Topic: "events", Partition: 3}}; !slices.Equal(s.Fenced, want) {
		t.Fatalf("Fenced = %v, want %v", s.Fenced, want)
	}
	w, ok := s.Oldest()
	if !ok || w.Kind != WaitKafkaReassign || !w.Kind.OnKafka() || !strings.Contains(w.Detail, "events/1, events/3") {
		t.Fatalf("oldest wait = %+v, want %s naming events/1 and events/3", w, WaitKafkaReassign)
	}
	waitUntil(t, "two warnings about the fenced partitions", func() bool {
		return logs.count("kafka: processor waiting", map[string]string{"waiting_on": "kafka_reassign", "side": "kafka", "detail": "events/1, events/3"}) >= 2
	})

	// Kafka revokes the partitions (drop), or assigns them again.
	p.mu.Lock()
	clear(p.fencedParts)
	p.updateFencedWait()
	p.mu.Unlock()
	if s := p.Stats(); len(s.Waiting) != 0 || len(s.Fenced) != 0 {
		t.Fatalf("after the reassignment: %+v, want no wait and nothing fenced", s)
	}
	waitUntil(t, "the end of the wait logged", func() bool {
		return logs.count("kafka: processor no longer waiting", map[string]string{"waiting_on": "kafka_reassign"}) == 1
	})
}

func TestWaitsKeepTheirStartAndListOldestFirst(t *testing.T) {
	t.Parallel()
	p, _ := testProcessor(-1)
	p.waits.begin(WaitKafkaGroup, "JoinGroup sent")
	first := p.Stats().Waiting[0].Since
	waitUntil(t, "the clock to move", func() bool { return time.Since(first) > 0 })
	p.waits.begin(WaitStatedCommit, "commit of 3 records")
	p.waits.begin(WaitKafkaGroup, "SyncGroup sent") // the same wait goes on
	p.waits.detail(WaitStatedClaim, "not on: ignored")

	s := p.Stats()
	if kinds := []WaitKind{s.Waiting[0].Kind, s.Waiting[1].Kind}; len(s.Waiting) != 2 || !slices.Equal(kinds, []WaitKind{WaitKafkaGroup, WaitStatedCommit}) {
		t.Fatalf("waits %+v, want the group wait then the commit", s.Waiting)
	}
	if g := s.Waiting[0]; !g.Since.Equal(first) || g.Detail != "SyncGroup sent" {
		t.Fatalf("group wait %+v, want its first start %v and the new detail", g, first)
	}
	if WaitStatedCommit.OnKafka() || !WaitKafkaGroup.OnKafka() {
		t.Fatal("OnKafka sides are wrong")
	}
	p.waits.end(WaitKafkaGroup)
	p.waits.committed(3)
	s = p.Stats()
	if len(s.Waiting) != 1 || s.Waiting[0].Kind != WaitStatedCommit || s.Batches != 1 || s.Records != 3 || s.LastCommit.IsZero() {
		t.Fatalf("stats %+v, want the commit wait alone and one batch of 3", s)
	}
}

// TestAWaitOfTwoOverlappingCallsLastsUntilBothReturn: a claim of assigned
// partitions (franz-go's goroutine) and a claim of fenced ones again (the
// poll loop) can be in flight at once; the first to return must not take
// the other's wait out of Stats and the wait log.
func TestAWaitOfTwoOverlappingCallsLastsUntilBothReturn(t *testing.T) {
	t.Parallel()
	w := newWaits()
	w.enter(WaitStatedClaim, "claim of 2 assigned partitions")
	since := w.snapshot().Waiting[0].Since
	w.enter(WaitStatedClaim, "claim of 1 fenced partition")
	w.leave(WaitStatedClaim)
	s := w.snapshot()
	if len(s.Waiting) != 1 || s.Waiting[0].Kind != WaitStatedClaim || !s.Waiting[0].Since.Equal(since) {
		t.Fatalf("with one of two claims still in flight, Stats waits for %v; want the claim since %v", s.Waiting, since)
	}
	w.leave(WaitStatedClaim)
	if s := w.snapshot(); len(s.Waiting) != 0 {
		t.Fatalf("with both claims answered, Stats still waits for %v", s.Waiting)
	}
	w.enter(WaitStatedClaim, "a later claim")
	if s := w.snapshot(); len(s.Waiting) != 1 {
		t.Fatalf("a claim after both: Stats waits for %v", s.Waiting)
	}
}
