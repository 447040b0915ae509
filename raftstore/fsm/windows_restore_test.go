package fsm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/raftstore/command"
)

// TestARestoredSourceGoesIdleOnlyOnceTheNewClusterSawItSilent: a state
// restored from a checkpoint older than the idle timeout must replay the
// records after the checkpoint as the first run applied them. The old
// cluster's clock says nothing of how long a source has been silent in
// the new one, so no restored source is idle until the new cluster has
// seen it silent for the idle timeout: the leader's first tick starts
// that timeout and closes nothing, a lagging partition's replayed record
// is on time as it was, and sources that stay silent go idle as usual.
func TestARestoredSourceGoesIdleOnlyOnceTheNewClusterSawItSilent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &wfsm{t: t, f: f, now: 1_700_000_000_000_000_000}
	spec := tumbling("c", 1000, 0, command.AggCount)
	w.mustDefine(spec)
	from := func(src string, tm int64) command.WindowAdd {
		a := add("c", "u", tm)
		a.Source = src
		return a
	}
	// p0 is ahead (5000), p1 lags (1000): the namespace's watermark is
	// p1's, and the window [1000, 2000) is open.
	w.mustCommit(adds(from("p0", 5000), from("p1", 1000)))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkpoint := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.CopyFS(checkpoint, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	checkpointIndex := w.index

	// The first run goes on: p1's next record, a second later, is on time.
	if w.f, err = Open(dir, nil); err != nil {
		t.Fatal(err)
	}
	defer w.f.Close()
	w.now += 1e9
	first := w.mustCommit(adds(from("p1", 1500)))
	if first.Adds[0] != command.AddOnTime {
		t.Fatalf("p1's record at 1500 in the first run: %v, want on time", first.Adds[0])
	}

	// The restore, an hour later: the leader's tick runs before the
	// processor is back.
	if err := PrepareRestore(checkpoint, RestoredFrom{Epoch: 1, RaftIndex: checkpointIndex, ClusterID: "old"}, 1); err != nil {
		t.Fatal(err)
	}
	g, err := Open(checkpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r := &wfsm{t: t, f: g, now: w.now + 3600e9}
	if due, err := g.WindowTickDue(r.now); err != nil || !due {
		t.Fatalf("WindowTickDue on the restored state = %v, %v; want a tick to start the restored sources' idle timeouts", due, err)
	}
	if ems := r.tick().Emissions; len(ems) != 0 {
		t.Fatalf("the first tick after the restore closed windows:\n%s", fmtEmissions(ems))
	}
	if due, err := g.WindowTickDue(r.now + 1e9); err != nil || due {
		t.Fatalf("WindowTickDue a second after the first tick = %v, %v; want no tick", due, err)
	}
	replayed := r.mustCommit(adds(from("p1", 1500)))
	if replayed.Adds[0] != first.Adds[0] {
		t.Fatalf("p1's replayed record at 1500: %v, in the first run %v", replayed.Adds[0], first.Adds[0])
	}

	// Silent for the idle timeout in the new cluster, both sources go
	// idle: the watermark becomes the greatest (p0's 5000), and the
	// window closes with both of p1's records.
	r.now += spec.IdleTimeoutMs*1_000_000 + 2e9
	if spec.IdleTimeoutMs == 0 {
		r.now += 60e9 // the default, filled in by the definition
	}
	if due, err := g.WindowTickDue(r.now); err != nil || !due {
		t.Fatalf("WindowTickDue once every source is silent for the idle timeout = %v, %v; want a tick", due, err)
	}
	ems := r.tick().Emissions
	if len(ems) != 1 || ems[0].StartMs != 1000 || ems[0].Count != 2 {
		t.Fatalf("the tick once every source went idle emitted:\n%s\nwant the window [1000, 2000) with count 2", fmtEmissions(ems))
	}
}
