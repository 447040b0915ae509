package recovery_test

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/recovery"
)

// TestReportCountsPartitionsTheCheckpointHoldsNoOffsetFor: a partition of
// a checkpointed topic that had no offset yet at the checkpoint (its
// first records came after) is consumed from its start after a restore:
// the report counts its records as replayed, and those retention deleted
// as lost, instead of leaving the partition out.
func TestReportCountsPartitionsTheCheckpointHoldsNoOffsetFor(t *testing.T) {
	ctx := testCtx(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("t"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < 150; i++ {
		recs = append(recs, &kgo.Record{Partition: int32(i % 3 / 2), Value: []byte("x")}) // 100 to partition 0, 50 to 1
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bucket, _ := fileBucket(t)
	n := start(t, bucket)
	n.commit(ctx, t, 30, 30) // partition 0 only
	e := n.checkpoint(ctx, t)
	adm := kadm.NewClient(cl)
	dels := kadm.Offsets{}
	dels.Add(kadm.Offset{Topic: "t", Partition: 1, At: 20})
	if _, err := adm.DeleteRecords(ctx, dels); err != nil {
		t.Fatal(err)
	}
	up := openUploader(t, bucket)
	m, err := up.Get(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	r, err := recovery.Build(ctx, up, m, recovery.Options{Kafka: adm})
	if err != nil {
		t.Fatal(err)
	}
	if !r.KafkaChecked || len(r.Partitions) != 2 {
		t.Fatalf("report = %+v; want partitions 0 and 1 of t", r.Partitions)
	}
	p0, p1 := r.Partitions[0], r.Partitions[1]
	if p0.Partition != 0 || p0.CheckpointOffset != 30 || p0.Replay != 70 || p0.Lost != 0 {
		t.Errorf("partition 0 = %+v; want checkpoint 30, 70 replayed, none lost", p0)
	}
	if p1.Partition != 1 || p1.CheckpointOffset != recovery.NoOffset || p1.LogStart != 20 || p1.LogEnd != 50 || p1.Replay != 30 || p1.Lost != 20 {
		t.Errorf("partition 1 = %+v; want no checkpoint offset, log 20..50, 30 replayed, 20 lost", p1)
	}
	if r.Replay != 100 || r.Lost != 20 {
		t.Errorf("report: replay %d, lost %d; want 100 and 20", r.Replay, r.Lost)
	}
}

// TestReportDoesNotCountAPartitionWhoseLogEndsBeforeTheCheckpointsOffset:
// a checkpoint's offset past Kafka's log end means the log the checkpoint
// read is not the one Kafka holds (the topic was deleted and created
// again, or its log truncated): what the records after the offset were,
// and what a restored consumer reads (it resets), the report cannot say.
// It says so instead of counting nothing replayed and nothing lost.
func TestReportDoesNotCountAPartitionWhoseLogEndsBeforeTheCheckpointsOffset(t *testing.T) {
	ctx := testCtx(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 10) // the topic as Kafka holds it now
	for i := range recs {
		recs[i] = &kgo.Record{Value: []byte("x")}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	bucket, _ := fileBucket(t)
	n := start(t, bucket)
	n.commit(ctx, t, 30, 30) // 30 records of the topic as it was
	e := n.checkpoint(ctx, t)
	up := openUploader(t, bucket)
	m, err := up.Get(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	r, err := recovery.Build(ctx, up, m, recovery.Options{Kafka: kadm.NewClient(cl)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Partitions) != 1 {
		t.Fatalf("report = %+v", r.Partitions)
	}
	if p := r.Partitions[0]; p.Error == "" || !strings.Contains(p.Error, "past") {
		t.Errorf("partition = %+v; want an error saying the checkpoint's offset 30 is past the log end 10", p)
	}
}
