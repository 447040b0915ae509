package kafka

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/daemon/recovery"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// TestAProcessorUpThroughARestoreStopsAndANewOneCountsWhatTheRestoreDropped:
// a processor counts 10 records, the node checkpoints, the processor
// counts 10 more, and the node is lost and restored from the checkpoint
// on the same address while the processor stays up (its Client keeps
// committing to the restored cluster, which continues its lineage). The
// restored state holds the checkpoint's count and offset (10). The
// restore released every claim, so the processor's next commit is fenced
// and Run returns ErrClaimReleased instead of going on from its own
// position (20), which would skip the 10 records the restore dropped. A
// processor started again claims from the restored offset, and every
// record counts once: 30.
func TestAProcessorUpThroughARestoreStopsAndANewOneCountsWhatTheRestoreDropped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	sockDir, err := os.MkdirTemp("", "stated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "s.sock")
	withBucket := func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain, c.SocketPath = bucket, 0, 10, sock
	}
	d1 := daemontest.Start(t, withBucket)

	kc := newEvents(t, 1)
	produce := func(n int) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Value: []byte("e")}
		}
		for _, r := range cl.ProduceSync(ctx, recs...) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}

	c, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	check, err := stated.Dial(ctx, "unix://"+sock, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	counts := stated.NewCounter(c, "counts")
	cfg := Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions:        testKafkaOptions(kc),
		KafkaCommitInterval: -1,
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add("n", 1)
			return nil
		},
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()

	offset := func() (int64, error) {
		g, err := check.GetGroup(ctx, "g", stated.WithConsistency(stated.ConsistencyLinearizable))
		if err != nil {
			return 0, err
		}
		for _, o := range g.Offsets {
			if o.Topic == "events" && o.Partition == 0 {
				return o.Offset, nil
			}
		}
		return 0, nil
	}
	waitOffset := func(want int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the group's offset %d", want), func() (bool, error) {
			o, err := offset()
			if err != nil {
				return false, nil // the node may be coming back
			}
			return o == want, nil
		})
	}

	produce(10)
	waitOffset(10)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := statedv1.NewCheckpointsClient(conn).Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	produce(10)
	waitOffset(20) // lost with the node: the checkpoint holds 10

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := uploader.OpenBucket(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	up, err := uploader.New(uploader.Config{Bucket: b})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := recovery.Restore(ctx, recovery.RestoreOptions{Uploader: up, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	daemontest.Start(t, withBucket, func(c *daemon.Config) { c.DataDir, c.NodeID = dir, "restored" })
	if o, err := offset(); err != nil || o != 10 {
		t.Fatalf("the restored offset is %d (%v), want the checkpoint's 10", o, err)
	}

	produce(10)
	select {
	case err := <-ran:
		if !errors.Is(err, ErrClaimReleased) {
			t.Fatalf("the processor that stayed up through the restore: Run returned %v, want ErrClaimReleased", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the processor that stayed up through the restore is still running a minute after new records came")
	}
	if o, err := offset(); err != nil || o != 10 {
		t.Fatalf("the offset after the refused commit is %d (%v), want the restored 10", o, err)
	}
	p, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	waitOffset(30)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n, err := stated.NewCounter(check, "counts").Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatal(err)
	}
	if n != 30 {
		t.Errorf("30 records counted %d times: the records the restore dropped from stated were not processed again", n)
	}
}
