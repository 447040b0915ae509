package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/statedhq/stated/raftstore"
)

// bootstrapTimeout bounds Bootstrap's wait for the new cluster's leader.
const bootstrapTimeout = time.Minute

// BootstrapOptions name the node that a restored data dir starts as.
type BootstrapOptions struct {
	// DataDir holds the state Restore prepared.
	DataDir string
	// NodeID and RaftAddr are the node's id and Raft address; `stated
	// run` on the data dir must use the same.
	NodeID   string
	RaftAddr string
	// AdvertiseRaftAddr, when set, is the Raft address recorded in the
	// new cluster's configuration (see daemon.Config.AdvertiseRaftAddr);
	// `stated run` must advertise the same.
	AdvertiseRaftAddr string
	// RaftLogStore is the store of the new Raft log (see
	// raftstore.Config.LogStore); `stated run` on the data dir opens
	// that store whatever its own default.
	RaftLogStore string
	Logger       *slog.Logger
}

// Bootstrap starts the state Restore prepared in opts.DataDir as a new
// single-node cluster of opts.NodeID: Raft elects the node, which records
// the new cluster id and takes the snapshot that nodes joining it are sent;
// then it stops. It returns the new cluster's id. Without it, the first
// `stated run` on the data dir does the same.
func Bootstrap(ctx context.Context, opts BootstrapOptions) (clusterID string, err error) {
	if opts.DataDir == "" || opts.NodeID == "" || opts.RaftAddr == "" {
		return "", errors.New("recovery: bootstrap: DataDir, NodeID and RaftAddr must all be set")
	}
	cfg := raftstore.DefaultConfig()
	cfg.NodeID, cfg.Dir, cfg.RaftBind, cfg.Bootstrap = opts.NodeID, opts.DataDir, opts.RaftAddr, true
	cfg.RaftAdvertise = opts.AdvertiseRaftAddr
	cfg.LogStore = opts.RaftLogStore
	cfg.Logger = opts.Logger
	ctx, cancel := context.WithTimeout(ctx, bootstrapTimeout)
	defer cancel()
	s, err := raftstore.Open(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("recovery: bootstrap the restored state: %w", err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		return "", fmt.Errorf("recovery: bootstrap the restored state: %w", err)
	}
	return s.ClusterID(), nil
}
