package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.Dir = dir
	cfg.RaftBind = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	return cfg
}

// storeConfig is testConfig with the Raft log in logStore.
func storeConfig(logStore, dir string) Config {
	cfg := testConfig(dir)
	cfg.LogStore = logStore
	return cfg
}

// forEachLogStore runs test once on each Raft log store, as a subtest
// named after it.
func forEachLogStore(t *testing.T, test func(t *testing.T, logStore string)) {
	for _, ls := range []string{LogStoreBoltDB, LogStoreWAL} {
		t.Run(ls, func(t *testing.T) { test(t, ls) })
	}
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(ctx); err != nil {
		s.Close()
		t.Fatal(err)
	}
	if !s.IsLeader() {
		s.Close()
		t.Fatal("a ready single node is not the leader")
	}
	return s
}

func addOne(t *testing.T, s *Store) uint64 {
	t.Helper()
	idx, _, err := s.Commit(context.Background(), &command.Commit{Mutations: []command.Mutation{
		{Op: command.OpCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func counter(t *testing.T, s *Store) int64 {
	t.Helper()
	e, _, err := s.Get("ns", []byte("c"), fsm.KindCounter, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.Counter
}

func TestCommitIsAppliedBeforeItIsAcknowledged(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		s := openStore(t, storeConfig(logStore, t.TempDir()))
		defer s.Close()
		for i := 1; i <= 20; i++ {
			idx := addOne(t, s)
			if s.AppliedIndex() < idx {
				t.Fatalf("acknowledged index %d but applied only %d", idx, s.AppliedIndex())
			}
			if got := counter(t, s); got != int64(i) {
				t.Fatalf("counter = %d after %d commits", got, i)
			}
		}
		for _, c := range []Consistency{Local, Session, Linearizable} {
			applied, err := s.ReadBarrier(context.Background(), c, s.AppliedIndex())
			if err != nil || applied < s.AppliedIndex() {
				t.Fatalf("ReadBarrier(%d) = %d, %v", c, applied, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := s.ReadBarrier(ctx, Session, s.AppliedIndex()+100); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("session read of a future index: err = %v, want deadline exceeded", err)
		}
	})
}

func TestRestartKeepsEveryAcknowledgedCommitOnce(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		s := openStore(t, cfg)
		for range 50 {
			addOne(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, cfg)
		defer s.Close()
		if got := counter(t, s); got != 50 {
			t.Fatalf("counter after restart = %d, want 50", got)
		}
		addOne(t, s)
		if got := counter(t, s); got != 51 {
			t.Fatalf("counter = %d, want 51", got)
		}
	})
}

func TestReadsRightAfterRestartSeeEveryCommitWhilePebbleLostItsTail(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		s := openStore(t, cfg)
		for range 1000 {
			addOne(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Unsynced Pebble writes lost with a crash look like this, at the
		// extreme: the Raft log has every entry, Pebble none. WaitReady must
		// not return before the replay has applied them.
		if err := os.RemoveAll(filepath.Join(cfg.Dir, "state")); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, cfg)
		defer s.Close()
		if got := counter(t, s); got != 1000 {
			t.Fatalf("counter read right after WaitReady = %d, want 1000", got)
		}
	})
}

func TestLostStateBehindItsOwnSnapshotIsRefusedWithTheWayOut(t *testing.T) {
	// A snapshot this node takes refers to its state rather than copying
	// it, and Raft compacts its log up to it: with the state directory
	// gone, nothing on this disk can rebuild the state. Opening must say
	// so, name the way out, and change nothing.
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		cfg.TrailingLogs = 5
		s := openStore(t, cfg)
		for range 100 {
			addOne(t, s)
		}
		if err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			addOne(t, s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(cfg.Dir, "state")); err != nil {
			t.Fatal(err)
		}
		before := treeOf(t, filepath.Join(cfg.Dir, "raft"))
		_, err := Open(context.Background(), cfg)
		if !errors.Is(err, fsm.ErrStateBehindSnapshot) {
			t.Fatalf("open with the state lost behind the snapshot: %v, want ErrStateBehindSnapshot", err)
		}
		for _, want := range []string{cfg.Dir, "--join", "stated restore"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not name %q: %v", want, err)
			}
		}
		if after := treeOf(t, filepath.Join(cfg.Dir, "raft")); after != before {
			t.Fatalf("the refused open changed the raft dir:\n%s\nwant\n%s", after, before)
		}
	})
}

// treeOf lists the files under dir with their sizes.
func treeOf(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d\n", strings.TrimPrefix(p, dir), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestOpenRefusesAnotherNodesDataDir(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := openStore(t, cfg)
	s.Close()
	cfg.NodeID = "n2"
	_, err := Open(context.Background(), cfg)
	if !errors.Is(err, ErrClusterMismatch) {
		t.Fatalf("err = %v, want ErrClusterMismatch", err)
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"NodeID":       func(c *Config) { c.NodeID = "" },
		"Dir":          func(c *Config) { c.Dir = "" },
		"RaftBind":     func(c *Config) { c.RaftBind = "nope" },
		"ApplyTimeout": func(c *Config) { c.ApplyTimeout = 0 },
		"LogStore":     func(c *Config) { c.LogStore = "bolt" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("/tmp/x")
			mut(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v, want it to name %s", err, name)
			}
		})
	}
}

