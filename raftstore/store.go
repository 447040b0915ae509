package raftstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// Store is one node of the replicated store.
type Store struct {
	cfg    Config
	logger *slog.Logger
	// supersededCh is closed, and supersededErr set, when a peer answers
	// that its cluster was restored from this node's (markSuperseded).
	supersededCh   chan struct{}
	supersededOnce sync.Once
	supersededErr  error
	// opened is when Open started: a node told it was superseded stops
	// only within SupersedeGrace of it (markSuperseded).
	opened            time.Time
	supersededLogOnce sync.Once
	// unlockDir releases the data dir's lock (LockDataDir), last.
	unlockDir func()

	fsm       *fsm.FSM
	raft      *raft.Raft
	log       logStore // see logstore.go
	logKind   string   // LogStoreWAL or LogStoreBoltDB
	transport *raft.NetworkTransport
	raftLn    net.Listener      // bound first; the transport's once it exists
	stream    raft.StreamLayer  // the transport's, for Join's dial of a joining node
	guard     *guardedTransport // the transport Raft uses; see transport.go
	gate      *voteGate         // non-nil while this node has to join; see votegate.go
	// incarnation is the id this node joins under (see markJoining); ""
	// for a node that did not have to join when it opened.
	incarnation string
	joinDone    chan struct{} // closed when watchJoin returns; nil without a gate
	snaps       snapshotStore // see snapstore.go
	raftDir     string

	hadState bool // Dir held Raft state when the store was opened
	// bootstrapAnswer is Config.BootstrapIf's answer; see bootstrap.
	bootstrapOnce   sync.Once
	bootstrapAnswer bool
	// clusterID is the cluster id once this node has applied it; see
	// ClusterID.
	clusterID atomic.Pointer[string]
	// lineage is the cluster's lineage once known; see Lineage.
	lineage atomic.Pointer[string]
	// bootstrapClusterID is the id this node chose when it bootstrapped a
	// new cluster, for its first leader to record; "" otherwise.
	bootstrapClusterID string
	// expectedClusterID is the id of the cluster a joining node joins;
	// see ExpectClusterID.
	expectedClusterID atomic.Pointer[string]
	// readyTerm is the last term in which this node, as leader, saw an
	// entry of its own term commit; see ensureTermCommitted.
	readyTerm atomic.Uint64

	closeOnce sync.Once
	closeErr  error

	// The leadership watcher; see watchLeadership. Its context also ends
	// the scans of Counts when the store closes.
	watchCtx  context.Context
	stopWatch context.CancelFunc
	watchDone chan struct{}
	// raftDown is closed once Raft shuts down, by Close or on its own,
	// or once Close begins; see watchShutdown.
	raftDown chan struct{}

	// The running scan of Counts, shared by its callers; see Counts.
	countsMu  sync.Mutex
	countsRun *countsRun

	trigger snapshotTrigger // the size trigger of Raft snapshots; see snapbytes.go

	// membership is held by the Join or Remove running on this leader;
	// see lockMembership.
	membership chan struct{}
}

