package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/fsm"
)

// Config configures a Store.
type Config struct {
	// NodeID names this node in the Raft cluster; it must not change for
	// the life of the data directory.
	NodeID string
	// Dir is the data directory: raft/ (log, stable store, snapshots) and
	// state/ (Pebble) are created below it.
	Dir string
	// LogStore is the Raft log and stable store: LogStoreWAL (raft-wal,
	// in raft/wal/) or LogStoreBoltDB (raft-boltdb, raft/raft.db). Empty
	// means the store Dir already holds, or DefaultLogStore for a new Dir.
	// A Dir that holds the other store is refused (ErrLogStoreMismatch):
	// the store of an existing log cannot be switched in place.
	LogStore string
	// CacheSize is the size in bytes of the block cache of the state's
	// Pebble, at least fsm.MinCacheSize; 0 means fsm.DefaultCacheSize.
	CacheSize int64
	// WindowCacheSize bounds the memory of the state machine's cache of
	// window aggregates (fsm.WithWindowCacheSize); 0 turns it off.
	// DefaultConfig sets fsm.DefaultWindowCacheSize.
	WindowCacheSize int64
	// RaftBind is the TCP address the Raft transport listens on; port 0
	// picks a free one.
	RaftBind string
	// RaftAdvertise is the address (host:port) peers reach this node at,
	// recorded in the cluster configuration as written: a DNS name stays
	// a name and is resolved by each dial. Empty means the bound address.
	RaftAdvertise string
	// GRPCAddr is the gRPC address this node advertises to its peers (for
	// forwarding writes to the leader); it is recorded in the cluster
	// metadata through Raft.
	GRPCAddr string
	// Bootstrap starts a new single-node cluster when Dir holds no Raft
	// state yet. A node that joins an existing cluster leaves it false.
	Bootstrap bool
	// BootstrapIf, when set, is asked instead of Bootstrap whether to
	// start a new cluster, at most once, and only when Dir holds no Raft
	// state: what it asks (the daemon asks the other members whether a
	// cluster exists, which can take seconds while they start too) is
	// not asked on a restart of a node that has state.
	BootstrapIf func(ctx context.Context) bool
	// StreamLayer, when set, wraps the listener of the Raft transport;
	// tests use it to inject network faults. Nil means plain TCP.
	StreamLayer func(ln net.Listener) raft.StreamLayer
	// Logger receives the store's, Raft's and Pebble's logs.
	Logger *slog.Logger

	// ApplyTimeout bounds how long Commit waits to enqueue an entry.
	ApplyTimeout time.Duration
	// SnapshotThreshold and SnapshotInterval decide when Raft snapshots
	// the state and compacts its log; TrailingLogs entries are kept after
	// a snapshot so that slightly lagging followers need no snapshot.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// SnapshotBytes adds a size trigger to Raft's entry count: a node
	// also snapshots once the log entries it applied since its newest
	// snapshot hold max(SnapshotBytes, size of the state at that
	// snapshot) bytes, which bounds the log a restart replays to about
	// that size. 0 turns the size trigger off. DefaultSnapshotBytes says
	// why 256 MiB.
	SnapshotBytes int64
	// SnapshotRetain is how many Raft snapshots are kept on disk.
	SnapshotRetain int

	// SessionIdleTimeout is how long a client session lives without a
	// commit; the leader writes it into each session it opens.
	SessionIdleTimeout time.Duration

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// DefaultSessionIdleTimeout is how long a client session lives without a
// commit unless Config.SessionIdleTimeout says otherwise. A client whose
// session expired opens a new one on its next commit.
const DefaultSessionIdleTimeout = time.Hour

// DefaultConfig returns the defaults; NodeID and Dir must still be set.
func DefaultConfig() Config {
	return Config{
		RaftBind:           "127.0.0.1:7421",
		Bootstrap:          true,
		ApplyTimeout:       10 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotBytes:      DefaultSnapshotBytes,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
		SessionIdleTimeout: DefaultSessionIdleTimeout,
		CacheSize:          fsm.DefaultCacheSize,
		WindowCacheSize:    fsm.DefaultWindowCacheSize,
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
	}
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("raftstore: config: NodeID is empty")
	case len(c.NodeID) > 255:
		return fmt.Errorf("raftstore: config: NodeID is %d bytes, limit 255", len(c.NodeID))
	case c.Dir == "":
		return errors.New("raftstore: config: Dir is empty")
	case !ValidLogStore(c.LogStore):
		return fmt.Errorf("raftstore: config: LogStore %q: want %q, %q, or empty for the data dir's own", c.LogStore, LogStoreWAL, LogStoreBoltDB)
	case c.CacheSize != 0 && c.CacheSize < fsm.MinCacheSize:
		return fmt.Errorf("raftstore: config: CacheSize %d is below the %d-byte minimum", c.CacheSize, fsm.MinCacheSize)
	case c.WindowCacheSize < 0:
		return fmt.Errorf("raftstore: config: WindowCacheSize %d is negative (0 turns the window cache off)", c.WindowCacheSize)
	case c.ApplyTimeout <= 0:
		return errors.New("raftstore: config: ApplyTimeout must be positive")
	case c.SnapshotBytes < 0:
		return fmt.Errorf("raftstore: config: SnapshotBytes %d is negative (0 turns the size trigger off)", c.SnapshotBytes)
	case c.SnapshotRetain < 1:
		return errors.New("raftstore: config: SnapshotRetain must be at least 1")
	case c.SessionIdleTimeout <= 0:
		return fmt.Errorf("raftstore: config: SessionIdleTimeout %s must be positive", c.SessionIdleTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("raftstore: config: LeaderLeaseTimeout must not exceed HeartbeatTimeout")
	}
	if _, _, err := net.SplitHostPort(c.RaftBind); err != nil {
		return fmt.Errorf("raftstore: config: RaftBind %q: %w", c.RaftBind, err)
	}
	if c.RaftAdvertise != "" {
		host, port, err := net.SplitHostPort(c.RaftAdvertise)
		if err != nil {
			return fmt.Errorf("raftstore: config: RaftAdvertise %q: %w", c.RaftAdvertise, err)
		}
		if host == "" || port == "" || port == "0" {
			return fmt.Errorf("raftstore: config: RaftAdvertise %q: want a host and a port other than 0", c.RaftAdvertise)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("raftstore: config: RaftAdvertise %q: an unspecified address cannot be dialled by peers", c.RaftAdvertise)
		}
	}
	return nil
}