type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestRaftLogsKeepTheirLevelInSlog(t *testing.T) {
	h := &recordHandler{}
	hl := hclogAdapter(slog.New(h))
	hl.Warn("peer unreachable", "peer", "n2")
	hl.Error("disk full")
	hl.Info("entering leader state")
	want := []slog.Level{slog.LevelWarn, slog.LevelError, slog.LevelInfo}
	if len(h.records) != len(want) {
		t.Fatalf("%d records, want %d", len(h.records), len(want))
	}
	for i, r := range h.records {
		if r.Level != want[i] || strings.HasPrefix(r.Message, "[") {
			t.Errorf("record %d: level %v message %q; want level %v without the hclog prefix", i, r.Level, r.Message, want[i])
		}
	}
}

func TestANewClusterRecordsItsIDAndLeaderAddresses(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		cfg := storeConfig(logStore, t.TempDir())
		cfg.GRPCAddr = "127.0.0.1:9999"
		s := openStore(t, cfg)
		id := s.ClusterID()
		if id == "" {
			t.Fatal("no cluster id after WaitReady")
		}
		members, leader, err := s.Members()
		if err != nil || leader != "n1" || len(members) != 1 || members[0].GRPCAddr != "127.0.0.1:9999" || !members[0].Voter {
			t.Fatalf("members = %+v, leader %q, %v", members, leader, err)
		}
		if lid, addr := s.Leader(); lid != "n1" || addr != "127.0.0.1:9999" {
			t.Fatalf("Leader() = %q %q", lid, addr)
		}
		st := s.Status()
		if st.Role != "leader" || st.ClusterID != id || st.AppliedIndex == 0 || st.Term == 0 {
			t.Fatalf("status = %+v", st)
		}
		s.Close()
		s = openStore(t, cfg)
		defer s.Close()
		if s.ClusterID() != id {
			t.Fatalf("cluster id changed across a restart: %q -> %q", id, s.ClusterID())
		}
		if _, err := s.Join(context.Background(), Member{ID: "n1", RaftAddr: "127.0.0.1:1"}, ""); !errors.Is(err, ErrMemberConflict) {
			t.Fatalf("joining our own id at another address: err = %v, want ErrMemberConflict", err)
		}
		if _, err := s.Join(context.Background(), Member{ID: "n9", RaftAddr: "127.0.0.1:2"}, "other-cluster"); !errors.Is(err, ErrClusterMismatch) {
			t.Fatalf("joining from another cluster: err = %v, want ErrClusterMismatch", err)
		}
		if err := s.Remove(context.Background(), "nobody"); !errors.Is(err, ErrUnknownMember) {
			t.Fatalf("removing an unknown member: err = %v", err)
		}
		// The only voter cannot go, and the refusal changes nothing: its
		// addresses stay recorded (they went first, once).
		if err := s.Remove(context.Background(), "n1"); !errors.Is(err, ErrLastVoter) {
			t.Fatalf("removing the only voter: err = %v, want ErrLastVoter", err)
		}
		members, _, err = s.Members()
		if err != nil || len(members) != 1 || members[0].GRPCAddr != "127.0.0.1:9999" {
			t.Fatalf("members after the refused removal = %+v, %v; want n1 with its gRPC address", members, err)
		}
		if lid, addr := s.Leader(); lid != "n1" || addr != "127.0.0.1:9999" {
			t.Fatalf("Leader() after the refused removal = %q %q", lid, addr)
		}
	})
}

// TestAJoinWhoseRaftAddressCannotBeReachedChangesNothing: a node that
// gives a Raft address the leader cannot dial (a wrong --raft-addr or
// --advertise-raft-addr) is refused before it is added. Added, it made
// the one node of a new cluster a minority of two: no leader, no commit,
// and no Remove to undo it.
func TestAJoinWhoseRaftAddressCannotBeReachedChangesNothing(t *testing.T) {
	cfg := storeConfig(LogStoreWAL, t.TempDir())
	cfg.GRPCAddr = "127.0.0.1:9999"
	s := openStore(t, cfg)
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()
	before, _, err := s.Members()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = s.Join(ctx, Member{ID: "n2", RaftAddr: nobody, GRPCAddr: "127.0.0.1:2", Incarnation: "i"}, "")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), nobody) {
		t.Fatalf("join of a node at %s, where nobody listens: %v, want ErrUnreachable naming the address", nobody, err)
	}
	after, _, err := s.Members()
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Fatalf("members after the refused join = %+v, %v; want %+v", after, err, before)
	}
	addOne(t, s)
}

func TestLinearizableReadReturnsWhenTheLastEntriesAreNotCommands(t *testing.T) {
	forEachLogStore(t, func(t *testing.T, logStore string) {
		// Right after start the log ends with the election's no-op and the
		// WaitReady barrier, which the state machine never sees.
		s := openStore(t, storeConfig(logStore, t.TempDir()))
		defer s.Close()
		if err := s.raft.Barrier(time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := s.ReadBarrier(ctx, Linearizable, 0); err != nil {
			t.Fatalf("linearizable read on an idle leader: %v (commit %d, applied %d)", err, s.raft.CommitIndex(), s.AppliedIndex())
		}
	})
}
