package daemon_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/statedhq/stated/daemon"
)

// listTree lists every path under dir (relative), for messages.
func listTree(dir string) []string {
	var out []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// A refused start (malformed token file) with a data dir whose parents do
// not exist yet must leave nothing behind: "no data dir created".
func TestARefusedStartLeavesNoParentOfTheDataDirItMade(t *testing.T) {
	root := t.TempDir()
	tokens := filepath.Join(root, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {name: a, sha256: nothex, namespaces: [ns], operations: [read]}"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(root, "new", "nested", "data")
	cfg.TokenFile = tokens
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start with a malformed token file succeeded")
	}
	if _, statErr := os.Stat(filepath.Join(root, "new")); statErr == nil {
		t.Fatalf("the refused start (%v) left directories behind: %v", err, listTree(root))
	}
}

// A start refused because the Raft address is taken must not leave a new
// data dir behind, nor Raft state in it.
func TestAStartRefusedForATakenRaftAddressLeavesNoDataDir(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	root := t.TempDir()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(root, "data")
	cfg.RaftAddr = ln.Addr().String()
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start on a busy Raft address succeeded")
	}
	if _, statErr := os.Stat(cfg.DataDir); statErr == nil {
		t.Fatalf("the refused start (%v) left the data dir: %v", err, listTree(cfg.DataDir))
	}
}

// A pre-existing, empty data dir (a mounted volume) must stay empty after
// a start refused for a bad checkpoint key URL.
func TestARefusedStartLeavesAnExistingEmptyDataDirEmpty(t *testing.T) {
	cfg := testConfig(t)
	cfg.CheckpointKeyURL = "base64key://not-a-key"
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start with a bad key URL succeeded")
	}
	if left := listTree(cfg.DataDir); len(left) != 0 {
		t.Fatalf("the refused start (%v) changed the existing data dir: %v", err, left)
	}
}

// After a start refused on a busy Raft address, the operator fixes the
// address (and the node id typo); the data dir must behave as new.
func TestAStartRefusedForATakenRaftAddressDoesNotHoldTheDataDirToItsNodeID(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.RaftAddr = ln.Addr().String()
	cfg.NodeID = "typo"
	if d, err := daemon.Start(testContext(t), cfg); err == nil {
		d.Close()
		t.Fatal("Start on a busy Raft address succeeded")
	}
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.NodeID = "n1"
	d, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("the corrected start on the data dir the refused one left: %v", err)
	}
	d.Close()
}

// --bootstrap=false without --join on a new data dir is refused (README:
// "stated run exits saying so"); the refusal must not leave a data dir
// holding Raft state under the node id that was given.
func TestANewNodeWithoutBootstrapOrJoinIsRefusedLeavingNoDataDir(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Bootstrap = false
	d, err := daemon.Start(testContext(t), cfg)
	if err == nil {
		d.Close()
		t.Fatal("Start without bootstrap or join succeeded")
	}
	if _, statErr := os.Stat(cfg.DataDir); statErr == nil {
		t.Fatalf("the refused start (%v) left the data dir: %v", err, listTree(cfg.DataDir))
	}
}

// After that refusal, the corrected command (bootstrap on) must start.
func TestTheCorrectedStartAfterANoBootstrapNoJoinRefusalBootstraps(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Bootstrap = false
	if d, err := daemon.Start(testContext(t), cfg); err == nil {
		d.Close()
		t.Fatal("Start without bootstrap or join succeeded")
	}
	cfg.Bootstrap = true
	d, err := daemon.Start(testContext(t), cfg)
	if err != nil {
		t.Fatalf("the corrected start (bootstrap on) on the data dir the refused one left: %v", err)
	}
	d.Close()
}