// Open opens the store in cfg.Dir and starts its Raft node. With
// cfg.Bootstrap and no Raft state in cfg.Dir, it bootstraps a single-node
// cluster of itself.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, logger: logger, membership: make(chan struct{}, 1), supersededCh: make(chan struct{}), opened: time.Now()}
	if err := s.open(ctx); err != nil {
		s.closeParts()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	// The data dir is this node's while it runs: no restore into it, and
	// no start while a restore runs in it.
	unlock, err := LockDataDir(s.cfg.Dir)
	if err != nil {
		return err
	}
	s.unlockDir = unlock
	// A restore interrupted by a crash is completed or rolled back before
	// anything is read.
	if err := RecoverDataDir(s.cfg.Dir); err != nil {
		return err
	}
	raftDir := filepath.Join(s.cfg.Dir, raftDirName)
	// Decide the log store before anything is written: a data dir whose
	// log is the other kind is refused as it is.
	if s.logKind, err = resolveLogStore(raftDir, s.cfg.LogStore); err != nil {
		return err
	}
	// Bind the Raft address before anything is written: a start refused
	// for a taken address leaves no state under a node id (one mistyped
	// with the address would hold the data dir to it).
	if s.raftLn, err = net.Listen("tcp", s.cfg.RaftBind); err != nil {
		return fmt.Errorf("raftstore: raft transport on %s: %w", s.cfg.RaftBind, err)
	}
	if s.fsm, err = fsm.OpenContext(ctx, filepath.Join(s.cfg.Dir, stateDirName), s.logger, s.fsmOptions()...); err != nil {
		return err
	}
	// Refuse state without a log, and restored state that would join a
	// cluster, before creating one (checked again below, on the log's
	// contents).
	if err := s.checkStateHasLog(raftDir); err != nil {
		return err
	}
	if err := s.checkRestoredStateBootstraps(ctx, raftDir); err != nil {
		return err
	}
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	if err := checkNodeID(raftDir, s.cfg.NodeID); err != nil {
		return err
	}
	hlog := hclogAdapter(s.logger)
	if s.log, err = openLogStore(raftDir, s.logKind, hlog); err != nil {
		return err
	}
	s.log = newRecentLog(s.log)
	s.logger.Info("opened the raft log", "store", s.logKind, "path", filepath.Join(s.cfg.Dir, logStorePath(s.logKind)))
	files, err := raft.NewFileSnapshotStoreWithLogger(raftDir, s.cfg.SnapshotRetain, hlog)
	if err != nil {
		return fmt.Errorf("raftstore: open snapshot store: %w", err)
	}
	s.snaps = snapshotStore{FileSnapshotStore: files, fsm: s.fsm, dir: raftDir, logger: s.logger}
	if err := s.checkStateHasLog(raftDir); err != nil {
		return err
	}
	if err := s.checkRestoredStateBootstraps(ctx, raftDir); err != nil {
		return err
	}
	if err := s.catchUpFromSnapshot(); err != nil {
		return err
	}
	existing, err := raft.HasExistingState(s.log, s.log, s.snaps)
	if err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	s.hadState = existing
	s.raftDir = raftDir
	joining, err := isJoining(raftDir)
	if err != nil {
		return err
	}
	switch {
	case !existing && !joining && !s.bootstrap(ctx):
		if s.incarnation, err = markJoining(raftDir); err != nil {
			return err
		}
		joining = true
	case joining:
		if s.incarnation, err = joiningIncarnation(raftDir); err != nil {
			return err
		}
	}
	if !existing && !joining && s.bootstrap(ctx) {
		// Chosen before the transport listens, so that a node of another
		// cluster that dials this address (it was a member's) is refused
		// from the first connection on, not only once the first leader
		// has recorded the id.
		s.bootstrapClusterID = newClusterID()
	}
	if s.transport, err = s.newTransport(hlog); err != nil {
		return err
	}
	s.guard = newGuardedTransport(s.transport)
	var trans raft.Transport = s.guard
	if joining {
		s.gate = newVoteGate(s.guard, s.cfg.NodeID, s.logger)
		trans = s.gate
		s.logger.Info("this node has to join its cluster: it refuses votes until its join is accepted", "node", s.cfg.NodeID)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	// Pebble keeps the state across restarts; Raft need only replay the
	// entries after its newest snapshot (see catchUpFromSnapshot).
	rc.NoSnapshotRestoreOnStart = true

	if s.raft, err = raft.NewRaft(rc, s.fsm, s.log, s.log, s.snaps, trans); err != nil {
		return fmt.Errorf("raftstore: start raft: %w", err)
	}
	if s.gate != nil {
		s.gate.follow(s.raft)
	}
	// A follower that comes back gets its entries within half a heartbeat
	// timeout, the most Raft waits between its heartbeats to a peer.
	s.guard.keepReplicating(s.replicatesTo, s.cfg.HeartbeatTimeout/2, s.logger)
	s.watchCtx, s.stopWatch = context.WithCancel(context.Background())
	s.raftDown = make(chan struct{}) // before anything waits on a future
	go s.watchShutdown()
	s.watchDone = make(chan struct{})
	go s.watchLeadership()
	if s.gate != nil {
		s.joinDone = make(chan struct{})
		go s.watchJoin()
	}
	if !existing && !joining && s.bootstrap(ctx) {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       rc.LocalID,
			Address:  s.transport.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("raftstore: bootstrap: %w", err)
		}
		s.logger.Info("bootstrapped a new single-node cluster", "node", s.cfg.NodeID, "raft_addr", s.transport.LocalAddr())
	}
	if err := s.snapshotRestoredState(ctx); err != nil {
		return err
	}
	s.startSnapshotTrigger()
	return nil
}

// snapshotRestoredState makes a cluster restored from a checkpoint hand its
// state to the nodes that join it. The restored state is in Pebble, not in
// the new Raft log, which starts at index 1: a joining node replicating
// that log from the start would apply the few entries since the restore to
// an empty state. So the restored cluster's single node takes a Raft
// snapshot of its state and compacts its whole log before it serves
// anything; a node that joins then needs entries the log no longer has,
// and is sent the snapshot (InstallSnapshot). It runs until such a
// snapshot exists, so a crash right after the bootstrap is caught up on
// the next start.
func (s *Store) snapshotRestoredState(ctx context.Context) error {
	if _, restored, err := s.fsm.RestoredFrom(); err != nil || !restored {
		return err
	}
	snaps, err := s.snaps.List()
	if err != nil {
		return fmt.Errorf("raftstore: list snapshots: %w", err)
	}
	if len(snaps) > 0 {
		return nil
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	if servers := cf.Configuration().Servers; len(servers) != 1 || servers[0].ID != raft.ServerID(s.cfg.NodeID) {
		// Not the restored cluster's first node: it got its state from
		// the snapshot, or joins and will.
		return nil
	}
	if err := s.WaitLeader(ctx); err != nil {
		return fmt.Errorf("raftstore: restored state: %w", err)
	}
	if err := s.untilClosed(ctx, s.raft.Barrier(s.cfg.ApplyTimeout)); err != nil {
		return fmt.Errorf("raftstore: restored state: %w", raftError(err))
	}
	orig := s.raft.ReloadableConfig()
	compact := orig
	compact.TrailingLogs = 0
	if err := s.raft.ReloadConfig(compact); err != nil {
		return fmt.Errorf("raftstore: restored state: %w", err)
	}
	err = s.raft.Snapshot().Error()
	if rerr := s.raft.ReloadConfig(orig); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("raftstore: snapshot of the restored state: %w", err)
	}
	s.logger.Info("took a Raft snapshot of the restored state, so that joining nodes receive it", "node", s.cfg.NodeID, "index", s.raft.LastIndex())
	return nil
}

func (s *Store) newTransport(hlog hclog.Logger) (*raft.NetworkTransport, error) {
	ln := s.raftLn
	var layer raft.StreamLayer
	if s.cfg.StreamLayer != nil {
		layer = s.cfg.StreamLayer(ln)
	} else {
		tl := &tcpLayer{Listener: ln, advertise: ln.Addr()}
		if s.cfg.RaftAdvertise != "" {
			// Kept as written, a DNS name included: peers resolve it
			// whenever they dial, so a node that comes back with another
			// IP (a Kubernetes pod) is still reached at the address its
			// cluster configuration holds.
			tl.advertise = namedAddr(s.cfg.RaftAdvertise)
		}
		layer = tl
	}
	layer = newClusterLayer(layer, s.peerClusterID, s.restoredFromCluster, s.markSuperseded, s.logger)
	s.stream = layer
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  boundedDial{StreamLayer: layer, max: peerDialTimeout(s.cfg.ElectionTimeout)},
		MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
	}), nil
}

