package kafka

import (
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAResetsGapIsCountedPastTheRecordsFetchedBeforeIt: the Kafka client
// warns that it moved a partition to its log start (the records at the
// offset it was fetching were deleted) possibly before the processor has
// polled the records it fetched before that. Those come first and are not
// the gap; the gap is counted at the first record at or past the offset
// the client was fetching. It was once counted at the next records,
// buffered ones included, and then not at all.
func TestAResetsGapIsCountedPastTheRecordsFetchedBeforeIt(t *testing.T) {
	tp := topicPartition{"events", 0}
	p := &Processor{logger: slog.New(slog.DiscardHandler), waits: newWaits(),
		owned: map[topicPartition]*owned{tp: {next: 1}}, resets: map[topicPartition]int64{}}
	clientLogger{p}.Log(kgo.LogLevelWarn, offsetOutOfRangeWhileConsuming+"; either you were consuming too slowly",
		"broker", "0", "topic", "events", "partition", int32(0), "prior_offset", int64(2))
	poll := func(offsets ...int64) int {
		t.Helper()
		var recs []*kgo.Record
		for _, o := range offsets {
			recs = append(recs, &kgo.Record{Topic: tp.topic, Partition: tp.partition, Offset: o})
		}
		b := p.batch(kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: tp.topic, Partitions: []kgo.FetchPartition{{Partition: tp.partition, Records: recs}}}}}})
		if len(recs) > 0 {
			p.owned[tp].next = recs[len(recs)-1].Offset + 1 // committed
		}
		return b.records
	}

	if n := poll(1); n != 1 { // fetched before the reset
		t.Fatalf("the record fetched before the reset: %d records in the batch, want 1", n)
	}
	if lost := p.waits.snapshot().Lost; lost != 0 {
		t.Fatalf("after the record fetched before the reset, Lost = %d, want 0", lost)
	}
	if n := poll(40, 41); n != 2 {
		t.Fatalf("the records after the reset: %d in the batch, want 2", n)
	}
	if lost := p.waits.snapshot().Lost; lost != 38 {
		t.Fatalf("Lost = %d, want 38 (offsets 2 to 39, deleted)", lost)
	}
	if poll(42); p.waits.snapshot().Lost != 38 {
		t.Fatalf("Lost = %d after the next records, want the gap counted once (38)", p.waits.snapshot().Lost)
	}
}
