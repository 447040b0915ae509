package daemon_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// TestACheckpointDoesNotWaitForASlowCount holds the count of the first
// checkpoint's keys back, as a large state's count takes long, and
// checks what the coordinator promises (the "Keys not counted" section
// of docs/OPERATIONS.md):
//   - the checkpoint completes once its wait for the count (as long as
//     its files took to send, at least a second) runs out, and its
//     manifest says its keys were not counted, and why, in the list, the
//     recovery report and the trigger's answer;
//   - the next checkpoint starts no count while that one runs, and its
//     barrier removes the first checkpoint's local directory, which the
//     count does not read: it reads a hard-linked copy of its own, and
//     still counts every key;
//   - the late count becomes the status's last count, and after it, a
//     count that took a second or more, the next starts only once three
//     times as long has passed;
//   - the count after that is made from the late count's base, and is
//     exact.
func TestACheckpointDoesNotWaitForASlowCount(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	var mu sync.Mutex
	dirs := map[uint64]string{}
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval, c.CheckpointRetain = fileBucket(t), 0, 10
	})
	daemon.SetCheckpointCutHook(d, func(epoch uint64, dir string) string {
		mu.Lock()
		defer mu.Unlock()
		dirs[epoch] = dir
		return dir
	})
	// The held count takes at least 2 s, so that the rest after it (three
	// times as long) leaves checkpoint 3 well inside it.
	daemon.SetCheckpointCountHook(d, func(ctx context.Context, epoch uint64) {
		if epoch == 1 {
			start := time.Now()
			select {
			case <-release:
			case <-ctx.Done():
			}
			time.Sleep(time.Until(start.Add(2 * time.Second)))
		}
	})
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	put := func(from, to int) {
		t.Helper()
		var muts []*statedv1.Mutation
		for i := from; i < to; i++ {
			muts = append(muts, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: fmt.Appendf(nil, "key-%04d", i), Value: []byte("v")})
		}
		if _, err := state.Commit(ctx, &statedv1.CommitRequest{Mutations: muts}); err != nil {
			t.Fatal(err)
		}
	}
	trigger := func() *statedv1.CheckpointSummary {
		t.Helper()
		resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetSummary()
	}

	put(0, 100)
	s := trigger()
	if s.GetEpoch() != 1 || s.GetKeys() != 0 || !strings.Contains(s.GetKeysNotCounted(), "its count was not done") {
		t.Fatalf("checkpoint 1 = epoch %d, %d keys, not counted %q; want epoch 1, its keys not counted: its count was not done",
			s.GetEpoch(), s.GetKeys(), s.GetKeysNotCounted())
	}
	if st := d.CheckpointStatus(); st.LastCountEpoch != 0 || st.CountingEpoch != 1 {
		t.Fatalf("status: last count of epoch %d, counting epoch %d while the only count, of epoch 1, is held back; want 0 and 1", st.LastCountEpoch, st.CountingEpoch)
	}
	r, err := cps.Recovery(ctx, &statedv1.RecoveryRequest{Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetCheckpoint().GetKeysNotCounted() != s.GetKeysNotCounted() || !r.GetIntact() {
		t.Fatalf("recovery report of checkpoint 1: not counted %q, intact %t; want %q, intact", r.GetCheckpoint().GetKeysNotCounted(), r.GetIntact(), s.GetKeysNotCounted())
	}

	put(100, 101)
	s = trigger()
	if want := "the count of checkpoint 1 was still running"; s.GetEpoch() != 2 || s.GetKeysNotCounted() != want {
		t.Fatalf("checkpoint 2 = epoch %d, not counted %q; want epoch 2, %q", s.GetEpoch(), s.GetKeysNotCounted(), want)
	}
	mu.Lock()
	first := dirs[1]
	mu.Unlock()
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Fatalf("checkpoint 1's local directory %s after checkpoint 2's barrier: %v; want it removed", first, err)
	}

	free()
	var st daemon.CheckpointStatus
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st = d.CheckpointStatus(); st.LastCountEpoch == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the count of checkpoint 1 did not end 30 s after its release: status %+v", st)
		}
	}
	if st.LastCount.Keys != 100 || st.LastCount.Whole != "no base kept" || st.LastCountDuration < 2*time.Second {
		t.Fatalf("the late count of checkpoint 1: %+v in %v; want 100 keys, whole with no base kept, in 2 s or more", st.LastCount, st.LastCountDuration)
	}
	cs, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := cs.GetLastCount(); n.GetEpoch() != 1 || n.GetWholeReason() != "no base kept" || cs.GetLastCompleted().GetEpoch() != 2 || cs.GetCountingEpoch() != 0 {
		t.Fatalf("status: last count %+v, last completed %d, counting epoch %d; want the count of epoch 1, epoch 2, and none", n, cs.GetLastCompleted().GetEpoch(), cs.GetCountingEpoch())
	}
	ended := time.Now()

	put(101, 102)
	s = trigger()
	if s.GetEpoch() != 3 || !strings.HasPrefix(s.GetKeysNotCounted(), "the last count took ") {
		t.Fatalf("checkpoint 3 = epoch %d, not counted %q; want epoch 3, not counted: resting after the last count", s.GetEpoch(), s.GetKeysNotCounted())
	}
	if rest := 3 * st.LastCountDuration; time.Since(ended) < rest {
		time.Sleep(rest - time.Since(ended) + 100*time.Millisecond)
	}
	put(102, 103)
	s = trigger()
	if s.GetEpoch() != 4 || s.GetKeysNotCounted() != "" || s.GetKeys() != 103 {
		t.Fatalf("checkpoint 4 = epoch %d, %d keys, not counted %q; want epoch 4, 103 keys counted", s.GetEpoch(), s.GetKeys(), s.GetKeysNotCounted())
	}
	if st := d.CheckpointStatus(); st.LastCountEpoch != 4 ||
		!(st.LastCount.BaseEpoch == 1 || strings.Contains(st.LastCount.Whole, "since the base (epoch 1)")) {
		t.Fatalf("checkpoint 4 counted %+v (epoch %d); want from the base of epoch 1, or whole after comparing with it", st.LastCount, st.LastCountEpoch)
	}
	list, err := cps.List(ctx, &statedv1.ListCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range list.GetCheckpoints() {
		got = append(got, fmt.Sprintf("%d:%d:%t", c.GetEpoch(), c.GetKeys(), c.GetKeysNotCounted() != ""))
	}
	if want := "1:0:true 2:0:true 3:0:true 4:103:false"; strings.Join(got, " ") != want {
		t.Fatalf("list (epoch:keys:not counted) = %v, want %s", got, want)
	}
}
