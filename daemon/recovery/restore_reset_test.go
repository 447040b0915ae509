package recovery_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/statedhq/stated/daemon/recovery"
)

// TestRestoreLeavesNoKafkaOffsetAheadOfTheCheckpoint: rolling back to a
// checkpoint that holds no offset for partition 1 of t (it had no records
// then), while Kafka's group committed one since (a later checkpoint's),
// leaves Kafka's offset there ahead of the restored state, which reads
// the partition from its start: consumers and lag tools that read Kafka's
// offsets skip what stated replays. The restore removes it.
func TestRestoreLeavesNoKafkaOffsetAheadOfTheCheckpoint(t *testing.T) {
	ctx := testCtx(t)
	cl := kafkaTopic(t, 2)
	adm := kadm.NewClient(cl)
	bucket, _ := fileBucket(t)
	n := start(t, bucket)
	n.commit(ctx, t, 25, 25) // partition 0 only
	e := n.checkpoint(ctx, t)
	n.d.Close()
	// A later checkpoint's offsets, as the daemon committed them to Kafka.
	later := kadm.Offsets{}
	later.Add(kadm.Offset{Topic: "t", Partition: 0, At: 40, LeaderEpoch: -1})
	later.Add(kadm.Offset{Topic: "t", Partition: 1, At: 40, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, "g", later); err != nil {
		t.Fatal(err)
	}
	restoreAndStart(ctx, t, bucket, recovery.RestoreOptions{Select: recovery.Selector{Epoch: e}, Kafka: adm})
	fetched, err := adm.FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("t", 0); !ok || o.At != 25 {
		t.Errorf("Kafka's committed offset of t/0 = %+v, want the checkpoint's 25", o)
	}
	if o, ok := fetched.Lookup("t", 1); ok && o.At > 0 {
		t.Errorf("Kafka's committed offset of t/1 = %d after the restore of a checkpoint that holds none (stated reads it from its start)", o.At)
	}
}
