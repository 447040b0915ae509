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
		// Keys of their own each time: sending one again is harmless.
		if err := daemontest.WhileUnavailable(ctx, func() error { _, err := state.Commit(ctx, req); return err }); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEveryChangelogCheckpointIsAConsistentCut is
// TestEveryCheckpointsOffsetsMatchItsState with changelog checkpoints: a
// writer moves a counter and its offset together while checkpoints are
// taken, and every checkpoint, replayed from its base's tables, holds the
// counter equal to its offset at the manifest's applied index.
//
// Each segment is written from the entries the leader's state machine
// captured as it applied them; with CheckpointChangelogMemory too small
// for any, or zero, each is read back from the Raft log instead. Either
// way every checkpoint is the same consistent cut.
func TestEveryChangelogCheckpointIsAConsistentCut(t *testing.T) {
	for _, tc := range []struct {
		name     string
		memory   int64  // CheckpointChangelogMemory; -1: DefaultConfig's
		wantLogs uint64 // segments read from the log
	}{
		{"segments from the captured entries", -1, 0},
		{"segments read from the log past the memory", 1, 4},
		{"segments read from the log with no memory", 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sums, st := checkpointsUnderLoad(t, time.Hour, tc.memory)
			for i, s := range sums {
				if want := i > 0; s.GetChangelog() != want || want && s.GetChangelogSegments() != uint64(i) {
					t.Fatalf("checkpoint %d: changelog %t with %d segments; want the first to upload its tables and each after it one more segment on it",
						s.GetEpoch(), s.GetChangelog(), s.GetChangelogSegments())
				}
			}
			if st.ChangelogCheckpoints != 4 || st.ChangelogSegmentsFromLog != tc.wantLogs {
				t.Fatalf("%d changelog checkpoints, %d segments read from the log; want 4 and %d", st.ChangelogCheckpoints, st.ChangelogSegmentsFromLog, tc.wantLogs)
			}
		})
	}
}

// TestChangelogCheckpointsUploadTheTablesAgainWhenTheyMust: after a
// table checkpoint the next ones are changelog checkpoints until the
// materialize interval has passed, the segments would hold as many bytes
// as the tables with the next one, or the Raft log no longer holds the
// entries since the last checkpoint; each of those makes the checkpoint
// upload its tables.
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
	trigger := kindTrigger(ctx, t, cps)

	trigger(false, "the first checkpoint")
	// The interval runs from when that checkpoint started, which is
	// before it returned: waiting from here waits at least the interval
	// (from before the trigger, the coordinator's clock could start later
	// than the test's, and the interval not have passed).
	start := time.Now()
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")
	time.Sleep(every - time.Since(start))
	trigger(false, "after the materialize interval")

	// About 200 KB of tables. A segment of 100 KB of puts is lighter;
	// with 150 KB more the segments would outweigh them, so that
	// checkpoint uploads the tables rather than a segment that makes a
	// restore replay more than it downloads.
	pad(ctx, t, state, 100)
	trigger(true, "the first checkpoint on them, its segment lighter than the tables")
	pad(ctx, t, state, 150)
	trigger(false, "segments that would hold as many bytes as the tables")

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

// TestOnlyTheLeaderCapturesEntriesForChangelogSegments: with changelog
// checkpoints on, the leader's state machine keeps the entries it applies
// for the next segment and the followers' keep none; a leader that steps
// down (here, removed from the cluster) stops within seconds.
func TestOnlyTheLeaderCapturesEntriesForChangelogSegments(t *testing.T) {
	bucket := fileBucket(t)
	nodes := daemontest.StartCluster(t, 3, func(c *daemon.Config) {
		c.CheckpointURL, c.CheckpointInterval = bucket, 0
		c.CheckpointMaterializeInterval = time.Hour
	})
	ctx := testContext(t)
	conn := dial(t, "unix://"+nodes[0].SocketPath())
	state, cps := statedv1.NewStateClient(conn), statedv1.NewCheckpointsClient(conn)
	pad(ctx, t, state, 200)
	trigger := kindTriggerAcrossTerms(ctx, t, state, cps, nodes)
	pad(ctx, t, state, 1)
	trigger(false, "the first checkpoint")
	pad(ctx, t, state, 1)
	trigger(true, "right after a table checkpoint")
	// The leader: node1 unless an election under load chose another.
	lead, _ := leaderOf(t, nodes)
	if st := lead.CheckpointStatus(); st.ChangelogCheckpoints != 1 || st.ChangelogSegmentsFromLog != 0 {
		t.Fatalf("the leader: %d changelog checkpoints, %d segments read from the log; want 1 and 0", st.ChangelogCheckpoints, st.ChangelogSegmentsFromLog)
	}
	for _, d := range nodes {
		if got := daemon.ChangelogCapturing(d); got != (d == lead) {
			t.Fatalf("%s (leader: %t) captures entries: %t", d.NodeID(), d == lead, got)
		}
	}
	if err := lead.Store().Remove(ctx, lead.NodeID()); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); daemon.ChangelogCapturing(lead); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("10 s after it left the cluster the old leader still captures entries")
		}
	}
}

// kindTriggerAcrossTerms is kindTrigger for a cluster of nodes that
// may elect again while the test runs (a leader that misses its lease
// under -race on a loaded machine): a trigger answered Unavailable is
// sent again, and a checkpoint of tables where a changelog one is wanted
// is taken again, after one more padded entry, when the Raft term moved
// since this function's last checkpoint: a node that took over again
// uploads its tables first, as documented.
func kindTriggerAcrossTerms(ctx context.Context, t *testing.T, state statedv1.StateClient, cps statedv1.CheckpointsClient, nodes []*daemon.Daemon) func(want bool, why string) *statedv1.CheckpointSummary {
	term := func() (m uint64) {
		for _, d := range nodes {
			m = max(m, d.Store().Term())
		}
		return m
	}
	last := term()
	return func(want bool, why string) *statedv1.CheckpointSummary {
		t.Helper()
		for attempt := 1; ; attempt++ {
			var resp *statedv1.TriggerCheckpointResponse
			if err := daemontest.WhileUnavailable(ctx, func() (err error) {
				resp, err = cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			s := resp.GetSummary()
			now := term()
			moved := now != last
			last = now
			if s.GetChangelog() != want && want && moved && attempt < 3 {
				t.Logf("%s: checkpoint %d uploaded its tables: the Raft term moved to %d, a leader took over; once more", why, s.GetEpoch(), now)
				pad(ctx, t, state, 1)
				continue
			}
			if s.GetChangelog() != want {
				t.Fatalf("%s: checkpoint %d changelog %t, want %t", why, s.GetEpoch(), s.GetChangelog(), want)
			}
			return s
		}
	}
}

// kindTrigger returns a function that triggers a checkpoint, waits for it
// and fails the test, saying why it expected so, unless it is a changelog
// checkpoint exactly when want is.
func kindTrigger(ctx context.Context, t *testing.T, cps statedv1.CheckpointsClient) func(want bool, why string) *statedv1.CheckpointSummary {
	return func(want bool, why string) *statedv1.CheckpointSummary {
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
}
