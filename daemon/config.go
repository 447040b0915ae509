package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/fsm"
)

// maxSocketPath is the longest unix socket path every supported platform
// accepts (sockaddr_un.sun_path is 104 bytes on macOS and 108 on Linux,
// including the terminating NUL).
const maxSocketPath = 103

// Config configures a Daemon. Build it from DefaultConfig and override what
// differs. Start fills in SocketPath, MaxMessageBytes, ExpiryInterval,
// JoinTimeout, AdvertiseGRPCAddr and Logger when they are zero; NodeID,
// DataDir and RaftAddr must be set.
type Config struct {
	// NodeID names this node in the Raft cluster. Default: os.Hostname().
	NodeID string
	// DataDir holds the Raft log, the state and the unix socket. Default
	// "./stated-data"; created with mode 0700.
	DataDir string
	// GRPCAddr is the TCP address gRPC listens on. Default
	// "127.0.0.1:7420"; "" disables TCP (the unix socket is always served).
	GRPCAddr string
	// SocketPath is the unix socket gRPC listens on. Default
	// DataDir/stated.sock.
	SocketPath string
	// SocketMode is the permission bits of the unix socket: who may
	// connect. Default 0600, this user only; 0660 lets its group in.
	SocketMode os.FileMode
	// RaftAddr is the address Raft binds to, and advertises unless
	// AdvertiseRaftAddr is set. Default "127.0.0.1:7421".
	RaftAddr string
	// AdvertiseRaftAddr is the Raft address (host:port) peers dial,
	// recorded in the cluster configuration as written: a DNS name stays a
	// name, resolved by each dial, so that a node that comes back with
	// another IP (a Kubernetes pod) is still reached. Needed when RaftAddr
	// binds every interface (0.0.0.0 or [::]). Default: RaftAddr.
	AdvertiseRaftAddr string
	// Bootstrap makes a new single-node cluster when DataDir has no Raft
	// state and Join is empty. Default true. It is ignored when Join is
	// set: a node either starts a cluster or joins one.
	Bootstrap bool
	// Join lists gRPC addresses (host:port) of members of an existing
	// cluster. A node whose DataDir has no Raft state asks them, in turn
	// and with retries until Start's ctx ends, to add it as a voter. A node
	// that already has Raft state is a member already and ignores Join.
	Join []string
	// BootstrapNodeID lets every member of a cluster run with the same
	// Join list (a Kubernetes StatefulSet): the node whose NodeID it is
	// bootstraps the cluster when none of the other Join addresses
	// answers as a member of one, and joins through them otherwise (as
	// after losing its disk); every other node joins. It needs Join.
	BootstrapNodeID string
	// JoinTimeout bounds how long Start keeps asking the Join addresses
	// (within Start's ctx). Default 1 minute.
	JoinTimeout time.Duration
	// AdvertiseGRPCAddr is the gRPC address (host:port) other members and
	// clients reach this node at, recorded in the cluster metadata through
	// Raft so that followers can forward to the leader. Default: the bound
	// TCP address of GRPCAddr. A node in a multi-node cluster needs TCP.
	AdvertiseGRPCAddr string
	// MaxMessageBytes caps the size of a gRPC message the daemon receives
	// or sends. Default 64 MiB.
	MaxMessageBytes int
	// MaxInflightRequestBytes bounds the bytes of large commit requests
	// (1 MiB or more, Commit and CommitBatch) the node works on at once:
	// one costs the daemon several times its size until it is applied, so
	// without a bound the memory of large commits grows with the number
	// of clients sending them. A large request beyond it waits, holding
	// only its decoded self, until the ones before it end or its deadline
	// passes; one larger than the whole budget is worked on alone. Smaller
	// requests never wait for it. At least 1 MiB; zero keeps the default,
	// DefaultMaxInflightRequestBytes.
	MaxInflightRequestBytes int64
	// MinFreeDiskBytes is the free space of the data dir's disk below
	// which the leader refuses commits (RESOURCE_EXHAUSTED with a DiskFull
	// detail; nothing of them applies) instead of filling the disk, which
	// stops the state store's flushes and can crash the process. Reads,
	// session opens, expiry and checkpoints go on. The disk's free space
	// is read at most every 100 ms. Zero turns the check off;
	// DefaultConfig has DefaultMinFreeDiskBytes.
	MinFreeDiskBytes int64
	// RaftLogStore is the store of the Raft log: "wal" (raft-wal) or
	// "boltdb" (raft-boltdb); see raftstore.Config.LogStore. Empty means
	// the store DataDir already holds, or raftstore.DefaultLogStore for a
	// new DataDir. A DataDir holding the other store is refused: it
	// cannot be switched in place.
	RaftLogStore string
	// CacheSize is the size in bytes of the block cache of the state's
	// Pebble (see raftstore.Config.CacheSize), shared with its memtables
	// (Pebble reserves their size in it). Zero keeps raftstore's default
	// (256 MiB).
	CacheSize int64
	// WindowCacheSize bounds the memory of the cache of window aggregates
	// the state machine keeps (see raftstore.Config.WindowCacheSize): about
	// 110 bytes a window, taken as windows are added. 0 turns it off;
	// DefaultConfig sets 128 MiB.
	WindowCacheSize int64
	// SnapshotThreshold, SnapshotInterval and TrailingLogs tune Raft
	// snapshots (see raftstore.Config); zero keeps raftstore's defaults.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// SnapshotBytes is raftstore.Config.SnapshotBytes: a node also takes
	// a Raft snapshot once the log since its newest one holds
	// max(SnapshotBytes, size of the state at that snapshot) bytes. Unlike
	// the fields above, zero turns it off; DefaultConfig gives 256 MiB.
	SnapshotBytes int64
	// ExpiryInterval is how often the leader looks for entries whose TTL
	// ran out, and client sessions idle past their timeout, and deletes
	// them. Default 5s.
	ExpiryInterval time.Duration
	// SessionIdleTimeout is how long a client session lives without a
	// commit (see raftstore.Config). Default 1 hour.
	SessionIdleTimeout time.Duration

	// CheckpointURL is the bucket checkpoints go to (file://, s3://,
	// gs://, azblob://, mem://). Default: file:// DataDir/checkpoints,
	// which shares the data's disk; Start logs a warning about it.
	CheckpointURL string
	// CheckpointKeyURL, when set, encrypts every checkpoint file before
	// upload with the key it names (base64key://<32 bytes in base64>;
	// see uploader.OpenKeeper). A URL that cannot be opened fails Start,
	// never falls back to plaintext. It is a secret: never logged.
	CheckpointKeyURL string
	// CheckpointInterval is how often the leader takes a checkpoint; at
	// least 1s, or zero for checkpoints on request only. DefaultConfig
	// sets 10s.
	CheckpointInterval time.Duration
	// CheckpointMaterializeInterval, when above zero, makes checkpoints
	// changelog checkpoints between table checkpoints: the state's tables
	// are uploaded at most this often, and each checkpoint in between
	// uploads only the Raft log's entries since the one before
	// (docs/OPERATIONS.md, "Changelog checkpoints"). Zero (the default)
	// uploads the tables at every checkpoint.
	CheckpointMaterializeInterval time.Duration
	// CheckpointChangelogMemory bounds, while changelog checkpoints are
	// on, the bytes of the Raft log entries the leader applied since the
	// last checkpoint that it keeps in memory to make the next changelog
	// segment from, instead of reading them back from the Raft log. An
	// interval whose entries pass it has its segment read from the log.
	// Zero keeps none: every segment is read from the log. DefaultConfig
	// sets 64 MiB.
	CheckpointChangelogMemory int64
	// CheckpointRetain is how many completed checkpoints retention keeps,
	// besides savepoints. Default 3.
	CheckpointRetain int
	// CheckpointWorkers is how many files upload in parallel. Default 4.
	CheckpointWorkers int
	// CheckpointGCGrace protects unreferenced blobs younger than it from
	// garbage collection (an upload on another node may still reference
	// them). Default 10 minutes.
	CheckpointGCGrace time.Duration
	// KafkaBrokers, when set, are the brokers the leader commits each
	// completed checkpoint's offsets to, group by group.
	KafkaBrokers []string
	// MetricsAddr is the TCP address (host:port) an HTTP server serves
	// Prometheus metrics on, at /metrics; "" serves none. See
	// docs/METRICS.md.
	MetricsAddr string
	// EnablePprof also serves Go's runtime profiles (net/http/pprof) at
	// /debug/pprof/ on MetricsAddr, which it needs: heap, CPU, goroutine
	// and the others, for finding where memory and time go. They show
	// the process's internals to whoever reaches the address, so it is
	// off by default.
	EnablePprof bool
	// TLSCertFile and TLSKeyFile, when set, make the TCP gRPC port serve
	// TLS with this certificate (PEM files, reloaded by Reload); the unix
	// socket stays plaintext. TLSClientCAFile, when set, requires clients
	// to present a certificate issued by a CA in it. See tls.go.
	TLSCertFile, TLSKeyFile, TLSClientCAFile string
	// PeerTLSCertFile, PeerTLSKeyFile and PeerTLSCAFile, when set, make
	// Raft's transport mutual TLS against PeerTLSCAFile, and the gRPC
	// connections to other nodes present the peer certificate. They need
	// TLSCertFile, issued by a CA in PeerTLSCAFile. See tls.go.
	PeerTLSCertFile, PeerTLSKeyFile, PeerTLSCAFile string
	// TokenFile, when set, is a YAML file of bearer-token grants (see
	// package authz) that every call, on the unix socket and TCP, must
	// satisfy; Reload re-reads it. "" keeps every call open.
	TokenFile string
	// JoinToken is the bearer token this node sends to the Join
	// addresses when it joins (or looks for) a cluster whose members
	// have a TokenFile: it needs admin on "*". A secret: never logged.
	JoinToken string
	// Insecure lets GRPCAddr listen on a non-loopback address with
	// neither TLS nor a TokenFile; without it such a config is refused.
	Insecure bool
	// Logger receives the daemon's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration `stated run` uses without flags.
// NodeID is the host name, or "stated" if the host has none.
func DefaultConfig() Config {
	raftDefaults := raftstore.DefaultConfig()
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "stated"
	}
	return Config{
		NodeID:          host,
		DataDir:         "./stated-data",
		GRPCAddr:        "127.0.0.1:7420",
		RaftAddr:        "127.0.0.1:7421",
		Bootstrap:       true,
		MaxMessageBytes: 64 << 20,
		ExpiryInterval:  5 * time.Second,
		JoinTimeout:     time.Minute,

		MaxInflightRequestBytes: DefaultMaxInflightRequestBytes,
		MinFreeDiskBytes:        DefaultMinFreeDiskBytes,

		SessionIdleTimeout: raftDefaults.SessionIdleTimeout,

		CheckpointInterval: 10 * time.Second,
		CheckpointRetain:   3,

		CheckpointChangelogMemory: DefaultCheckpointChangelogMemory,

		SnapshotThreshold: raftDefaults.SnapshotThreshold,
		CacheSize:         raftDefaults.CacheSize,
		WindowCacheSize:   raftDefaults.WindowCacheSize,
		SnapshotInterval:  raftDefaults.SnapshotInterval,
		TrailingLogs:      raftDefaults.TrailingLogs,
		SnapshotBytes:     raftDefaults.SnapshotBytes,
	}
}

