package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestTotalLossRestoreCountsEveryRecordExactly: a three-node cluster with a
// processor checkpoints to a bucket; every node's data dir is deleted;
// `stated restore` rebuilds the first node from the bucket, the others
// join it empty, and a new processor resumes from the checkpoint's
// offsets. When the topic is drained every key's count is exact: the
// records processed after the checkpoint were lost with the nodes and are
// replayed from Kafka, once.
func TestTotalLossRestoreCountsEveryRecordExactly(t *testing.T) {
	t.Parallel()
	totalLossRestore(t, false)
}

// TestTotalLossRestoreOfAChangelogCheckpointCountsEveryRecordExactly is
// the test above with changelog checkpoints: the checkpoint restored is
// the tables of the cluster's first checkpoint plus the Raft log's
// entries since, replayed by `stated restore`.
func TestTotalLossRestoreOfAChangelogCheckpointCountsEveryRecordExactly(t *testing.T) {
	t.Parallel()
	totalLossRestore(t, true)
}

// totalLossRestore runs the Kafka counting processor on three nodes that
// checkpoint every second, loses every node, restores the latest
// checkpoint and checks that the counts come out exact after Kafka
// replays the rest. With changelog, the nodes take changelog checkpoints
// and the one restored must be one.
func totalLossRestore(t *testing.T, changelog bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k := newKafka(t, "events", 4)
	k.produce(ctx, t, 60_000, 97)
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	args := []string{"--checkpoint-url", bucket, "--checkpoint-interval", "1s"}
	if changelog {
		// The changelog checkpoint the test sees is the one it restores
		// (below), however many checkpoints complete after it while the
		// processor goes on (a few with the default retention of 3 retired
		// it on a loaded CI run before the restore).
		args = append(args, "--checkpoint-materialize-interval", "1h", "--checkpoint-retain", "1000")
	}
	nodes := startCluster(ctx, t, 3, args...)

	c, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	// About 4 MB of tables beside the counts, in a checkpoint's tables
	// before the processor starts: more than the Raft log entries of the
	// whole topic's commits. A checkpoint uploads its tables again once
	// the changelog would outweigh them, which with the counts alone (a
	// few KB) every one would.
	pad := make([]byte, 1024)
	for b := range 40 {
		txn := c.Txn()
		for i := range 100 {
			rand.Read(pad)
			txn.Put("pad", fmt.Appendf(nil, "p%05d", b*100+i), pad)
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustStatedWhileUnavailable(ctx, t, "checkpoint", "trigger", "--wait", "--addr", nodes[0].socket)
	cfg := k.countingConfig(c, "g", "counts")
	cfg.MaxPollRecords = 200
	var handled atomic.Int64
	h := cfg.Handler
	cfg.Handler = func(ctx context.Context, txn *stated.Txn, r *kgo.Record) error {
		handled.Add(1)
		if handled.Load()%200 == 0 {
			time.Sleep(2 * time.Millisecond) // stretch the topic over several checkpoints
		}
		return h(ctx, txn, r)
	}
	pctx, stop := context.WithCancel(ctx)
	errc := startProcessor(pctx, t, cfg)

	// Wait for a completed checkpoint that holds offsets, then let the
	// processor go on past it: that work is lost with the nodes.
	conn := nodes[0].dial()
	defer conn.Close()
	cps := statedv1.NewCheckpointsClient(conn)
	var ckptRecords int64
	var ckptEpoch uint64
	for deadline := time.Now().Add(time.Minute); ; {
		list, err := cps.List(ctx, &statedv1.ListCheckpointsRequest{})
		if err == nil && len(list.GetCheckpoints()) > 0 {
			last := list.GetCheckpoints()[len(list.GetCheckpoints())-1]
			m, err := cps.Get(ctx, &statedv1.GetCheckpointRequest{Epoch: last.GetEpoch()})
			if err == nil {
				var n int64
				for _, o := range m.GetOffsets() {
					n += o.GetOffset()
				}
				if n >= 5000 && last.GetChangelog() == changelog {
					ckptRecords, ckptEpoch = n, last.GetEpoch()
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint with offsets within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for past := min(ckptRecords+5000, 60_000); handled.Load() < past; {
		select {
		case <-ctx.Done():
			t.Fatalf("the processor handled %d records, not the %d past the checkpoint's %d: %v", handled.Load(), past, ckptRecords, ctx.Err())
		case err := <-errc:
			t.Fatalf("the processor stopped after %d records, before the %d past the checkpoint's %d: %v", handled.Load(), past, ckptRecords, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c.Close()
	committed, err := committedRecordsOn(ctx, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lost every node with %d records committed; the latest checkpoint seen held %d", committed, ckptRecords)

	// Total loss.
	for _, n := range nodes {
		n.kill()
		if err := os.RemoveAll(n.dataDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	restore := []string{"restore", "--from", bucket, "--data-dir", nodes[0].dataDir}
	if changelog {
		// A later checkpoint may have uploaded its tables again: restore
		// the changelog checkpoint seen.
		restore = append(restore, "--checkpoint", fmt.Sprint(ckptEpoch))
	}
	out, err := exec.CommandContext(ctx, statedBinary(t), restore...).CombinedOutput()
	if err != nil {
		t.Fatalf("stated restore: %v\n%s", err, out)
	}
	t.Logf("stated restore:\n%s", out)
	if !strings.Contains(string(out), "restored checkpoint ") {
		t.Fatalf("restore output lacks the checkpoint: %s", out)
	}
	if replayed := strings.Contains(string(out), "Raft log entries"); replayed != changelog {
		t.Fatalf("restore replayed a changelog: %t, want %t: %s", replayed, changelog, out)
	}
	for _, n := range nodes {
		n.start(ctx)
	}
	restored, err := committedRecordsOn(ctx, nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint that completed after the processor stopped, and
	// before the loss, holds every committed record (seen under load):
	// then nothing is replayed, and the count below must still be exact.
	if restored < ckptRecords || restored > committed {
		t.Fatalf("restored offsets cover %d records; want the checkpoint's (at least %d, at most the %d committed before the loss)", restored, ckptRecords, committed)
	}
	if restored == committed {
		t.Logf("the restored checkpoint holds every committed record (one completed after the processor stopped): nothing to replay")
	}

	c2, err := stated.Dial(ctx, addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	pctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	errc2 := startProcessor(pctx2, t, k.countingConfig(c2, "g", "counts"))
	k.waitDrained(ctx, t, c2, "g", errc2)
	stop2()
	if err := <-errc2; err != nil {
		t.Fatal(err)
	}
	k.checkCounts(ctx, t, c2, "counts")
}

// committedRecordsOn sums the offsets of group g on n (linearizable).
func committedRecordsOn(ctx context.Context, n *node) (int64, error) {
	conn := n.dial()
	defer conn.Close()
	// A linearizable read needs a leader: during an election (nodes just
	// started, or a lease missed on a loaded machine) it is asked again.
	var resp *statedv1.GetOffsetsResponse
	if err := daemontest.WhileUnavailable(ctx, func() (err error) {
		resp, err = statedv1.NewStateClient(conn).GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g",
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
		return err
	}); err != nil {
		return 0, err
	}
	var sum int64
	for _, o := range resp.GetOffsets() {
		sum += o.GetOffset()
	}
	return sum, nil
}
