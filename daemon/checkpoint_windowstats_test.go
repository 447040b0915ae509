package daemon_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// TestEveryCheckpointsWindowStatsMatchItsState: while a writer adds
// records to tumbling windows (moving the watermark, closing windows into
// the outbox, never acknowledging), checkpoints are taken; each
// manifest's window statistics (watermark, pending emissions, open
// windows) equal those of the state its files hold, not of the live state
// when the manifest was written. A checkpoint of a state without window
// namespaces records none (empty, not unknown).
func TestEveryCheckpointsWindowStatsMatchItsState(t *testing.T) {
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0; c.CheckpointRetain = 10 })
	ctx := testContext(t)
	cps := statedv1.NewCheckpointsClient(dial(t, "unix://"+d.SocketPath()))
	up := openBucket(t, bucket)

	first, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := up.Get(ctx, first.GetEpoch())
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.Windows == nil || len(m.Stats.Windows) != 0 {
		t.Fatalf("checkpoint without window namespaces records windows %#v, want empty", m.Stats.Windows)
	}

	c, err := stated.Dial(ctx, "unix://"+d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.DefineWindows(ctx, stated.WindowSpec{Namespace: "clicks", Shape: stated.Tumbling, Size: time.Second,
		Aggregate: stated.Count, Emit: stated.EmitFinal, Late: stated.LateDrop, IdleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		base := time.UnixMilli(1_700_000_000_000)
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			txn := c.Txn()
			for k := range 3 {
				txn.AddWindow("clicks", fmt.Appendf(nil, "k%d", k), base.Add(time.Duration(i)*100*time.Millisecond), stated.NoValue())
			}
			if _, err := txn.Commit(ctx); err != nil {
				t.Errorf("commit %d: %v", i, err)
				return
			}
			n.Store(i)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	for range 4 {
		before := n.Load()
		for n.Load() < before+30 {
			time.Sleep(time.Millisecond)
		}
		resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		m, err := up.Get(ctx, resp.GetEpoch())
		if err != nil {
			t.Fatal(err)
		}
		sts, err := restoreState(t, up, m).WindowStatuses()
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 1 || len(m.Stats.Windows) != 1 {
			t.Fatalf("checkpoint %d: the state holds %d window namespaces, the manifest %#v", m.Epoch, len(sts), m.Stats.Windows)
		}
		s := sts[0]
		want := uploader.WindowStats{Namespace: "clicks", Watermark: s.Watermark, MaxEventTime: s.MaxEventTime, Pending: s.Pending, OpenWindows: s.OpenWindows}
		if got := m.Stats.Windows[0]; got != want {
			t.Fatalf("checkpoint %d at index %d: manifest records %+v, its state holds %+v", m.Epoch, m.RaftIndex, got, want)
		}
		if s.Pending == 0 || s.Watermark < 0 {
			t.Fatalf("checkpoint %d: %+v; the writer should have closed windows by now", m.Epoch, want)
		}
		t.Logf("checkpoint %d at index %d: %+v", m.Epoch, m.RaftIndex, want)
	}
}
