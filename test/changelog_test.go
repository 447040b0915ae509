package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// TestAChangelogCheckpointRestoresExactlyItsCut takes a table checkpoint
// and then two changelog checkpoints of a `stated run` process with
// --checkpoint-materialize-interval, writes more after the last one,
// SIGKILLs the process and restores each changelog checkpoint into a new
// data dir with `stated restore`. Each restore must hold exactly the
// state of its checkpoint's cut: every key, counter and offset committed
// before the checkpoint, at its value then, and nothing committed after.
//
// It runs twice: with the leader's default memory for the entries it
// applied, from which both segments are made, and with
// --checkpoint-changelog-memory 0, which reads both back from the Raft
// log; stated_checkpoint_changelog_segments_from_log_total says which.
func TestAChangelogCheckpointRestoresExactlyItsCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		fromLog float64
	}{
		{"segments from memory", nil, 0},
		{"segments from the log", []string{"--checkpoint-changelog-memory", "0"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			changelogCheckpointsRestoreTheirCuts(t, tc.args, tc.fromLog)
		})
	}
}

func changelogCheckpointsRestoreTheirCuts(t *testing.T, args []string, fromLog float64) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	n := newNode(t)
	metricsAddr := freeAddr(t)
	n.args = append([]string{"--checkpoint-url", bucket, "--checkpoint-interval", "1h", "--checkpoint-materialize-interval", "1h", "--metrics-addr", metricsAddr}, args...)
	n.start(ctx)
	c, err := stated.Dial(ctx, "unix://"+n.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := n.dial()
	defer conn.Close()
	cps := statedv1.NewCheckpointsClient(conn)

	// Round r writes keys r*100..r*100+99, overwrites key 0, adds r to a
	// counter, moves an offset to r*1000 and deletes key r-1 of the round
	// before: puts, overwrites, deletes, counters and offsets all go
	// through the changelog.
	write := func(r int) {
		t.Helper()
		for i := range 100 {
			txn := c.Txn().Put("cl", []byte(fmt.Sprintf("k%05d", r*100+i)), []byte(fmt.Sprintf("v%d", r)))
			if i == 0 {
				txn.Put("cl", []byte("k00000"), []byte(fmt.Sprintf("round %d", r))).
					CounterAdd("cl", []byte("count"), int64(r)).
					CommitOffset("g", "events", 0, int64(r*1000))
				if r > 1 {
					txn.Delete("cl", []byte(fmt.Sprintf("k%05d", (r-1)*100+1)))
				}
			}
			if _, err := txn.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	trigger := func() *statedv1.CheckpointSummary {
		t.Helper()
		tr, err := cps.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		if err != nil {
			t.Fatal(err)
		}
		return tr.GetSummary()
	}
	// Tables of about 2 MB, so that the changelog stays below them and the
	// checkpoints after the first do not upload the tables again.
	pad := make([]byte, 1024)
	for b := range 20 {
		txn := c.Txn()
		for i := range 100 {
			txn.Put("pad", []byte(fmt.Sprintf("p%05d", b*100+i)), pad)
		}
		if _, err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	base := trigger()
	write(2)
	first := trigger()
	write(3)
	second := trigger()
	write(4) // after the last checkpoint: lost with the node
	for _, s := range []struct {
		name string
		got  *statedv1.CheckpointSummary
		want uint64 // segments; 0 for the table checkpoint
	}{{"the first checkpoint", base, 0}, {"the second", first, 1}, {"the third", second, 2}} {
		if s.got.GetChangelog() != (s.want > 0) || s.got.GetChangelogSegments() != s.want {
			t.Fatalf("%s: changelog %t with %d segments, want %d segments (%v)", s.name, s.got.GetChangelog(), s.got.GetChangelogSegments(), s.want, s.got)
		}
		if s.want > 0 && s.got.GetChangelogBaseEpoch() != base.GetEpoch() {
			t.Fatalf("%s: based on epoch %d, want %d", s.name, s.got.GetChangelogBaseEpoch(), base.GetEpoch())
		}
	}
	st, err := cps.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetChangelogCheckpoints() != 2 || st.GetChangelogBaseEpoch() != base.GetEpoch() || st.GetChangelogBytes() == 0 {
		t.Fatalf("status: %d changelog checkpoints on epoch %d with %d bytes; want 2 on %d with some", st.GetChangelogCheckpoints(), st.GetChangelogBaseEpoch(), st.GetChangelogBytes(), base.GetEpoch())
	}
	fams := scrape(t, metricsAddr)
	if got := value(t, fams, "stated_checkpoint_changelog_completed_total"); got != 2 {
		t.Fatalf("stated_checkpoint_changelog_completed_total = %v, want 2", got)
	}
	if got := value(t, fams, "stated_checkpoint_changelog_bytes"); got != float64(st.GetChangelogBytes()) {
		t.Fatalf("stated_checkpoint_changelog_bytes = %v, want the status's %d", got, st.GetChangelogBytes())
	}
	if got := value(t, fams, "stated_checkpoint_changelog_segments_from_log_total"); got != fromLog {
		t.Fatalf("stated_checkpoint_changelog_segments_from_log_total = %v, want %v", got, fromLog)
	}
	n.kill()

	for _, cut := range []struct {
		epoch  uint64
		rounds int
	}{{first.GetEpoch(), 2}, {second.GetEpoch(), 3}} {
		t.Run(fmt.Sprintf("epoch=%d", cut.epoch), func(t *testing.T) {
			r := newNamedNode(t, "r1")
			out, err := exec.CommandContext(ctx, statedBinary(t), "restore", "--from", bucket, "--data-dir", r.dataDir,
				"--checkpoint", fmt.Sprint(cut.epoch)).CombinedOutput()
			if err != nil {
				t.Fatalf("stated restore: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), fmt.Sprintf("onto the tables of checkpoint %d", base.GetEpoch())) {
				t.Fatalf("restore output does not report the replay: %s", out)
			}
			if _, err := os.Stat(filepath.Join(r.dataDir, "state", "changelog")); !os.IsNotExist(err) {
				t.Fatalf("the restored state keeps the segments: %v", err)
			}
			r.start(ctx)
			rc, err := stated.Dial(ctx, "unix://"+r.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			checkRounds(ctx, t, rc, cut.rounds)
		})
	}
}

// checkRounds checks that c holds exactly what rounds 1..rounds of the
// test above wrote, and nothing of the rounds after.
func checkRounds(ctx context.Context, t *testing.T, c *stated.Client, rounds int) {
	t.Helper()
	lin := stated.WithConsistency(stated.ConsistencyLinearizable)
	for r := 1; r <= 4; r++ {
		for i := 1; i < 100; i++ {
			key := fmt.Sprintf("k%05d", r*100+i)
			item, found, err := c.Get(ctx, "cl", []byte(key), lin)
			if err != nil {
				t.Fatal(err)
			}
			deleted := i == 1 && r < rounds // deleted by the round after
			switch want := r <= rounds && !deleted; {
			case found != want:
				t.Fatalf("key %s found %t, want %t (restored through round %d)", key, found, want, rounds)
			case found && string(item.Value) != fmt.Sprintf("v%d", r):
				t.Fatalf("key %s = %q, want v%d", key, item.Value, r)
			}
		}
	}
	item, _, err := c.Get(ctx, "cl", []byte("k00000"), lin)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("round %d", rounds); string(item.Value) != want {
		t.Fatalf("k00000 = %q, want %q", item.Value, want)
	}
	n, err := c.GetCounter(ctx, "cl", []byte("count"), lin)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(rounds * (rounds + 1) / 2); n != want {
		t.Fatalf("counter = %d, want %d", n, want)
	}
	offs, err := c.GetOffsets(ctx, "g", lin)
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 1 || offs[0].Offset != int64(rounds*1000) {
		t.Fatalf("offsets %+v, want events/0 at %d", offs, rounds*1000)
	}
}
