package daemon_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// pad commits n puts of 1 KiB of random bytes (tables do not compress
// them), so that the tables outweigh the changelog of the writes a test
// makes after them.
func pad(ctx context.Context, t *testing.T, state statedv1.StateClient, n int) {
	t.Helper()
	for b := 0; b < n; b += 100 {
		req := &statedv1.CommitRequest{}
		for i := b; i < min(b+100, n); i++ {
			v := make([]byte, 1024)
			rand.Read(v)
			req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
				Namespace: "pad", Key: fmt.Appendf(nil, "p%06d-%d", i, time.Now().UnixNano()), Value: v})
		}
		if _, err := state.Commit(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEveryChangelogCheckpointIsAConsistentCut is
// TestEveryCheckpointsOffsetsMatchItsState with changelog checkpoints: a
// writer moves a counter and its offset together while checkpoints are
// taken, and every checkpoint, replayed from its base's tables, holds the
// counter equal to its offset at the manifest's applied index.
func TestEveryChangelogCheckpointIsAConsistentCut(t *testing.T) {
	for i, s := range checkpointsUnderLoad(t, time.Hour) {
		if want := i > 0; s.GetChangelog() != want || want && s.GetChangelogSegments() != uint64(i) {
			t.Fatalf("checkpoint %d: changelog %t with %d segments; want the first to upload its tables and each after it one more segment on it",
				s.GetEpoch(), s.GetChangelog(), s.GetChangelogSegments())
		}
	}
}

// TestChangelogCheckpointsUploadTheTablesAgainWhenTheyMust: after a
// table checkpoint the next ones are changelog checkpoints until the
// materialize interval has passed, the segments hold as many bytes as the
// tables, or the Raft log no longer holds the entries since the last
// checkpoint; each of those makes the next checkpoint upload its tables.
func TestChangelogCheckpointsUploadTheTablesAgainWhenTheyMust(t *testing.T) {
	const every = 3 * time.Second
	bucket := fileBucket(t)
	d := daemontest.Start(t, func(c *daemon.Config) {
		c.CheckpointURL = bucket
		c.CheckpointInterval = 0
		c.CheckpointMaterializeInterval = every
		c.TrailingLogs = 1 // a snapshot compacts all but the newest entry
	})
	conn := dial(t, "unix://"+d.SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	ctx := testContext(t)
	pad(ctx, t, state, 200)
	trigger := func(want bool, why string) *statedv1.CheckpointSummary {
		t.Helper()
		resp, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		if s := resp.GetSummary(); s.GetChangelog() != want {
			t.Fatalf("%s: checkpoint %d changelog %t, want %t", why, s.GetEpoch(), s.GetChangelog(), want)
		}
		return resp.GetSummary()
	}

	start := time.Now()
	trigger(false, "the first checkpoint")
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")
	time.Sleep(every - time.Since(start))
	trigger(false, "after the materialize interval")

	// About 200 KB of tables: 300 KB of puts outweigh them.
	pad(ctx, t, state, 300)
	trigger(true, "the first checkpoint on them")
	trigger(false, "segments holding as many bytes as the tables")

	pad(ctx, t, state, 1)
	s := trigger(true, "right after a table checkpoint")
	// Retention follows a changelog checkpoint too: the default 3 newest
	// manifests stay.
	if ms, err := openBucket(t, bucket).List(ctx); err != nil || len(ms) != 3 || ms[2].Epoch != s.GetEpoch() {
		t.Fatalf("after changelog checkpoint %d the bucket holds %d checkpoints (%v); want the 3 newest", s.GetEpoch(), len(ms), err)
	}
	pad(ctx, t, state, 1)
	if err := d.Store().Snapshot(); err != nil {
		t.Fatal(err)
	}
	pad(ctx, t, state, 1)
	trigger(false, "the Raft log compacted past the last checkpoint")
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetChangelogCheckpoints() != 3 || st.GetMaterializeIntervalMillis() != every.Milliseconds() || st.GetFailures() != 0 || st.GetLastError() != "" {
		t.Fatalf("status: %d changelog checkpoints, materialize interval %d ms, %d failures (%s); want 3, %d, 0",
			st.GetChangelogCheckpoints(), st.GetMaterializeIntervalMillis(), st.GetFailures(), st.GetLastError(), every.Milliseconds())
	}
}
