package kafka

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestBatchKeepsOnlyUncommittedRecordsOfOwnedPartitions checks what a
// poll's records become: a partition the processor no longer owns is
// left out, and records below a partition's next offset (committed
// already, from a fetch made before a rewind) are dropped, wherever they
// are in the fetch, without touching the fetch's own records.
func TestBatchKeepsOnlyUncommittedRecordsOfOwnedPartitions(t *testing.T) {
	t.Parallel()
	recs := func(offsets ...int64) []*kgo.Record {
		out := make([]*kgo.Record, len(offsets))
		for i, o := range offsets {
			out[i] = &kgo.Record{Topic: "t", Offset: o}
		}
		return out
	}
	offsets := func(rs []*kgo.Record) []int64 {
		out := make([]int64, len(rs))
		for i, r := range rs {
			out[i] = r.Offset
		}
		return out
	}
	fetched := map[int32][]*kgo.Record{
		0: recs(5, 6, 7, 8, 9), // next -1: no offset stored, all new
		1: recs(5, 6, 7, 8, 9), // next 7: 5 and 6 were committed
		2: recs(10, 11),        // next 3: all new
		3: recs(1, 2),          // not owned
		4: recs(4, 9, 5, 8),    // next 6: out of order, committed ones among new ones
	}
	p := &Processor{owned: map[topicPartition]*owned{
		{"t", 0}: {claim: stated.PartitionClaim{Epoch: 1}, next: -1},
		{"t", 1}: {next: 7},
		{"t", 2}: {next: 3},
		{"t", 4}: {next: 6},
	}}
	var ps []kgo.FetchPartition
	for part := range int32(5) {
		ps = append(ps, kgo.FetchPartition{Partition: part, Records: fetched[part]})
	}
	b := p.batch(kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: ps}}}})

	want := map[int32][]int64{0: {5, 6, 7, 8, 9}, 1: {7, 8, 9}, 2: {10, 11}, 4: {9, 8}}
	got := map[int32][]int64{}
	total := 0
	for _, pb := range b.parts {
		got[pb.tp.partition] = offsets(pb.records)
		total += len(pb.records)
	}
	if len(got) != len(want) {
		t.Fatalf("batch has partitions %v, want %v", got, want)
	}
	for part, w := range want {
		if g := got[part]; !slices.Equal(g, w) {
			t.Errorf("partition %d: records %v, want %v", part, g, w)
		}
	}
	if b.records != total {
		t.Errorf("batch counts %d records, holds %d", b.records, total)
	}
	if o := offsets(fetched[1]); !slices.Equal(o, []int64{5, 6, 7, 8, 9}) {
		t.Errorf("the fetch's own records changed to %v", o)
	}
	if o := offsets(fetched[4]); !slices.Equal(o, []int64{4, 9, 5, 8}) {
		t.Errorf("the fetch's own records changed to %v", o)
	}
}