// tcpLayer is the plain TCP stream layer of the Raft transport.
type tcpLayer struct {
	net.Listener
	advertise net.Addr
}

func (t *tcpLayer) Addr() net.Addr { return t.advertise }

// namedAddr is an advertised host:port, which may name its host.
type namedAddr string

func (a namedAddr) Network() string { return "tcp" }
func (a namedAddr) String() string  { return string(a) }

func (t *tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// noRaftState reports whether this node has no Raft state. Before the
// log store is open it looks only for the log's files (either store's):
// with some, it reports false, and the check is made again on their
// contents once the store is open.
func (s *Store) noRaftState(raftDir string) (bool, error) {
	if s.log == nil {
		kind, err := detectLogStore(raftDir)
		return err == nil && kind == "", err
	}
	existing, err := raft.HasExistingState(s.log, s.log, s.snaps)
	if err != nil {
		return false, fmt.Errorf("raftstore: %w", err)
	}
	return !existing, nil
}

// bootstrap reports whether this node starts a new cluster when Dir
// holds no Raft state: Config.BootstrapIf's answer, asked once, or
// Config.Bootstrap. Callers ask only once they know there is no state.
func (s *Store) bootstrap(ctx context.Context) bool {
	if s.cfg.BootstrapIf == nil {
		return s.cfg.Bootstrap
	}
	s.bootstrapOnce.Do(func() { s.bootstrapAnswer = s.cfg.BootstrapIf(ctx) })
	return s.bootstrapAnswer
}

// checkRestoredStateBootstraps refuses to join a cluster with state
// restored from a checkpoint (stated restore) and no Raft state yet. Such
// state starts a new cluster: its applied index is zero, so a cluster it
// joined would replicate its own log from the start onto it, and this
// replica would keep the restored keys the others do not have. A node of
// the restored cluster has Raft state as soon as it holds the state (a
// joining one receives it with a snapshot), so only a node given --join
// on a freshly restored data dir is refused, before anything is written.
func (s *Store) checkRestoredStateBootstraps(ctx context.Context, raftDir string) error {
	from, restored, err := s.fsm.RestoredFrom()
	if err != nil || !restored {
		return err
	}
	if none, err := s.noRaftState(raftDir); err != nil || !none {
		return err
	}
	if s.bootstrap(ctx) {
		return nil
	}
	return fmt.Errorf("%w: data dir %s holds the state restored from checkpoint %d of cluster %s, which starts a new cluster: "+
		"start this node without --join, so that it bootstraps, and the other nodes join it with empty data dirs; "+
		"to join a running cluster instead, wipe the data dir",
		ErrRestoredStateJoins, s.cfg.Dir, from.Epoch, from.ClusterID)
}

// checkStateHasLog refuses state that has applied entries but no Raft
// log to go with it. Such state was left by an interrupted restore of an
// older version, or by a deleted raft/ dir; Raft would bootstrap a new log
// on it, and the state machine would skip every new entry at or below its
// applied index without applying it.
func (s *Store) checkStateHasLog(raftDir string) error {
	applied := s.fsm.AppliedIndex()
	if applied == 0 {
		return nil
	}
	if none, err := s.noRaftState(raftDir); err != nil || !none {
		return err
	}
	return fmt.Errorf("%w: data dir %s holds state applied up to index %d but no Raft log: "+
		"it was left by an interrupted restore or a deleted %s/ dir; run `stated restore` again, "+
		"or wipe the data dir and rejoin with --join",
		ErrStateWithoutLog, s.cfg.Dir, applied, raftDirName)
}

// catchUpFromSnapshot restores the newest Raft snapshot into the state
// machine when the state machine is behind it: with
// NoSnapshotRestoreOnStart, Raft replays only the entries after the
// snapshot, so a state machine behind it would silently miss entries.
//
// A snapshot's Raft index counts every entry, the state machine's applied
// index only commands: a snapshot taken when the log ended on a no-op, a
// barrier or a configuration change has an index above the applied index
// it holds. So when the Raft index is ahead, the snapshot's own applied
// index decides.
func (s *Store) catchUpFromSnapshot() error {
	metas, err := s.snaps.List()
	if err != nil {
		return fmt.Errorf("raftstore: list snapshots: %w", err)
	}
	applied := s.fsm.AppliedIndex()
	if len(metas) == 0 || metas[0].Index <= applied {
		return nil
	}
	snapApplied, err := s.snapshotAppliedIndex(metas[0].ID)
	if err != nil {
		return err
	}
	if snapApplied <= applied {
		return nil
	}
	_, rc, err := s.snaps.Open(metas[0].ID)
	if errors.Is(err, fsm.ErrStateBehindSnapshot) {
		// A snapshot this node took refers to its state, which has since
		// been lost or replaced: the log before the snapshot is compacted,
		// so nothing here can bring the state back.
		return fmt.Errorf("raftstore: data dir %s: the state is at applied index %d, behind the raft snapshot %s this node took at %d, "+
			"which refers to the state instead of copying it: the state directory was replaced or lost; "+
			"wipe the data dir and rejoin with --join, or run `stated restore` from a checkpoint: %w",
			s.cfg.Dir, applied, metas[0].ID, snapApplied, err)
	}
	if err != nil {
		return fmt.Errorf("raftstore: open snapshot %s: %w", metas[0].ID, err)
	}
	s.logger.Warn("state is behind the newest raft snapshot; restoring it",
		"applied", applied, "snapshot", metas[0].ID, "snapshot_index", metas[0].Index, "snapshot_applied", snapApplied)
	return s.fsm.Restore(rc)
}

// snapshotAppliedIndex reads the applied index the state in snapshot id
// holds; it reads only the start of the snapshot.
func (s *Store) snapshotAppliedIndex(id string) (uint64, error) {
	_, rc, err := s.snaps.FileSnapshotStore.Open(id) // a reference as it is
	if err != nil {
		return 0, fmt.Errorf("raftstore: open snapshot %s: %w", id, err)
	}
	defer rc.Close()
	idx, err := fsm.SnapshotAppliedIndex(rc)
	if err != nil {
		return 0, fmt.Errorf("raftstore: snapshot %s: %w", id, err)
	}
	return idx, nil
}

// checkNodeID records the node id in a fresh raft directory and refuses to
// open a directory that belongs to another node. The record is synced,
// with the directories that name it, before the log is opened, so a log
// that holds anything has it whole. An empty record is one whose write a
// crash cut short (or an older release's, which did not sync it): it is
// written again rather than read as another node's.
func checkNodeID(raftDir, id string) error {
	p := filepath.Join(raftDir, "node-id")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) || err == nil && len(bytes.TrimSpace(b)) == 0 {
		if err := writeFileSync(p, []byte(id+"\n")); err != nil {
			return fmt.Errorf("raftstore: %w", err)
		}
		if err := syncDir(filepath.Dir(raftDir)); err != nil {
			return fmt.Errorf("raftstore: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftstore: %w", err)
	}
	if got := strings.TrimSpace(string(b)); got != id {
		return fmt.Errorf("%w: %s belongs to node %q, not %q", ErrClusterMismatch, raftDir, got, id)
	}
	return nil
}

// Close shuts Raft down, then closes the log store and Pebble.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.closeParts() })
	return s.closeErr
}

