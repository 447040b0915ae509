package daemon_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/smalldisk"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/command"
)

// TestACheckpointOntoAFullDiskFailsAndShowsTheDiskInStatus: the flush
// before a checkpoint's barrier waited forever on a full disk (Pebble
// retries the failed flush forever), so the checkpoint never ended,
// stated checkpoint trigger --wait timed out, and stated status showed
// no failure. It now fails, counted, with a last error naming the disk
// (docs/OPERATIONS.md, a full data disk).
func TestACheckpointOntoAFullDiskFailsAndShowsTheDiskInStatus(t *testing.T) {
	disk := smalldisk.Mount(t, 128)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.DataDir = filepath.Join(disk, "data")
		c.CheckpointURL, c.CheckpointInterval = fileBucket(t), 0
	})
	ctx := testContext(t)
	// 8 MiB of random values in the memtable: a table of 8 MiB to flush.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 128 {
		value := make([]byte, 64<<10)
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		c := &command.Commit{Mutations: []command.Mutation{{Op: command.OpPut, Namespace: "s", Key: fmt.Appendf(nil, "k%05d", i), Value: value}}}
		if _, _, err := d.Store().Commit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// Room for the WAL's rotation and the Raft log, not for the table,
	// once the Raft log's segment settled: it takes and gives back space
	// in the background for a moment after it starts.
	free := func() uint64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(disk, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail * uint64(st.Bsize)
	}
	for prev, deadline := free(), time.Now().Add(10*time.Second); ; prev = free() {
		time.Sleep(500 * time.Millisecond)
		if free() == prev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disk's free space still changing after 10 s")
		}
	}
	filler := filepath.Join(disk, "filler")
	smalldisk.Fill(t, filler, 1<<20)
	if fi, err := os.Stat(filler); err != nil || fi.Size() < 16<<20 {
		t.Fatalf("filler: %v, %v: the disk was full before", fi, err)
	}
	t.Cleanup(func() { os.Remove(filler) }) // before the daemon closes

	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath()))
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	_, err := cps.Trigger(tctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err == nil {
		t.Fatal("a checkpoint onto a full disk completed")
	}
	if !strings.Contains(err.Error(), "no space left on device") || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("checkpoint onto a full disk: %v; want RESOURCE_EXHAUSTED naming no space left on device", err)
	}
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetFailures() != 1 || !strings.Contains(st.GetLastError(), "no space left on device") ||
		!strings.Contains(st.GetLastError(), "disk is full") {
		t.Fatalf("status after a checkpoint onto a full disk: %d failures, last error %q; want 1 naming the full disk", st.GetFailures(), st.GetLastError())
	}
	t.Logf("last error: %s", st.GetLastError())

	// With space again, the next checkpoint completes.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true}); err != nil {
		t.Fatalf("checkpoint with space again: %v", err)
	}
}
