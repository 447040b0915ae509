package test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/sdk/go/kafka"
)

// TestAProcessorUpThroughARestoreOfItsNodeStopsWithErrClaimReleasedAndTheReplayCountsOnce
// (a review's reproduction): one node, a counting processor whose Client
// stays up through the loss of the node (SIGKILL, its commit in flight)
// and a restore of its checkpoint. Per GUARANTEES §3 the processor's Run
// returns kafka.ErrClaimReleased; before, the commit in flight was refused
// by its session (the restore dropped it) and Run returned the Client's
// stated.ErrSessionExpired alone. A processor started again on the same
// Client (which goes on committing into the restored cluster, same
// lineage) replays from the restored offsets: every count exact.
func TestAProcessorUpThroughARestoreOfItsNodeStopsWithErrClaimReleasedAndTheReplayCountsOnce(t *testing.T) {
	skipLong(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k := newKafka(t, "events", 4)
	k.produce(ctx, t, 20_000, 97)
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNamedNode(t, "n1")
	n.args = []string{"--checkpoint-url", bucket}
	n.start(ctx)
	c, err := stated.Dial(ctx, n.grpcAddr, stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := k.countingConfig(c, "g", "counts")
	cfg.MaxPollRecords = 100
	var handled atomic.Int64
	h := cfg.Handler
	cfg.Handler = func(ctx context.Context, txn *stated.Txn, r *kgo.Record) error {
		if handled.Add(1)%100 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		return h(ctx, txn, r)
	}
	errc := startProcessor(ctx, t, cfg)
	for handled.Load() < 4000 {
		select {
		case err := <-errc:
			t.Fatalf("processor stopped early: %v", err)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	mustStated(ctx, t, "checkpoint", "trigger", "--wait", "--addr", n.socket, "--timeout", "30s")
	atCkpt := handled.Load()
	for handled.Load() < atCkpt+3000 && handled.Load() < 19_000 {
		select {
		case err := <-errc:
			t.Fatalf("processor stopped early: %v", err)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	before, _ := committedRecordsOn(ctx, n)
	n.kill()
	if err := os.RemoveAll(n.dataDir); err != nil {
		t.Fatal(err)
	}
	mustStated(ctx, t, "restore", "--from", bucket, "--data-dir", n.dataDir)
	n.start(ctx)
	restored, _ := committedRecordsOn(ctx, n)
	t.Logf("handled %d at the checkpoint trigger; %d records committed before the loss, %d in the restored state", atCkpt, before, restored)
	var runErr error
	select {
	case runErr = <-errc:
	case <-time.After(90 * time.Second):
		t.Fatal("the processor that stayed up through the restore did not stop within 90s")
	}
	t.Logf("the processor up through the restore returned: %v", runErr)
	if !errors.Is(runErr, kafka.ErrClaimReleased) {
		t.Errorf("Run returned %v; GUARANTEES §3 says kafka.ErrClaimReleased", runErr)
	}
	k.runUntilDrained(ctx, t, c, "g", k.countingConfig(c, "g", "counts"))
	k.checkCounts(ctx, t, c, "counts")
}
