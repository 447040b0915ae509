package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/uploader"
)

func (c *cli) runCommand() *cobra.Command {
	cfg := daemon.DefaultConfig()
	var logLevel, logFormat, socketMode, configPath string
	var showConfig bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a stated node until SIGINT or SIGTERM",
		Long: `Run a stated node. Without flags it bootstraps a single-node cluster in
./stated-data and serves gRPC on ./stated-data/stated.sock and 127.0.0.1:7420.

With --join ADDR[,ADDR...] (gRPC addresses of members of a running cluster),
a node whose data dir is new asks them to add it as a voter instead of
bootstrapping; a node that already has Raft state ignores --join. Every
member must have a distinct --node-id, --raft-addr and --grpc-addr.

Every flag can also come from the environment (STATED_ and the flag in
upper snake case) and from a YAML config file (--config FILE or
STATED_CONFIG), keyed by the flag's name without its dashes:

  node-id: n1
  join: [10.0.0.1:7420, 10.0.0.2:7420]
  checkpoint-interval: 10s

A flag wins over the environment, and both over the file.
--print-config shows the result, and where each value came from.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		for _, n := range []string{"addr", "timeout", "tls-ca", "tls-server-name", "token"} {
			if cmd.Flags().Changed(n) {
				return &exitError{code: exitUsage, err: fmt.Errorf("run: --%s is for client commands; a node listens on --grpc-addr and --socket (TLS: --tls-cert, --tls-key)", n)}
			}
		}
		fromFile, err := c.applyConfigFile(cmd.LocalFlags(), configPath)
		if err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: %w", err)}
		}
		// Only on the command line, as before: --print-config output, read
		// back as a config file, holds bootstrap: true beside join.
		if cmd.Flags().Changed("bootstrap") && cfg.Bootstrap && len(cfg.Join) > 0 {
			return &exitError{code: exitUsage, err: errors.New("run: --bootstrap starts a new cluster and --join joins one; give one of them")}
		}
		if cfg.CheckpointInterval < time.Second {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: --checkpoint-interval %s is below the 1s minimum", cfg.CheckpointInterval)}
		}
		if cfg.CheckpointMaterializeInterval < 0 {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: --checkpoint-materialize-interval %s is negative (0 uploads the tables at every checkpoint)", cfg.CheckpointMaterializeInterval)}
		}
		if cfg.EnablePprof && cfg.MetricsAddr == "" {
			return &exitError{code: exitUsage, err: errors.New("run: --enable-pprof serves the profiles on --metrics-addr, which is not set")}
		}
		if cfg.CheckpointRetain < 1 {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: --checkpoint-retain %d is below 1: at least one completed checkpoint must be kept", cfg.CheckpointRetain)}
		}
		if cfg.CheckpointKeyURL != "" {
			k, _, err := uploader.OpenKeeper(cmd.Context(), cfg.CheckpointKeyURL)
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("run: --checkpoint-key-url: %w", err)}
			}
			k.Close()
		}
		if err := cfg.ValidateTLS(); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: %w", err)}
		}
		mode, err := parseSocketMode(socketMode)
		if err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: %w", err)}
		}
		cfg.SocketMode = mode
		logger, err := newLogger(c.stderr, logFormat, logLevel)
		if err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: %w", err)}
		}
		if showConfig {
			return printConfig(c.stdout, cmd.LocalFlags(), c.env, configPath, fromFile)
		}
		// A value the daemon refuses (an address without a port, a
		// duration below its minimum) is a mistake in the configuration,
		// as a value its flag refuses is: exit 64 before anything starts.
		if err := cfg.Validate(); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("run: %w", namingFlags(err))}
		}
		cfg.Logger = logger
		return c.serve(cmd, cfg)
	})
	f := cmd.Flags()
	f.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "this node's id in the Raft cluster")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, the state and the socket")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, `TCP address to serve gRPC on; "" serves the unix socket only`)
	f.StringVar(&cfg.SocketPath, "socket", "", "unix socket to serve gRPC on (default DATA_DIR/stated.sock)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "address Raft binds to, and advertises unless --advertise-raft-addr is given")
	f.StringVar(&cfg.AdvertiseRaftAddr, "advertise-raft-addr", "", "Raft address (host:port) peers dial, kept as a DNS name if it is one (needed when --raft-addr binds 0.0.0.0)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "bootstrap a single-node cluster when the data dir has no Raft state and --join is not given")
	f.StringSliceVar(&cfg.Join, "join", nil, "gRPC addresses (host:port, comma-separated) of cluster members to join through when the data dir is new")
	f.StringVar(&cfg.BootstrapNodeID, "bootstrap-node-id", "", "with the same --join list on every member (a StatefulSet): the node with this id bootstraps the cluster if none of the other --join addresses is a member of one; the others join")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", cfg.JoinTimeout, "how long to keep trying the --join addresses")
	f.StringVar(&cfg.AdvertiseGRPCAddr, "advertise-grpc-addr", "", "gRPC address other members and clients reach this node at (default: the bound --grpc-addr)")
	f.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", cfg.MaxMessageBytes, "largest gRPC message received or sent")
	f.Var(sizeValue{p: &cfg.MaxInflightRequestBytes, check: daemon.CheckMaxInflightRequestBytes}, "max-inflight-request-bytes", maxInflightRequestHelp)
	f.Var(sizeValue{p: &cfg.MinFreeDiskBytes}, "min-free-disk", minFreeDiskHelp)
	f.DurationVar(&cfg.ExpiryInterval, "expiry-interval", cfg.ExpiryInterval, "how often the leader deletes expired entries and idle client sessions")
	f.DurationVar(&cfg.SessionIdleTimeout, "session-idle-timeout", cfg.SessionIdleTimeout, "how long a client session lives without a commit (at least 1s); a client whose session expired opens a new one")
	f.Var(raftLogStoreValue{&cfg.RaftLogStore}, "raft-log-store", raftLogStoreHelp)
	f.Var(cacheSizeValue(&cfg.CacheSize), "cache-size", cacheSizeHelp)
	f.Var(sizeValue{p: &cfg.WindowCacheSize, hint: "0 turns the window cache off"}, "window-cache-size", windowCacheSizeHelp)
	f.Uint64Var(&cfg.SnapshotThreshold, "raft-snapshot-threshold", cfg.SnapshotThreshold, "Raft log entries between snapshots")
	f.Var(snapshotBytesValue(&cfg.SnapshotBytes), "raft-snapshot-bytes", raftSnapshotBytesHelp)
	f.DurationVar(&cfg.SnapshotInterval, "raft-snapshot-interval", cfg.SnapshotInterval, "how often Raft checks whether to snapshot")
	f.Uint64Var(&cfg.TrailingLogs, "raft-trailing-logs", cfg.TrailingLogs, "Raft log entries kept after a snapshot, so that lagging followers need no snapshot")
	f.StringVar(&cfg.CheckpointURL, "checkpoint-url", "", "bucket for checkpoints: file:///path, s3://bucket?endpoint=...&use_path_style=true, gs://bucket, azblob://container, mem:// (default file://DATA_DIR/checkpoints)")
	f.StringVar(&cfg.CheckpointKeyURL, "checkpoint-key-url", "", "encrypt checkpoint files before upload with the key of this URL; restore needs the same key. Forms: "+uploader.KeyURLForms)
	f.DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", cfg.CheckpointInterval, "how often the leader takes a checkpoint (at least 1s)")
	f.DurationVar(&cfg.CheckpointMaterializeInterval, "checkpoint-materialize-interval", 0, "upload the state's tables at most this often; checkpoints in between upload only the Raft log's entries since the one before (changelog checkpoints). 0: the tables at every checkpoint")
	f.Var(sizeValue{p: &cfg.CheckpointChangelogMemory, hint: "0 reads every changelog segment from the Raft log"}, "checkpoint-changelog-memory", changelogMemoryHelp)
	f.IntVar(&cfg.CheckpointRetain, "checkpoint-retain", cfg.CheckpointRetain, "completed checkpoints to keep, besides savepoints (at least 1)")
	f.IntVar(&cfg.CheckpointWorkers, "checkpoint-workers", 4, "files uploaded in parallel")
	f.StringSliceVar(&cfg.KafkaBrokers, "kafka-brokers", nil, "Kafka brokers (host:port, comma-separated) to commit each completed checkpoint's offsets to")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", `address (host:port) to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9420; "" serves none (see docs/METRICS.md)`)
	f.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "also serve Go's runtime profiles (heap, CPU, goroutines) at /debug/pprof/ on --metrics-addr, which it needs; they expose the process's internals to whoever reaches that address")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate to serve TLS with on --grpc-addr (the unix socket stays plaintext); reloaded on SIGHUP")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.TLSClientCAFile, "tls-client-ca", "", "PEM CA bundle: clients on --grpc-addr must present a certificate it issued")
	f.StringVar(&cfg.PeerTLSCertFile, "peer-tls-cert", "", "PEM certificate this node presents to its peers (Raft and gRPC forwarding, mutual TLS); needs --tls-cert issued by a CA in --peer-tls-ca")
	f.StringVar(&cfg.PeerTLSKeyFile, "peer-tls-key", "", "PEM private key of --peer-tls-cert")
	f.StringVar(&cfg.PeerTLSCAFile, "peer-tls-ca", "", "PEM CA bundle peers' certificates must come from")
	f.StringVar(&cfg.TokenFile, "token-file", "", "YAML file of bearer-token grants (name, sha256 of the token, namespaces, operations) every call must satisfy; reloaded on SIGHUP; none: every call is open")
	f.StringVar(&cfg.JoinToken, "join-token", "", "bearer token (admin on \"*\") this node sends to the --join addresses when their members have --token-file; prefer STATED_JOIN_TOKEN")
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow --grpc-addr on a non-loopback address with neither --tls-cert nor --token-file")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text (key=value lines) or json (one JSON object per line)")
	f.StringVar(&socketMode, "socket-mode", "0600", "file mode of the unix socket, in octal: 0600 lets only this user connect, 0660 its group too")
	f.StringVar(&configPath, "config", "", "YAML file holding run flags by name (node-id: n1); flags and STATED_* variables override it")
	f.BoolVar(&showConfig, "print-config", false, "print the effective configuration as YAML, each value's source and secrets masked, and exit")
	bindEnv(f, "node-id", "data-dir", "grpc-addr", "socket", "raft-addr", "advertise-raft-addr", "bootstrap", "bootstrap-node-id", "join", "join-timeout", "advertise-grpc-addr", "max-message-bytes", "max-inflight-request-bytes", "min-free-disk", "expiry-interval", "session-idle-timeout", "raft-log-store", "cache-size", "window-cache-size", "raft-snapshot-threshold", "raft-snapshot-bytes", "raft-snapshot-interval", "raft-trailing-logs",
		"checkpoint-url", "checkpoint-key-url", "checkpoint-interval", "checkpoint-materialize-interval", "checkpoint-changelog-memory", "checkpoint-retain", "checkpoint-workers", "kafka-brokers", "metrics-addr", "enable-pprof",
		"tls-cert", "tls-key", "tls-client-ca", "peer-tls-cert", "peer-tls-key", "peer-tls-ca", "token-file", "join-token", "insecure", "log-level", "log-format", "socket-mode", "config")
	return cmd
}

// serve starts the daemon, reports where it serves and waits for a signal.
func (c *cli) serve(cmd *cobra.Command, cfg daemon.Config) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP reloads the certificates; one that comes during start waits.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := cfg.Logger
	log.Info("starting; waiting for a raft leader", "node_id", cfg.NodeID, "data_dir", cfg.DataDir, "raft_addr", cfg.RaftAddr, "join", strings.Join(cfg.Join, ","))

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
	// The banner goes out in one write, so that whoever reads stdout (a
	// test, a supervisor waiting for "serving") sees all of it or none.
	var banner bytes.Buffer
	fmt.Fprintf(&banner, "stated: node %s serving\n", d.NodeID())
	fmt.Fprintf(&banner, "  unix socket: %s\n", socket)
	if tcp := d.TCPAddr(); tcp != "" {
		fmt.Fprintf(&banner, "  tcp:         %s\n", tcp)
		if adv := d.AdvertiseGRPCAddr(); adv != tcp {
			fmt.Fprintf(&banner, "  advertised:  %s\n", adv)
		}
	} else {
		fmt.Fprintf(&banner, "  tcp:         disabled\n")
	}
	fmt.Fprintf(&banner, "  raft:        %s\n", d.Store().RaftAddr())
	if m := d.MetricsAddr(); m != "" {
		fmt.Fprintf(&banner, "  metrics:     http://%s/metrics\n", m)
		if cfg.EnablePprof {
			fmt.Fprintf(&banner, "  pprof:       http://%s/debug/pprof/\n", m)
		}
	}
	fmt.Fprintf(&banner, "  data dir:    %s\n", cfg.DataDir)
	st := d.CheckpointStatus()
	fmt.Fprintf(&banner, "  checkpoints: %s every %s, keeping %d\n", st.Bucket, st.Interval, st.Retain)
	if st.Encryption != "" {
		fmt.Fprintf(&banner, "  encryption:  checkpoint files encrypted (%s)\n", st.Encryption)
	}
	if cfg.TokenFile != "" {
		fmt.Fprintf(&banner, "  tokens:      every call needs a bearer token granted in %s\n", cfg.TokenFile)
	}
	if st.SharesDiskWithData {
		fmt.Fprintf(&banner, "  warning:     the checkpoint bucket is on the data dir's disk; losing that disk loses both (set --checkpoint-url)\n")
	}
	_, _ = c.stdout.Write(banner.Bytes())

	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			log.Info("SIGHUP: reloading certificates and the token file")
			_ = d.Reload() // it logs why a certificate or token file was refused
		case <-d.Superseded():
			// A restore replaced this node's cluster: serving on would
			// keep the old cluster alive beside the restored one.
			err := d.SupersededErr()
			log.Error("stopping: this node's cluster was replaced by a restore", "error", err)
			if cerr := d.Close(); cerr != nil {
				log.Error("shut down", "error", cerr)
			}
			return err
		}
	}
	log.Info("signal received; shutting down")
	if err := d.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Info("stopped")
	return nil
}

// fieldFlags are the flags of stated run that set the daemon.Config
// fields Validate names.
var fieldFlags = map[string]string{
	"NodeID": "node-id", "DataDir": "data-dir", "GRPCAddr": "grpc-addr", "SocketPath": "socket", "SocketMode": "socket-mode",
	"RaftAddr": "raft-addr", "AdvertiseRaftAddr": "advertise-raft-addr", "Bootstrap": "bootstrap", "Join": "join",
	"BootstrapNodeID": "bootstrap-node-id", "JoinTimeout": "join-timeout", "AdvertiseGRPCAddr": "advertise-grpc-addr",
	"MaxMessageBytes": "max-message-bytes", "MaxInflightRequestBytes": "max-inflight-request-bytes", "MinFreeDiskBytes": "min-free-disk", "ExpiryInterval": "expiry-interval", "SessionIdleTimeout": "session-idle-timeout",
	"RaftLogStore": "raft-log-store", "CacheSize": "cache-size", "WindowCacheSize": "window-cache-size", "SnapshotThreshold": "raft-snapshot-threshold",
	"SnapshotBytes": "raft-snapshot-bytes", "SnapshotInterval": "raft-snapshot-interval", "TrailingLogs": "raft-trailing-logs",
	"CheckpointURL": "checkpoint-url", "CheckpointKeyURL": "checkpoint-key-url", "CheckpointInterval": "checkpoint-interval",
	"CheckpointMaterializeInterval": "checkpoint-materialize-interval", "CheckpointChangelogMemory": "checkpoint-changelog-memory",
	"CheckpointRetain": "checkpoint-retain", "CheckpointWorkers": "checkpoint-workers", "KafkaBrokers": "kafka-brokers",
	"MetricsAddr": "metrics-addr", "EnablePprof": "enable-pprof", "TLSCertFile": "tls-cert", "TLSKeyFile": "tls-key",
	"TLSClientCAFile": "tls-client-ca", "PeerTLSCertFile": "peer-tls-cert", "PeerTLSKeyFile": "peer-tls-key",
	"PeerTLSCAFile": "peer-tls-ca", "TokenFile": "token-file", "JoinToken": "join-token", "Insecure": "insecure",
}

var (
	fieldWithFlag = regexp.MustCompile(`\b[A-Z][A-Za-z]* \((--[a-z-]+)\)`)
	fieldName     = regexp.MustCompile(`\b[A-Z][A-Za-z]*(\[\d+\])?`)
)

// namingFlags rewrites the daemon's configuration errors, which name
// daemon.Config's fields (it is a library too), to name the flags of
// stated run instead, whichever source set them: "SessionIdleTimeout
// 500ms is below the 1s minimum" reads "--session-idle-timeout 500ms ...".
func namingFlags(err error) error {
	msg := fieldWithFlag.ReplaceAllString(err.Error(), "$1")
	msg = fieldName.ReplaceAllStringFunc(msg, func(m string) string {
		name, _, _ := strings.Cut(m, "[")
		if f, ok := fieldFlags[name]; ok {
			return "--" + f
		}
		return m
	})
	return errors.New(msg)
}
