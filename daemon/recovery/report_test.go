package recovery_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/uploader"
)

// TestReportCountsPartitionsTheCheckpointHoldsNoOffsetFor: a partition of
// a checkpointed topic that had no offset yet at the checkpoint (its
// first records came after) is consumed from its start after a restore:
// the report counts its records as replayed, and those retention deleted
// as lost, instead of leaving the partition out.
func TestReportCountsPartitionsTheCheckpointHoldsNoOffsetFor(t *testing.T) {
	ctx := testCtx(t)
	cl := kafkaTopic(t, 2, kgo.RecordPartitioner(kgo.ManualPartitioner()))
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
	cl := kafkaTopic(t, 1)
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

// TestReportOfACheckpointRetentionRemovedWhileItWasVerifiedDoesNotCallItDamaged:
// a report of a running cluster's latest checkpoint verifies for as long
// as reading its files takes; retention may remove the checkpoint, and GC
// its files, meanwhile. The report then says that the checkpoint is gone,
// instead of "NOT INTACT": nothing is damaged.
func TestReportOfACheckpointRetentionRemovedWhileItWasVerifiedDoesNotCallItDamaged(t *testing.T) {
	ctx := testCtx(t)
	bucket, _ := fileBucket(t)
	n := start(t, bucket, func(c *daemon.Config) {
		c.CheckpointRetain = 1
		c.CheckpointGCGrace = time.Nanosecond // every unreferenced blob is garbage at once
	})
	n.commit(ctx, t, 1, 1)
	e1 := n.checkpoint(ctx, t)
	up := openUploader(t, bucket)
	m1, err := up.Get(ctx, e1) // the report selected it
	if err != nil {
		t.Fatal(err)
	}
	n.commit(ctx, t, 1, 2)
	n.checkpoint(ctx, t) // and retention took it apart while it was verified
	if probs, err := up.Verify(ctx, m1); err != nil || len(probs) == 0 {
		t.Fatalf("checkpoint %d after retention: problems %v, %v; want files gone", e1, probs, err)
	}
	r, err := recovery.Build(ctx, up, m1, recovery.Options{Verify: true})
	if err == nil {
		t.Fatalf("report of checkpoint %d, which retention removed: intact %v, problems %v; want an error saying it was removed", e1, r.Intact, r.Problems)
	}
	if !errors.Is(err, uploader.ErrNotFound) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("report of checkpoint %d, which retention removed: %v; want ErrNotFound saying it was removed", e1, err)
	}
	// A savepoint is never removed by retention: its problems are real.
}
