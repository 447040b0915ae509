package bench

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

// rejoinFlags make the leader snapshot and compact its log soon after the
// follower is wiped, so that the follower can only catch up from a Raft
// snapshot: the whole state, sent by the leader.
var rejoinFlags = []string{"--raft-snapshot-threshold", "64", "--raft-trailing-logs", "16", "--raft-snapshot-interval", "1s"}

// BenchmarkRejoin measures DESIGN.md's "one node's disk" recovery on three
// `stated run` processes: a follower is SIGKILLed and its data dir
// deleted, the leader compacts its log, and the follower is started again
// with --join under its id and ports. rejoin-s runs from its start until
// it has applied everything the leader had, the state sent whole as a
// Raft snapshot (sized and sent by the leader, stored and restored by the
// follower). The reference, in the same run: `cp -r` of the leader's
// Pebble directory and `sync` (cp-s). The state is the growth study's
// keyed state: 1 KiB random values under distinct keys, 1,000 to a
// commit. Run with -benchtime 1x.
func BenchmarkRejoin(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int64
	}{{"100MB", 100 << 20}, {"1GB", 1 << 30}} {
		b.Run("state="+size.name, func(b *testing.B) {
			state := keyedGrowth(size.bytes) // the growth study's keyed state
			checkDisk(b, state.diskNeed)
			nodes := startClusterWith(b, 3, rejoinFlags)
			lead := leader(b, nodes)
			c := dial(b, lead)
			state.build(context.Background(), b, c)
			follower := otherThan(nodes, lead)
			stateBytes := dirSize(b, filepath.Join(lead.dataDir, "state"))
			var rejoin, cp time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				follower.kill()
				if err := os.RemoveAll(follower.dataDir); err != nil {
					b.Fatal(err)
				}
				// More entries than the snapshot threshold, then time for
				// the leader's snapshot (checked every 1-2 s) to compact
				// the log past everything the follower had.
				for i := range 100 {
					if _, err := c.Txn().Put(benchNamespace, []byte("tail"), binary.BigEndian.AppendUint64(nil, uint64(i))).Commit(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(3 * time.Second)
				st, err := c.NodeStatus(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				follower.rerun(b, append([]string{"--join", lead.grpcAddr}, rejoinFlags...))
				waitApplied(b, follower, st.AppliedIndex)
				rejoin += time.Since(start)
				b.StopTimer()
				if !receivedSnapshot(b, follower.dataDir) {
					b.Fatalf("%s caught up from the log, not from a snapshot: the leader had not compacted it", follower.id)
				}
				cp += copyLiveDir(b, filepath.Join(lead.dataDir, "state"))
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(rejoin.Seconds()/n, "rejoin-s")
			b.ReportMetric(float64(stateBytes)/1e6/(rejoin.Seconds()/n), "rejoin-MB/s")
			b.ReportMetric(cp.Seconds()/n, "cp-s")
			b.ReportMetric(float64(stateBytes)/1e6, "state-MB")
		})
	}
}

// waitApplied polls the node, through a new Client on its socket, until
// it has applied index.
func waitApplied(b *testing.B, nd *node, index uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var c *stated.Client
	for {
		if c == nil {
			cc, err := stated.Dial(ctx, nd.socket)
			if err == nil {
				c = cc
				defer c.Close()
			}
		}
		if c != nil {
			if st, err := c.NodeStatus(ctx); err == nil && st.AppliedIndex >= index {
				return
			}
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%s did not apply index %d within 10 minutes\n%s", nd.id, index, nd.logs)
		case <-nd.done:
			b.Fatalf("%s exited while it caught up:\n%s", nd.id, nd.logs)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// receivedSnapshot reports whether the node's Raft holds a snapshot
// received from the leader: a stream of the state, larger than the
// 39-byte reference of a snapshot the node took itself.
func receivedSnapshot(b *testing.B, dataDir string) bool {
	files, err := filepath.Glob(filepath.Join(dataDir, "raft", "snapshots", "*", "state.bin"))
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 1<<10 {
			return true
		}
	}
	return false
}

// BenchmarkFollowerBackAfterDowntime measures DESIGN.md's "one process"
// recovery on three `stated run` processes: a follower is SIGKILLed, the
// leader commits 100 transactions, and after the downtime the follower
// is started again on its data dir. back-s runs from its start until it
// has applied everything the leader had: its own start and replay, and
// the wait for the leader to send it the entries it missed, which
// hashicorp/raft alone backs off up to 10.24 s after a follower's
// failures (raftstore's transport sends them again instead). Run with
// -benchtime 1x; the old binary through BENCH_STATED_BIN.
func BenchmarkFollowerBackAfterDowntime(b *testing.B) {
	for _, down := range []time.Duration{time.Second, 25 * time.Second} {
		b.Run("down="+down.String(), func(b *testing.B) {
			nodes := startCluster(b, 3)
			lead := leader(b, nodes)
			c := dial(b, lead)
			follower := otherThan(nodes, lead)
			var back time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				follower.kill()
				for j := range 100 {
					if _, err := c.Txn().Put(benchNamespace, []byte("missed"), binary.BigEndian.AppendUint64(nil, uint64(i*100+j))).Commit(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(down)
				st, err := c.NodeStatus(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				follower.rerun(b, nil)
				waitApplied(b, follower, st.AppliedIndex)
				back += time.Since(start)
			}
			b.ReportMetric(back.Seconds()/float64(b.N), "back-s")
		})
	}
}

// copyLiveDirAttempts bounds the copies copyLiveDir starts again.
const copyLiveDirAttempts = 5

// copyLiveDir times `cp -r` of dir, a live Pebble directory, and a
// `sync`. Pebble deletes the tables a compaction replaced while cp runs,
// and a file listed and then gone fails the copy ("cannot stat"): such a
// copy is started again, and only the time of the one that succeeded
// counts.
func copyLiveDir(b *testing.B, dir string) time.Duration {
	b.Helper()
	var out []byte
	var err error
	for range copyLiveDirAttempts {
		dst := filepath.Join(b.TempDir(), "copy")
		start := time.Now()
		out, err = exec.Command("cp", "-r", dir, dst).CombinedOutput()
		if err == nil {
			if out, err := exec.Command("sync").CombinedOutput(); err != nil {
				b.Fatalf("sync: %v %s", err, out)
			}
			took := time.Since(start)
			os.RemoveAll(dst)
			return took
		}
		os.RemoveAll(dst)
		if !strings.Contains(string(out), "No such file or directory") {
			break
		}
	}
	b.Fatalf("cp -r %s: %v %s", dir, err, out)
	return 0
}