func (s *Store) closeParts() error {
	var errs []error
	if s.stopWatch != nil {
		s.stopWatch()
	}
	s.stopSnapshotTrigger()
	if s.guard != nil {
		s.guard.stopRetries() // Shutdown waits for Raft's replication
	}
	if s.raft != nil {
		errs = append(errs, s.raft.Shutdown().Error())
	}
	s.waitSnapshotTrigger() // a snapshot it waits for ends with Raft
	if s.watchDone != nil {
		<-s.watchDone // futures fail once Raft is shut down
	}
	if s.joinDone != nil {
		<-s.joinDone
	}
	if s.guard != nil {
		s.guard.stopHeartbeats()
	}
	if s.gate != nil {
		s.gate.close()
	}
	if s.transport != nil {
		errs = append(errs, s.transport.Close())
	} else if s.raftLn != nil {
		s.raftLn.Close()
	}
	if s.log != nil {
		errs = append(errs, s.log.Close())
	}
	if s.fsm != nil {
		errs = append(errs, s.fsm.Close())
	}
	if s.unlockDir != nil {
		s.unlockDir()
	}
	return errors.Join(errs...)
}

// replicatesTo reports whether this node leads in term and id is a
// member at addr: whether Raft still replicates to that peer there.
func (s *Store) replicatesTo(id raft.ServerID, addr raft.ServerAddress, term uint64) bool {
	if s.raft.State() != raft.Leader || s.raft.CurrentTerm() != term {
		return false
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == id {
			return srv.Address == addr
		}
	}
	return false
}

