package kafka

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	"github.com/statedhq/stated/internal/smalldisk"
	stated "github.com/statedhq/stated/sdk/go"
)

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAProcessorWaitsWhileTheLeadersDiskIsBelowMinFreeDiskAndCountsOnce:
// a leader whose data disk has less free space than its --min-free-disk
// refuses commits (stated.ErrDiskFull). The processor does not stop, nor
// split its batch as for a message too large: it logs the refusal and
// processes the batch again after a backoff, and once there is room every
// record is counted exactly once. Needs root (a tmpfs).
func TestAProcessorWaitsWhileTheLeadersDiskIsBelowMinFreeDiskAndCountsOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	disk := smalldisk.Mount(t, 256)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.DataDir = filepath.Join(disk, "data")
		c.MinFreeDiskBytes = 64 << 20
		c.RaftLogStore = "wal"
	})
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	smalldisk.WaitSettled(t, disk)
	filler := filepath.Join(disk, "filler")
	smalldisk.Fill(t, filler, 32<<20)
	time.Sleep(200 * time.Millisecond) // past the guard's reading

	const records = 500
	kc := newEvents(t, 2)
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("events"))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, records)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte{byte(i)}, Value: []byte("e")}
	}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	cl.Close()

	var logs syncBuffer
	counts := stated.NewCounter(c, "counts")
	p, err := New(Config{
		State: c, Group: "g", Topics: []string{"events"},
		KafkaOptions: testKafkaOptions(kc), KafkaCommitInterval: -1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Handler: func(_ context.Context, txn *stated.Txn, r *kgo.Record) error {
			counts.In(txn).Add("n", 1)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()

	// Refused, and still running.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "data disk is nearly full") {
		select {
		case err := <-ran:
			t.Fatalf("Run returned while the disk was below the minimum: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal logged in 30 s:\n%s", logs.String())
		}
	}
	if n, err := counts.Get(ctx, "n"); err != nil || n != 0 {
		t.Fatalf("counted %d (%v) while commits are refused", n, err)
	}
	if strings.Contains(logs.String(), "larger than the maximum message size") {
		t.Errorf("the refused batch was split as too large:\n%s", logs.String())
	}

	// Room again: every record counted once.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		n, err := counts.Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable))
		if err == nil && n == records {
			break
		}
		select {
		case err := <-ran:
			t.Fatalf("Run returned: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted %d (%v) of %d records 60 s after freeing space", n, err, records)
		}
	}
	stopRun()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n, err := counts.Get(ctx, "n", stated.WithConsistency(stated.ConsistencyLinearizable)); err != nil || n != records {
		t.Fatalf("counted %d (%v), want %d", n, err, records)
	}
}