// socketPath is where the unix socket lives once defaults are applied.
func (c *Config) socketPath() string {
	if c.SocketPath != "" {
		return c.SocketPath
	}
	return filepath.Join(c.DataDir, "stated.sock")
}

// Validate reports every invalid field of c, each error naming its field.
// Optional fields left zero are valid: Start fills them in.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("daemon: config: NodeID is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("daemon: config: DataDir is empty"))
	}
	if c.GRPCAddr != "" {
		if _, _, err := splitHostPort(c.GRPCAddr); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: GRPCAddr %q: %w", c.GRPCAddr, err))
		}
	}
	if c.GRPCAddr != "" && !c.Insecure && c.TLSCertFile == "" && c.TokenFile == "" && !loopbackAddr(c.GRPCAddr) {
		errs = append(errs, fmt.Errorf("daemon: config: GRPCAddr %q listens beyond this machine with neither TLS nor tokens: anyone who reaches it may read and change every namespace; set TLSCertFile (--tls-cert) or TokenFile (--token-file), or Insecure (--insecure) to accept that", c.GRPCAddr))
	}
	if c.MetricsAddr != "" {
		if _, _, err := splitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: MetricsAddr %q: want host:port: %w", c.MetricsAddr, err))
		}
	}
	if c.EnablePprof && c.MetricsAddr == "" {
		errs = append(errs, errors.New("daemon: config: EnablePprof (--enable-pprof) serves on MetricsAddr (--metrics-addr), which is empty"))
	}
	if c.RaftAddr == "" {
		errs = append(errs, errors.New("daemon: config: RaftAddr is empty"))
	} else if _, _, err := splitHostPort(c.RaftAddr); err != nil {
		errs = append(errs, fmt.Errorf("daemon: config: RaftAddr %q: %w", c.RaftAddr, err))
	}
	if c.RaftAddr != "" && c.AdvertiseRaftAddr == "" {
		if host, _, err := splitHostPort(c.RaftAddr); err == nil {
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				errs = append(errs, fmt.Errorf("daemon: config: RaftAddr %q binds every interface, which peers cannot dial: set AdvertiseRaftAddr (--advertise-raft-addr)", c.RaftAddr))
			}
		}
	}
	if c.AdvertiseRaftAddr != "" {
		host, port, err := splitHostPort(c.AdvertiseRaftAddr)
		switch ip := net.ParseIP(host); {
		case err != nil:
			errs = append(errs, fmt.Errorf("daemon: config: AdvertiseRaftAddr %q: want host:port: %w", c.AdvertiseRaftAddr, err))
		case host == "" || port == "" || port == "0" || ip != nil && ip.IsUnspecified():
			errs = append(errs, fmt.Errorf("daemon: config: AdvertiseRaftAddr %q: want a host peers can dial and a port other than 0", c.AdvertiseRaftAddr))
		}
	}
	if err := CheckRaftLogStore(c.RaftLogStore); err != nil {
		errs = append(errs, fmt.Errorf("daemon: config: RaftLogStore %q: %w", c.RaftLogStore, err))
	}
	if c.BootstrapNodeID != "" && len(c.Join) == 0 {
		errs = append(errs, errors.New("daemon: config: BootstrapNodeID needs Join: give every member the same --join list of all members' gRPC addresses"))
	}
	for i, a := range c.Join {
		if _, _, err := splitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: Join[%d] %q: want host:port: %w", i, a, err))
		}
	}
	if len(c.Join) > 0 && c.GRPCAddr == "" && c.AdvertiseGRPCAddr == "" {
		errs = append(errs, errors.New("daemon: config: Join needs TCP: set GRPCAddr so that the other members can reach this node"))
	}
	if c.AdvertiseGRPCAddr != "" {
		if _, _, err := splitHostPort(c.AdvertiseGRPCAddr); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: AdvertiseGRPCAddr %q: %w", c.AdvertiseGRPCAddr, err))
		}
	}
	if p := c.socketPath(); c.DataDir != "" && len(p) > maxSocketPath {
		errs = append(errs, fmt.Errorf("daemon: config: SocketPath %q is %d bytes, longer than the %d a unix socket allows; set a shorter SocketPath", p, len(p), maxSocketPath))
	}
	if c.SocketMode&^os.ModePerm != 0 {
		errs = append(errs, fmt.Errorf("daemon: config: SocketMode %#o: want permission bits only, at most 0777", uint32(c.SocketMode)))
	}
	if c.CacheSize != 0 {
		if err := CheckCacheSize(c.CacheSize); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: CacheSize %d: %w", c.CacheSize, err))
		}
	}
	if c.WindowCacheSize < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: WindowCacheSize %d is negative (0 turns the window cache off)", c.WindowCacheSize))
	}
	if c.SnapshotBytes < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: SnapshotBytes %d is negative (0 turns the size trigger of Raft snapshots off)", c.SnapshotBytes))
	}
	if c.MaxMessageBytes != 0 && c.MaxMessageBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("daemon: config: MaxMessageBytes %d is below the minimum of 1 MiB", c.MaxMessageBytes))
	}
	if c.MaxInflightRequestBytes != 0 {
		if err := CheckMaxInflightRequestBytes(c.MaxInflightRequestBytes); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: MaxInflightRequestBytes %d: %w", c.MaxInflightRequestBytes, err))
		}
	}
	if c.MinFreeDiskBytes < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: MinFreeDiskBytes %d is negative (0 turns the check off)", c.MinFreeDiskBytes))
	}
	if c.JoinTimeout < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: JoinTimeout %s is negative", c.JoinTimeout))
	}
	if c.ExpiryInterval < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: ExpiryInterval %s is negative", c.ExpiryInterval))
	}
	if c.SessionIdleTimeout < 0 || c.SessionIdleTimeout > 0 && c.SessionIdleTimeout < time.Second {
		errs = append(errs, fmt.Errorf("daemon: config: SessionIdleTimeout %s is below the 1s minimum", c.SessionIdleTimeout))
	}
	if c.CheckpointInterval < 0 || c.CheckpointInterval > 0 && c.CheckpointInterval < time.Second {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointInterval %s is below the 1s minimum (zero means on request only)", c.CheckpointInterval))
	}
	if c.CheckpointMaterializeInterval < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointMaterializeInterval %s is negative (zero uploads the tables at every checkpoint)", c.CheckpointMaterializeInterval))
	}
	if c.CheckpointChangelogMemory < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointChangelogMemory %d is negative (zero reads every changelog segment from the Raft log)", c.CheckpointChangelogMemory))
	}
	if c.CheckpointRetain < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointRetain %d is below 1", c.CheckpointRetain))
	}
	if c.CheckpointWorkers < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointWorkers %d is negative", c.CheckpointWorkers))
	}
	if c.CheckpointGCGrace < 0 {
		errs = append(errs, fmt.Errorf("daemon: config: CheckpointGCGrace %s is negative", c.CheckpointGCGrace))
	}
	for i, b := range c.KafkaBrokers {
		if _, _, err := splitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("daemon: config: KafkaBrokers[%d] %q: want host:port: %w", i, b, err))
		}
	}
	errs = append(errs, c.validateTLS()...)
	return errors.Join(errs...)
}

