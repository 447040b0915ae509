package fsm

import (
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/statedhq/stated/raftstore/command"
)

// TestLineageFollowsTheChainOfRestores: a cluster never restored is its
// own lineage; a state restored from a checkpoint keeps the lineage of
// the state the checkpoint holds, through any number of restores, so
// that a live client of the first cluster is served by every restored
// copy of it and by no other cluster. A state restored by a release that
// did not record lineages answers the cluster its checkpoint came from.
func TestLineageFollowsTheChainOfRestores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := f.Lineage(); err != nil || l != "" {
		t.Fatalf("lineage before a cluster id = %q, %v; want none", l, err)
	}
	apply(t, f, 1, &command.Command{Type: command.TypeSetClusterID, ClusterID: "first"})
	apply(t, f, 2, putCmd("c", "k", "v"))
	if l, err := f.Lineage(); err != nil || l != "first" {
		t.Fatalf("lineage of a cluster never restored = %q, %v; want its id", l, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Restored, twice: each restored cluster records an id of its own
	// and keeps the first one's lineage.
	for i, id := range []string{"second", "third"} {
		prev := []string{"first", "second"}[i]
		// The state is at index 2, then at the restored cluster's 1.
		applied := []uint64{2, 1}[i]
		if err := PrepareRestore(dir, RestoredFrom{Epoch: uint64(i + 1), RaftIndex: applied, ClusterID: prev}, 1); err != nil {
			t.Fatal(err)
		}
		f, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := f.Lineage(); err != nil || l != "first" {
			t.Fatalf("restore %d: lineage before the new id = %q, %v; want %q", i+1, l, err, "first")
		}
		apply(t, f, 1, &command.Command{Type: command.TypeSetClusterID, ClusterID: id})
		if got, _ := f.ClusterID(); got != id {
			t.Fatalf("restore %d: cluster id %q, want %q", i+1, got, id)
		}
		if l, err := f.Lineage(); err != nil || l != "first" {
			t.Fatalf("restore %d: lineage = %q, %v; want %q", i+1, l, err, "first")
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// A state an older release restored has no lineage record: it
	// answers the cluster its checkpoint came from, and a restore of it
	// carries that on.
	db, err := pebble.Open(dir, PebbleOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(keyLineage, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := f.Lineage(); err != nil || l != "second" {
		t.Fatalf("lineage of a state restored without a lineage record = %q, %v; want the cluster it was restored from", l, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := PrepareRestore(dir, RestoredFrom{Epoch: 3, RaftIndex: 1, ClusterID: "third"}, 1); err != nil {
		t.Fatal(err)
	}
	f, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if l, err := f.Lineage(); err != nil || l != "second" {
		t.Fatalf("lineage restored from such a state = %q, %v; want its lineage, %q", l, err, "second")
	}
}