// WaitLeader blocks until this node knows a leader.
func (s *Store) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: no leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// WaitReady blocks until this node knows a leader and, when it is the
// leader itself, has applied every entry committed before (a Raft
// barrier). After a restart Raft replays the log into the state machine in
// the background; a node that served local reads before that would show
// acknowledged commits as missing.
func (s *Store) WaitReady(ctx context.Context) error {
	if err := s.WaitLeader(ctx); err != nil {
		return err
	}
	if s.raft.State() != raft.Leader {
		return nil
	}
	if err := s.untilClosed(ctx, s.raft.Barrier(s.timeout(ctx))); err != nil {
		return fmt.Errorf("raftstore: apply the log before serving: %w", raftError(err))
	}
	// A new leader records the cluster id (the first leader of a new
	// cluster) and its own addresses just after the election (see
	// watchLeadership); clients may ask for both as soon as we serve.
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !s.metadataRecorded() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: cluster id and own addresses not recorded: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// metadataRecorded reports whether the cluster id and this node's own
// addresses are applied here.
func (s *Store) metadataRecorded() bool {
	if s.ClusterID() == "" {
		return false
	}
	addrs, err := s.grpcAddrs()
	if err != nil {
		return false
	}
	got, ok := addrs[s.cfg.NodeID]
	return ok && got == s.cfg.GRPCAddr
}

// HadState reports whether the data directory held Raft state when the
// store was opened. A node that did is a member already and must not
// bootstrap again; it must still join when NeedsJoin says so.
func (s *Store) HadState() bool { return s.hadState }

// NeedsJoin reports whether this node has to be added to its cluster
// through Join before it counts as a member: it was opened without Raft
// state and without Bootstrap, or an earlier join never completed (the
// node may have received part of the log meanwhile). Until Joined is
// called, the node refuses every vote: its data dir may have replaced a
// lost one, and a vote cast without the lost log could elect a leader
// missing acknowledged commits.
func (s *Store) NeedsJoin() bool { return s.gate != nil && !s.gate.opened.Load() }

// Incarnation is the id this node joins under: pass it in the Member
// given to Store.Join. It is "" for a node that did not have to join.
func (s *Store) Incarnation() string { return s.incarnation }

// Joined records that the cluster's leader has accepted this node's Join
// (Store.Join returned): the node votes from now on, and on later starts
// too. Call it only after Join succeeded. The store also calls it itself
// once it applied the metadata entry the leader's Join recorded for this
// incarnation (see watchJoin).
func (s *Store) Joined() error {
	if s.gate == nil {
		return nil
	}
	if err := clearJoining(s.raftDir); err != nil {
		return err
	}
	s.gate.open()
	return nil
}

// IsLeader reports whether this node is the Raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// transferDialTimeout bounds TransferLeadership's dial of each other
// voter's Raft address.
const transferDialTimeout = 500 * time.Millisecond

// TransferLeadership hands this node's leadership to another voter and
// returns that voter's id once this node knows it leads. The target is the
// first other voter, in the configuration's order, whose Raft address
// answers a dial (a voter that is down could never take over); hashicorp/
// raft's LeadershipTransferToServer then stops taking proposals, brings
// the target's log up to this node's, and tells it to start an election at
// once, which it wins without waiting for an election timeout. It fails
// with ErrNotLeader on a node that does not lead, with ErrNoOtherVoter in
// a cluster with no other voter, when no other voter answers, and when
// ctx ends first; a failed transfer leaves this node
// leading, or an election under way.
func (s *Store) TransferLeadership(ctx context.Context) (string, error) {
	if !s.IsLeader() {
		return "", ErrNotLeader
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return "", raftError(err)
	}
	var unreachable []string
	var target *raft.Server
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage != raft.Voter || string(srv.ID) == s.cfg.NodeID {
			continue
		}
		conn, err := s.stream.Dial(srv.Address, min(transferDialTimeout, s.timeout(ctx)))
		if err != nil {
			unreachable = append(unreachable, fmt.Sprintf("%s at %s: %v", srv.ID, srv.Address, err))
			continue
		}
		conn.Close()
		target = &srv
		break
	}
	switch {
	case target == nil && unreachable == nil:
		return "", ErrNoOtherVoter
	case target == nil:
		return "", fmt.Errorf("raftstore: no other voter answers to take leadership over: %s", strings.Join(unreachable, "; "))
	}
	if err := s.untilClosed(ctx, s.raft.LeadershipTransferToServer(target.ID, target.Address)); err != nil {
		return "", fmt.Errorf("raftstore: leadership transfer to %s: %w", target.ID, raftError(err))
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := s.raft.LeaderWithID(); id != "" && string(id) != s.cfg.NodeID {
			return string(id), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("raftstore: leadership transfer to %s: no other leader known yet: %w", target.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// NodeID is this node's id.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// RaftAddr is the address of this node's Raft transport.
func (s *Store) RaftAddr() string { return string(s.transport.LocalAddr()) }

// AppliedIndex is the index of the last entry this node applied.
func (s *Store) AppliedIndex() uint64 { return s.fsm.AppliedIndex() }

// Commit proposes a transaction and waits until this node applied it. It
// returns the entry's index, a *fsm.RejectError (errors.Is ErrRejected)
// when the state machine refused it and nothing applied, or ErrNotLeader.
//
// A commit with a session (SessionID set) is applied at most once per
// (lane, sequence): a retry is answered with the first application's index
// and dup set; a refusal by the session is a *fsm.SessionError.
func (s *Store) Commit(ctx context.Context, c *command.Commit) (index uint64, dup bool, err error) {
	out, err := s.CommitOutcome(ctx, c)
	return out.Index, out.Duplicate, err
}

// OpenSession opens a client session for clientID with id, or a fresh
// random id when id is zero, and the configured idle timeout, fencing the
// client id's older sessions. An open of the client id's current session
// (a retry of the open that made it) answers it and changes nothing.
func (s *Store) OpenSession(ctx context.Context, clientID string, id uint64) (fsm.SessionOpened, error) {
	for id == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fsm.SessionOpened{}, fmt.Errorf("raftstore: session id: %w", err)
		}
		id = binary.BigEndian.Uint64(b[:]) >> 1 // positive in every language's int64
	}
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeOpenSession, Session: &command.Session{
		ClientID: clientID, ID: id, IdleTimeout: int64(s.cfg.SessionIdleTimeout),
	}})
	if err != nil {
		return fsm.SessionOpened{}, err
	}
	if res.Err != nil {
		return fsm.SessionOpened{}, res.Err
	}
	return *res.Session, nil
}

// ExpireSessions deletes up to limit sessions idle past their timeout,
// proposing an entry only when there are some, or when records of ended
// sessions are due (the entry sweeps those, with no session listed). It
// reports how many sessions it proposed to delete.
func (s *Store) ExpireSessions(ctx context.Context, limit int) (int, error) {
	now := time.Now().UnixNano()
	idle, err := s.fsm.IdleSessions(now, limit)
	if err != nil {
		return 0, s.waitError(err)
	}
	if len(idle) == 0 {
		due, err := s.fsm.EndedSessionsDue(now)
		if err != nil || !due {
			return 0, s.waitError(err)
		}
		_, err = s.propose(ctx, &command.Command{Type: command.TypeExpireSessions})
		return 0, err
	}
	if _, err := s.propose(ctx, &command.Command{Type: command.TypeExpireSessions, Expired: idle}); err != nil {
		return 0, err
	}
	return len(idle), nil
}

// Session returns clientID's current session, if it has one.
func (s *Store) Session(clientID string) (fsm.ClientSession, bool, error) {
	cs, ok, err := s.fsm.Session(clientID)
	return cs, ok, s.waitError(err)
}

// Expire deletes up to limit expired entries, proposing an entry only when
// something is due. It reports whether it proposed one.
func (s *Store) Expire(ctx context.Context, limit uint32) (bool, error) {
	due, err := s.fsm.ExpiryDue(time.Now().UnixNano())
	if err != nil || !due {
		return false, err
	}
	_, err = s.propose(ctx, &command.Command{Type: command.TypeExpire, ExpireLimit: limit})
	return err == nil, err
}

func (s *Store) propose(ctx context.Context, cmd *command.Command) (uint64, error) {
	res, err := s.proposeResult(ctx, cmd)
	if err != nil {
		return 0, err
	}
	return res.Index, res.Err
}