// CheckRaftLogStore says what is wrong with kind as a RaftLogStore, if
// anything: it must be "wal", "boltdb" or empty.
func CheckRaftLogStore(kind string) error {
	if raftstore.ValidLogStore(kind) {
		return nil
	}
	return fmt.Errorf("want %s or %s (or empty: the data dir's own store, %s for a new data dir)",
		raftstore.LogStoreWAL, raftstore.LogStoreBoltDB, raftstore.DefaultLogStore)
}

// CheckCacheSize says what is wrong with bytes as a CacheSize, if
// anything: it must be at least fsm.MinCacheSize (1 MiB).
func CheckCacheSize(bytes int64) error {
	if bytes < fsm.MinCacheSize {
		return fmt.Errorf("below the minimum of 1MiB (%d bytes)", int64(fsm.MinCacheSize))
	}
	return nil
}

// DefaultMaxInflightRequestBytes is DefaultConfig's
// MaxInflightRequestBytes: two commits of the default largest message
// at once.
const DefaultMaxInflightRequestBytes = 128 << 20

// CheckMaxInflightRequestBytes says what is wrong with bytes as a
// MaxInflightRequestBytes, if anything: it must be at least 1 MiB.
func CheckMaxInflightRequestBytes(bytes int64) error {
	if bytes < 1<<20 {
		return fmt.Errorf("below the minimum of 1MiB (%d bytes)", int64(1<<20))
	}
	return nil
}

