package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/statedhq/stated/daemon"
)

func (c *cli) runCommand() *cobra.Command {
	cfg := daemon.DefaultConfig()
	var logLevel string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a stated node until SIGINT or SIGTERM",
		Long: `Run a stated node. Without flags it bootstraps a single-node cluster in
./stated-data and serves gRPC on ./stated-data/stated.sock and 127.0.0.1:7420.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		for _, n := range []string{"addr", "timeout"} {
			if cmd.Flags().Changed(n) {
				return &exitError{code: exitUsage, err: fmt.Errorf("run: --%s is for client commands; a node listens on --grpc-addr and --socket", n)}
			}
		}
		var level slog.Level
		if err := level.UnmarshalText([]byte(logLevel)); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: --log-level %q: want debug, info, warn or error", logLevel)}
		}
		cfg.Logger = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
		return c.serve(cmd, cfg)
	})
	f := cmd.Flags()
	f.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this node's id in the Raft cluster")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, the state and the socket")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, `TCP address to serve gRPC on; "" serves the unix socket only`)
	f.StringVar(&cfg.SocketPath, "socket", "", "unix socket to serve gRPC on (default DATA_DIR/stated.sock)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "address Raft binds to and advertises")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "bootstrap a single-node cluster when the data dir has no Raft state")
	f.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", cfg.MaxMessageBytes, "largest gRPC message received or sent")
	f.DurationVar(&cfg.ExpiryInterval, "expiry-interval", cfg.ExpiryInterval, "how often the leader deletes expired entries")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	bindEnv(f, "node-id", "data-dir", "grpc-addr", "socket", "raft-addr", "bootstrap", "max-message-bytes", "expiry-interval", "log-level")
	return cmd
}

// serve starts the daemon, reports where it serves and waits for a signal.
func (c *cli) serve(cmd *cobra.Command, cfg daemon.Config) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := cfg.Logger
	log.Warn("no checkpoints: this version does not upload checkpoints to blob storage yet, "+
		"so the state lives only in the Raft log and Pebble under the data directory, "+
		"and losing that disk loses it", "data_dir", cfg.DataDir)
	log.Info("starting; waiting for a raft leader", "node_id", cfg.NodeID, "data_dir", cfg.DataDir, "raft_addr", cfg.RaftAddr)

	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			log.Info("interrupted before the node started")
			return nil
		}
		return err
	}
	socket := d.SocketPath()
	if abs, err := filepath.Abs(socket); err == nil {
		socket = abs
	}
	fmt.Fprintf(c.stdout, "stated: node %s serving\n", d.NodeID())
	fmt.Fprintf(c.stdout, "  unix socket: %s\n", socket)
	if tcp := d.TCPAddr(); tcp != "" {
		fmt.Fprintf(c.stdout, "  tcp:         %s\n", tcp)
	} else {
		fmt.Fprintf(c.stdout, "  tcp:         disabled\n")
	}
	fmt.Fprintf(c.stdout, "  raft:        %s\n", d.Store().RaftAddr())
	fmt.Fprintf(c.stdout, "  data dir:    %s\n", cfg.DataDir)

	<-ctx.Done()
	log.Info("signal received; shutting down")
	if err := d.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Info("stopped")
	return nil
}