// proposeResult proposes cmd and returns the state machine's result, or
// the error that kept the entry from applying. Its commits in a session
// get their payload hash as it is encoded (command.EncodeProposal).
func (s *Store) proposeResult(ctx context.Context, cmd *command.Command) (*fsm.Result, error) {
	if s.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	cmd.Now = time.Now().UnixNano()
	f := s.raft.Apply(command.EncodeProposal(cmd), s.timeout(ctx))
	if err := s.untilClosed(ctx, f); err != nil {
		// Once proposed, the entry may still commit when the caller
		// stops waiting or Raft shuts down: hashicorp/raft answers a
		// committed entry ErrRaftShutdown when it shuts down before
		// handing it to the state machine, and leaves it unanswered
		// when its state machine goroutine stops first. The outcome is
		// unknown, and a retry with the same client id and sequence is
		// the safe way to learn it.
		if ctxErr := ctx.Err(); ctxErr != nil && err == ctxErr {
			return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrClosed)
		}
		return nil, raftError(err)
	}
	return f.Response().(*fsm.Result), nil
}

// Claim gives each of c's partitions a new epoch owned by c.Owner, which
// fences out every earlier claimant's commits, and returns the epochs with
// the offsets stored when the claim applied, and the claim's index.
func (s *Store) Claim(ctx context.Context, c *command.Claim) ([]fsm.ClaimedPartition, uint64, error) {
	res, err := s.proposeResult(ctx, &command.Command{Type: command.TypeClaim, Claim: c})
	if err != nil {
		return nil, 0, err
	}
	return res.Claimed, res.Index, res.Err
}

// Release gives up c's partitions at the epochs given, where c.Owner still
// holds them; it returns the entry's index.
func (s *Store) Release(ctx context.Context, c *command.Claim) (uint64, error) {
	return s.propose(ctx, &command.Command{Type: command.TypeRelease, Claim: c})
}

// Checkpoint proposes the barrier of a new checkpoint epoch and waits
// until this node applied it: every replica makes a local Pebble
// checkpoint of the state as of the barrier. It returns the epoch, the
// barrier's index and term, and this node's checkpoint directory.
func (s *Store) Checkpoint(ctx context.Context) (fsm.CheckpointResult, error) {
	return s.barrier(ctx, false)
}

// Flush writes this node's memtable to a table (see fsm.FSM.Flush).
func (s *Store) Flush() error { return s.waitError(s.fsm.Flush()) }

// FlushContext is Flush, given up on when ctx ends.
func (s *Store) FlushContext(ctx context.Context) error {
	return s.waitError(s.fsm.FlushContext(ctx))
}

// CompleteCheckpoint records that epoch's manifest is written, with the
// checkpoint's offsets; replicas drop their local checkpoints up to it.
func (s *Store) CompleteCheckpoint(ctx context.Context, epoch uint64, offsets []command.Offset) error {
	_, err := s.propose(ctx, &command.Command{Type: command.TypeCheckpointDone, Epoch: epoch, Offsets: offsets})
	return err
}

// CheckpointedOffsets returns group's offsets as of the newest completed
// checkpoint.
func (s *Store) CheckpointedOffsets(group string) ([]command.Offset, error) {
	o, err := s.fsm.CheckpointedOffsets(group)
	return o, s.waitError(err)
}

// CheckpointState returns the newest barrier epoch and the newest
// completed one, as this node has applied them.
func (s *Store) CheckpointState() (fsm.CheckpointState, error) {
	st, err := s.fsm.CheckpointState()
	return st, s.waitError(err)
}

// restoredFromCluster is the id of the cluster this cluster's state was
// restored from, "" if it was not (or the record does not read).
func (s *Store) restoredFromCluster() string {
	r, ok, err := s.fsm.RestoredFrom()
	if err != nil || !ok {
		return ""
	}
	return r.ClusterID
}

// SupersedeGrace is how long after it starts a node stops when a peer
// tells it that its cluster was replaced by a restore (markSuperseded).
// A node started on its data dir from before a rollback's restore (with
// the restored node, as the rollback starts them) is told within
// seconds. A node that has served longer is a member of a cluster that
// went on while someone restored its checkpoint onto one member's
// address: it keeps serving and logs the error, and the restored node,
// which finds that cluster still answering, refuses itself (see the
// daemon's checkSameCluster).
const SupersedeGrace = 30 * time.Second

// markSuperseded records that a peer's cluster was restored from a
// checkpoint of this node's: within SupersedeGrace of the node's start,
// Superseded is closed; later it is only logged.
func (s *Store) markSuperseded(err error) {
	if time.Since(s.opened) > SupersedeGrace {
		s.supersededLogOnce.Do(func() {
			s.logger.Error("raft: a member's address serves a cluster restored from a checkpoint of this one; this node has served for longer than the grace of a rollback's start, so it goes on (the restored node refuses itself when it finds this cluster answering): stop whichever of the two is not wanted",
				"node", s.cfg.NodeID, "error", err)
		})
		return
	}
	s.supersededOnce.Do(func() {
		s.supersededErr = err
		s.logger.Error("raft: this node's cluster was replaced by a restore from its checkpoint; it stops: wipe its data dir and start it with --join to add it to the restored cluster",
			"node", s.cfg.NodeID, "error", err)
		close(s.supersededCh)
	})
}

// Superseded is closed when a node of a cluster restored from a
// checkpoint of this node's cluster refused this node's Raft connection:
// this node's data dir is from before that restore, and it must stop;
// SupersededErr says which node refused it.
func (s *Store) Superseded() <-chan struct{} { return s.supersededCh }