// withDefaults returns c with its optional zero fields filled in.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.SocketPath = c.socketPath()
	if c.SocketMode == 0 {
		c.SocketMode = 0o600
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.MaxInflightRequestBytes == 0 {
		c.MaxInflightRequestBytes = d.MaxInflightRequestBytes
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = d.ExpiryInterval
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = d.JoinTimeout
	}
	if c.SessionIdleTimeout == 0 {
		c.SessionIdleTimeout = d.SessionIdleTimeout
	}
	if c.CheckpointRetain == 0 {
		c.CheckpointRetain = d.CheckpointRetain
	}
	if c.CheckpointWorkers == 0 {
		c.CheckpointWorkers = 4
	}
	if c.CheckpointGCGrace == 0 {
		c.CheckpointGCGrace = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// loopbackAddr reports whether host:port names a loopback address
// (127.0.0.0/8, ::1 or "localhost"). An unparsable address is not.
// splitHostPort is net.SplitHostPort that also refuses a numeric port
// above 65535, which no socket has; a named port is left to the resolver.
func splitHostPort(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", err
	}
	if n, perr := strconv.Atoi(port); perr == nil && (n < 0 || n > 65535) {
		return "", "", fmt.Errorf("port %d is not 0..65535", n)
	}
	return host, port, nil
}

func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