// SupersededErr is what closed Superseded; nil while it is open.
func (s *Store) SupersededErr() error {
	select {
	case <-s.supersededCh:
		return fmt.Errorf("%w (wipe the data dir %s and start the node with --join, to add it to the restored cluster)", s.supersededErr, s.cfg.Dir)
	default:
		return nil
	}
}

// RestoredFrom returns the checkpoint this cluster's state was restored
// from, if it was.
func (s *Store) RestoredFrom() (fsm.RestoredFrom, bool, error) {
	r, ok, err := s.fsm.RestoredFrom()
	return r, ok, s.waitError(err)
}

// RestoredMembers returns the members of the checkpoint this cluster's
// state was restored from, with the addresses they had in the cluster
// that took it; none if it was not restored (or was restored by a
// release that did not keep them).
func (s *Store) RestoredMembers() ([]command.Member, error) {
	m, err := s.fsm.RestoredMembers()
	return m, s.waitError(err)
}

// Term returns the current Raft term.
func (s *Store) Term() uint64 { return s.raft.CurrentTerm() }

// Claims returns group's partition claims, by topic and partition.
func (s *Store) Claims(group string) ([]fsm.Claim, error) {
	c, err := s.fsm.Claims(group)
	return c, s.waitError(err)
}

func raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("raftstore: %w: %v", context.DeadlineExceeded, err)
	}
	return fmt.Errorf("raftstore: %w", err)
}

// Consistency is how fresh a read must be.
type Consistency int

const (
	// Local reads this node's state as it is.
	Local Consistency = iota
	// Session waits until this node has applied a given index.
	Session
	// Linearizable has the leader confirm its leadership and apply its
	// commit index before reading.
	Linearizable
)

// ReadBarrier waits until a read at consistency c may proceed and returns
// the applied index the read will see at least. For Session, minIndex must
// be an index Commit returned (or an applied index): Raft also commits
// entries the state machine never applies, and the applied index may never
// reach such an entry's index.
func (s *Store) ReadBarrier(ctx context.Context, c Consistency, minIndex uint64) (uint64, error) {
	switch c {
	case Session:
		if err := s.fsm.WaitApplied(ctx, minIndex); err != nil {
			return 0, s.waitError(err)
		}
	case Linearizable:
		if s.raft.State() != raft.Leader {
			return 0, ErrNotLeader
		}
		// A new leader's commit index may lag the old leader's until an
		// entry of its own term commits (Raft thesis, 6.4).
		term, err := s.ensureTermCommitted(ctx)
		if err != nil {
			return 0, err
		}
		// Read the commit index first, then confirm leadership: whatever
		// was committed before the read began is at or below it.
		commit := s.raft.CommitIndex()
		if err := s.confirmLeadership(ctx); err != nil {
			return 0, raftError(err)
		}
		// The commit index is that of term's leader only if this node
		// stayed in term throughout: one that lost leadership after the
		// check above and won it again read the commit index of a later
		// term, before an entry of it committed, which may miss what the
		// leader in between committed (VerifyLeader confirms the new term).
		if s.raft.CurrentTerm() != term {
			return 0, fmt.Errorf("%w: leadership moved during the read", ErrNotLeader)
		}
		if err := s.fsm.WaitApplied(ctx, s.lastCommandAtOrBelow(max(commit, minIndex))); err != nil {
			return 0, s.waitError(err)
		}
	}
	return s.fsm.AppliedIndex(), nil
}

// ensureTermCommitted makes sure an entry of the leader's current term has
// committed, with a barrier if watchLeadership has not done it yet, and
// returns that term.
func (s *Store) ensureTermCommitted(ctx context.Context) (uint64, error) {
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() == term {
		return term, nil
	}
	if err := s.untilClosed(ctx, s.raft.Barrier(s.timeout(ctx))); err != nil {
		return 0, raftError(err)
	}
	s.readyTerm.Store(term)
	return term, nil
}

// futureErrorUntil waits for f's outcome, or for ctx to end, or ends with
// errUnanswered once closed is closed and Raft has not answered within
// shutdownAnswerGrace (see untilClosed).
func futureErrorUntil(ctx context.Context, closed <-chan struct{}, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-closed:
	}
	// Raft answers what it can as it shuts down, and some answers come
	// just before it: a leader's removal of itself is answered as it
	// commits, and then Raft shuts down on its own. That answer, when it
	// is on its way, is the outcome.
	t := time.NewTimer(shutdownAnswerGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errUnanswered
	}
}

// shutdownAnswerGrace is how long a wait on a future goes on once Raft has
// shut down, for an answer Raft gave as it did.
const shutdownAnswerGrace = 500 * time.Millisecond

// errUnanswered ends a wait on a future that Raft had not answered when it
// shut down; it is raft.ErrRaftShutdown to errors.Is.
var errUnanswered = fmt.Errorf("%w before it answered", raft.ErrRaftShutdown)

// untilClosed waits for the outcome of f, until ctx ends or Raft shuts
// down (see raftDown); every wait on a Raft future goes through it.
// hashicorp/raft can leave a future unanswered for good when it shuts
// down:
//   - an entry (an Apply's, a Barrier's, a membership change's) that
//     committed just before is handed to the state machine goroutine,
//     which may stop first (seen in CI: watchLeadership's barrier waited
//     8 minutes after Shutdown, and Close with it);
//   - VerifyLeader's and LeadershipTransferToServer's futures go on
//     buffered channels, and once Shutdown has begun Raft picks at random
//     between queueing a future and answering ErrRaftShutdown: a future
//     queued as Raft's main loop returns is never answered (the likely
//     cause of a CI run whose raftstore tests hung for their 30 minutes,
//     in the test that stops a leader under linearizable reads).
//
// That Shutdown may be Close's or Raft's own (a removed node's). Without
// this, a commit or linearizable read through gRPC without a deadline
// waited for good. A caller that proposed an entry reports the end of
// the wait as an unknown outcome (see proposeResult): the entry may have
// committed.
func (s *Store) untilClosed(ctx context.Context, f raft.Future) error {
	return futureErrorUntil(ctx, s.raftDown, f)
}

// watchShutdown closes raftDown once Raft shuts down, whether Close shut
// it down or it did so on its own (a node removed from the configuration
// shuts its Raft down, and stays open otherwise), or once Close begins.
func (s *Store) watchShutdown() {
	defer close(s.raftDown)
	obs := make(chan raft.Observation, 1)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		st, ok := o.Data.(raft.RaftState)
		return ok && st == raft.Shutdown
	})
	s.raft.RegisterObserver(o)
	defer s.raft.DeregisterObserver(o)
	if s.raft.State() == raft.Shutdown { // before the observer was in place
		return
	}
	select {
	case <-obs:
	case <-s.watchCtx.Done():
	}
}

// confirmLeadership has Raft confirm that this node still leads: a
// quorum answers its heartbeats.
func (s *Store) confirmLeadership(ctx context.Context) error {
	return s.untilClosed(ctx, s.raft.VerifyLeader())
}

// lastCommandAtOrBelow returns the index of the last command entry at or
// below index, or the applied index if every entry above it is something
// else. Raft commits entries that never reach the state machine (the no-op
// a new leader appends, barriers, configuration changes), so the state
// machine's applied index may stay below the commit index for good; the
// state is current once the last command is applied. Entries compacted
// into a snapshot are in the state already.
func (s *Store) lastCommandAtOrBelow(index uint64) uint64 {
	applied := s.fsm.AppliedIndex()
	// The last index (of the log, or of the snapshot when the log is
	// empty), read before the log: an entry above it is not compacted.
	last := s.raft.LastIndex()
	for i := index; i > applied; i-- {
		var l raft.Log
		if err := s.log.GetLog(i, &l); err != nil {
			if first, ferr := s.log.FirstIndex(); ferr == nil && (i < first || (first == 0 && i <= last)) {
				// Compacted into a snapshot, which this node's state
				// includes: it was taken from it or restored from it.
				// An empty log (a restored cluster's first node
				// compacts all of it) compacted only what was there.
				return applied
			}
			return i // not in the log yet: wait for it rather than guess
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return applied
}

func (s *Store) waitError(err error) error {
	if errors.Is(err, fsm.ErrClosed) {
		return ErrClosed
	}
	return err
}

// Get reads a value, a counter or a map entry; expired entries are not
// found, judged by the later of this node's clock and the leader's newest
// applied (fsm.FSM.ReadTime).
func (s *Store) Get(ns string, key []byte, kind fsm.Kind, subKey []byte) (fsm.Entry, bool, error) {
	e, ok, err := s.fsm.Get(ns, key, kind, subKey, s.fsm.ReadTime(time.Now().UnixNano()))
	return e, ok, s.waitError(err)
}

// Scan calls fn for each live entry q selects, in key order. The Entry's
// slices are valid only during the call.
func (s *Store) Scan(q fsm.ScanQuery, fn func(fsm.Entry) error) error {
	return s.waitError(s.fsm.Scan(q, s.fsm.ReadTime(time.Now().UnixNano()), fn))
}

// Offsets returns the offsets stored for group, by topic and partition.
func (s *Store) Offsets(group string) ([]command.Offset, error) {
	o, err := s.fsm.Offsets(group)
	return o, s.waitError(err)
}

// Group returns group's offsets, claims and checkpointed offsets, read at
// one applied index (fsm.FSM.Group).
func (s *Store) Group(group string) (fsm.GroupState, error) {
	g, err := s.fsm.Group(group)
	return g, s.waitError(err)
}

// hclogAdapter sends Raft's logs (hclog) to slog, at the level hclog
// wrote them with.
func hclogAdapter(l *slog.Logger) hclog.Logger {
	std := log.New(slogWriter{l}, "", 0)
	return hclog.FromStandardLogger(std, &hclog.LoggerOptions{Name: "raft", Level: hclog.Info})
}

type slogWriter struct{ l *slog.Logger }

var hclogLevels = []struct {
	prefix string
	level  slog.Level
}{
	{"[ERROR]", slog.LevelError},
	{"[WARN]", slog.LevelWarn},
	{"[INFO]", slog.LevelInfo},
	{"[DEBUG]", slog.LevelDebug},
	{"[TRACE]", slog.LevelDebug},
}

func (w slogWriter) Write(p []byte) (int, error) {
	msg, level := strings.TrimSpace(string(p)), slog.LevelInfo
	for _, l := range hclogLevels {
		if rest, ok := strings.CutPrefix(msg, l.prefix); ok {
			msg, level = strings.TrimSpace(rest), l.level
			break
		}
	}
	w.l.Log(context.Background(), level, msg, "component", "raft")
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// Snapshot makes Raft take a snapshot now and compact its log.
func (s *Store) Snapshot() error {
	if err := s.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raftstore: snapshot: %w", err)
	}
	return nil
}

// fsmOptions are the state machine's options from the config.
func (s *Store) fsmOptions() []fsm.Option {
	opts := []fsm.Option{fsm.WithWindowCacheSize(s.cfg.WindowCacheSize)}
	if s.cfg.CacheSize != 0 {
		opts = append(opts, fsm.WithCacheSize(s.cfg.CacheSize))
	}
	return opts
}

// CacheMaxSize is the size limit in bytes of the state's block cache.
func (s *Store) CacheMaxSize() int64 { return s.fsm.CacheMaxSize() }

// WindowCacheMaxSize is the memory the state machine's cache of window
// aggregates may take (Config.WindowCacheSize).
func (s *Store) WindowCacheMaxSize() int64 { return s.fsm.WindowCacheMaxSize() }
