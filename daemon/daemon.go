package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/statedhq/stated/daemon/authz"
	"github.com/statedhq/stated/daemon/grpcapi"
	"github.com/statedhq/stated/internal/grpccodec"
	"github.com/statedhq/stated/internal/reqsize"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
)

// gracefulStopTimeout bounds how long Close waits for in-flight RPCs before
// it cuts them off.
const gracefulStopTimeout = 5 * time.Second

// expiryBatch caps the entries one expiry command deletes, and
// sessionExpiryBatch the sessions. The leader proposes such commands back to
// back while more are due, up to expiryRounds per ExpiryInterval, so expiry
// keeps pace with any write rate the log sustains (expiryRounds ×
// expiryBatch per interval) without one entry stalling the apply loop.
const (
	expiryBatch        = 10_000
	sessionExpiryBatch = 1_000
	expiryRounds       = 1_000
)

// Daemon is a running stated node: a raftstore.Store served over gRPC on a
// unix socket and, optionally, TCP.
type Daemon struct {
	cfg    Config
	logger *slog.Logger
	store  *raftstore.Store
	server *grpc.Server
	state  *grpcapi.Server // the State service, drained before the server stops
	health *health.Server
	conns  *connCache // connections to leaders, for forwarding
	ckpt   *coordinator
	// metrics serves Prometheus metrics; nil without MetricsAddr.
	metrics *metricsServer
	// disk refuses commits on the leader while the data dir's disk has
	// less than MinFreeDiskBytes free.
	disk *diskGuard

	unixLn net.Listener
	tcpLn  net.Listener
	tls    *nodeTLS
	authz  *authz.Authorizer // nil: no token file, every call open

	stopBackground context.CancelFunc
	bg             sync.WaitGroup // Serve loops, the expiry and window tickers

	closeOnce sync.Once
	closeErr  error
}

// Start opens the store in cfg.DataDir, joins the cluster at cfg.Join if
// this node is new to it, waits until the cluster has a leader and this
// node has caught up (bounded by ctx) and serves gRPC. The caller must
// Close the Daemon. Start refuses to run when another live daemon answers
// on the unix socket; a stale socket file left by a crash is removed.
//
// A join that the cluster refuses (the node id or an address is taken, or
// the data belongs to another cluster), or Join addresses where no stated
// node answers, make Start fail with an error naming the problem; the
// cluster is left as it was. A checkpoint bucket or key that cannot be
// used (an unknown scheme, a bucket that does not exist or cannot be
// reached) fails Start before the store is opened: the data dir gains no
// Raft state and no join is attempted. So does a taken Raft address, and
// a new node (empty data dir) given neither Bootstrap nor Join. A start
// refused before the store wrote anything leaves the data dir as it found
// it: the directories it created, its parents included, are removed
// again, and so are the LOCK file and default checkpoint directory it
// created in one that existed.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := refuseNewNodeWithoutBootstrapOrJoin(cfg); err != nil {
		return nil, err
	}
	found := traceDataDir(cfg.DataDir)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("daemon: create data dir: %w", err)
	}
	// A refused start leaves the data dir as it found it: what it made
	// goes again, as long as the store has written nothing.
	refused := func(err error) (*Daemon, error) {
		found.undo()
		return nil, err
	}
	certs, err := loadTLS(&cfg)
	if err != nil {
		return refused(err)
	}
	az, err := loadAuthz(cfg)
	if err != nil {
		return refused(err)
	}
	d := &Daemon{cfg: cfg, logger: cfg.Logger, tls: certs, authz: az, conns: newConnCache(cfg.MaxMessageBytes, certs.peerCreds),
		disk: newDiskGuard(cfg.DataDir, cfg.NodeID, cfg.MinFreeDiskBytes, cfg.Logger)}
	if err := d.listen(); err != nil {
		return refused(err)
	}
	if err := d.listenMetrics(); err != nil {
		d.closeListeners()
		return refused(err)
	}
	// The checkpoint bucket, key and Kafka client before the store: a
	// config that cannot be used stops the node before it creates Raft
	// state or asks a cluster to add it as a voter it would then leave
	// dead.
	if err := d.openCheckpoints(ctx); err != nil {
		d.closeListeners()
		return refused(err)
	}
	if err := d.openStore(ctx); err != nil {
		d.ckpt.close()
		d.closeListeners()
		return refused(err)
	}
	d.ckpt.attach(d.store)
	d.serve()
	return d, nil
}

// dataDirTrace is what a start found of its data dir, so that a refused
// start removes what it made and nothing else.
type dataDirTrace struct {
	dir  string
	made []string // the directories missing, the data dir's parents first
	// hadCheckpoints and hadLock: the default checkpoint directory and
	// the data dir's LOCK existed.
	hadCheckpoints, hadLock bool
}

func traceDataDir(dir string) dataDirTrace {
	t := dataDirTrace{dir: dir}
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			break
		}
		t.made = append([]string{p}, t.made...)
		if filepath.Dir(p) == p {
			break
		}
	}
	_, err := os.Lstat(filepath.Join(dir, "checkpoints"))
	t.hadCheckpoints = !errors.Is(err, os.ErrNotExist)
	_, err = os.Lstat(filepath.Join(dir, raftstore.DataDirLockName))
	t.hadLock = !errors.Is(err, os.ErrNotExist)
	return t
}

// undo removes what the start made, as long as it holds nothing: the
// default checkpoint directory, the LOCK file when nothing else is left,
// and the directories it created. os.Remove removes no directory that
// holds anything, so a data dir the store wrote in stays whole.
func (t dataDirTrace) undo() {
	if !t.hadCheckpoints {
		_ = os.Remove(filepath.Join(t.dir, "checkpoints"))
	}
	if !t.hadLock {
		if ents, err := os.ReadDir(t.dir); err == nil && len(ents) == 1 && ents[0].Name() == raftstore.DataDirLockName {
			_ = os.Remove(filepath.Join(t.dir, raftstore.DataDirLockName))
		}
	}
	for i := len(t.made) - 1; i >= 0; i-- {
		if os.Remove(t.made[i]) != nil {
			return
		}
	}
}

// refuseNewNodeWithoutBootstrapOrJoin refuses, before anything is
// written, a start that could only fail later: a new node (an empty or
// missing data dir) that neither bootstraps nor joins. Creating its state
// first would leave it marked as joining, and the corrected command with
// bootstrap on refused.
func refuseNewNodeWithoutBootstrapOrJoin(cfg Config) error {
	if cfg.Bootstrap || len(cfg.Join) > 0 {
		return nil
	}
	ents, err := os.ReadDir(cfg.DataDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil // the store says what is wrong with it
	}
	if len(ents) > 0 {
		return nil
	}
	return fmt.Errorf("daemon: the node in %s has to join a cluster (its data dir has no Raft state and --bootstrap is off): give --join with the address of a member, or --bootstrap to start a new cluster", cfg.DataDir)
}

// listen takes the unix socket (and the TCP port) before the store is
// opened, so a second daemon on the same socket fails fast and clearly, and
// clients that connect during startup wait in the accept queue.
func (d *Daemon) listen() error {
	if err := removeStaleSocket(d.cfg.SocketPath); err != nil {
		return err
	}
	ln, err := net.Listen("unix", d.cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("daemon: listen on unix socket %s: %w", d.cfg.SocketPath, err)
	}
	d.unixLn = ln
	// Right after bind, before any client is served: the socket's mode
	// came from the umask, and the data dir (0700) shields the default
	// path meanwhile.
	if err := os.Chmod(d.cfg.SocketPath, d.cfg.SocketMode); err != nil {
		d.closeListeners()
		return fmt.Errorf("daemon: set mode %#o on unix socket %s: %w", uint32(d.cfg.SocketMode), d.cfg.SocketPath, err)
	}
	if d.cfg.GRPCAddr != "" {
		ln, err := net.Listen("tcp", d.cfg.GRPCAddr)
		if err != nil {
			d.closeListeners()
			return fmt.Errorf("daemon: listen on %s: %w", d.cfg.GRPCAddr, err)
		}
		d.tcpLn = d.tls.wrapGRPCListener(ln)
	}
	return nil
}

// removeStaleSocket removes a socket file no process answers on. It refuses
// to remove a live daemon's socket or a file that is not a socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("daemon: inspect socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("daemon: socket path %s exists and is not a socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("daemon: another daemon is serving on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("daemon: remove stale socket %s: %w", path, err)
	}
	return nil
}

func (d *Daemon) openStore(ctx context.Context) error {
	rc := raftstore.DefaultConfig()
	rc.NodeID = d.cfg.NodeID
	rc.Dir = d.cfg.DataDir
	rc.RaftBind = d.cfg.RaftAddr
	rc.RaftAdvertise = d.cfg.AdvertiseRaftAddr
	rc.LogStore = d.cfg.RaftLogStore
	if d.cfg.CacheSize > 0 {
		rc.CacheSize = d.cfg.CacheSize
	}
	rc.WindowCacheSize = d.cfg.WindowCacheSize
	rc.GRPCAddr = d.AdvertiseGRPCAddr()
	rc.Bootstrap = d.cfg.Bootstrap && len(d.cfg.Join) == 0
	if d.cfg.BootstrapNodeID != "" && d.cfg.BootstrapNodeID == d.cfg.NodeID {
		// Asked only of a data dir without Raft state: a restart does not
		// wait on members that are starting too.
		rc.BootstrapIf = func(ctx context.Context) bool { return !d.clusterAnswers(ctx) }
	}
	rc.StreamLayer = d.tls.raftLayer(d.cfg.AdvertiseRaftAddr)
	rc.Logger = d.logger
	rc.SessionIdleTimeout = d.cfg.SessionIdleTimeout
	if d.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = d.cfg.SnapshotThreshold
	}
	if d.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = d.cfg.SnapshotInterval
	}
	if d.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = d.cfg.TrailingLogs
	}
	rc.SnapshotBytes = d.cfg.SnapshotBytes
	s, err := raftstore.Open(ctx, rc)
	if err != nil {
		return fmt.Errorf("daemon: open store: %w", err)
	}
	// Metrics from the moment the Raft state is open: a new node waiting
	// to join (up to JoinTimeout, while its cluster has no majority) is
	// scraped as one without a leader rather than not answering.
	d.store = s
	d.registerMetrics()
	d.serveMetrics()
	if err := d.joinIfNew(ctx, s); err != nil {
		d.closeMetrics() // before the store its collectors read
		s.Close()
		d.store = nil
		return err
	}
	// A node whose cluster a restore replaced learns it from a peer of
	// the restored cluster, maybe before it has a leader.
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-s.Superseded():
			cancel(s.SupersededErr())
		case <-wctx.Done():
		}
	}()
	if err := s.WaitReady(wctx); err != nil {
		d.closeMetrics() // before the store its collectors read
		s.Close()
		d.store = nil
		if cause := context.Cause(wctx); ctx.Err() == nil && cause != nil {
			return fmt.Errorf("daemon: %w", cause)
		}
		return fmt.Errorf("daemon: wait for a raft leader and the replay of its log: %w", err)
	}
	return nil
}

// openCheckpoints opens the checkpoint bucket (creating the default one,
// DataDir/checkpoints), its key and the Kafka client, before the store
// is opened: a URL that cannot be opened, or a bucket that cannot be
// listed, fails Start. The coordinator gets the store later (attach).
func (d *Daemon) openCheckpoints(ctx context.Context) error {
	if d.cfg.CheckpointURL == "" {
		u, err := defaultCheckpointURL(d.cfg.DataDir)
		if err != nil {
			return err
		}
		d.cfg.CheckpointURL = u
	}
	c, err := openCoordinator(ctx, d.cfg, d.logger)
	if err != nil {
		return err
	}
	if st := c.Status(); st.SharesDiskWithData {
		d.logger.Warn("daemon: checkpoints go to the data dir's disk; losing that disk loses both: point --checkpoint-url at other storage",
			"bucket", st.Bucket)
	}
	d.ckpt = c
	return nil
}

// lineageServerOptions chain the lineage check (grpcapi.LineageKey): a
// call from a client of another cluster is refused before its handler.
// It runs after the token check, so that only an authorized caller learns
// this cluster's lineage from a refusal.
func (d *Daemon) lineageServerOptions() []grpc.ServerOption {
	c := grpcapi.NewLineageCheck(d.store, d.logger)
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(c.Unary), grpc.ChainStreamInterceptor(c.Stream)}
}

func (d *Daemon) serve() {
	d.server = grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(d.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(d.cfg.MaxMessageBytes),
		grpc.ForceServerCodecV2(grpccodec.Codec), // buffers not cleared (internal/grpccodec)
		grpc.StatsHandler(reqsize.Handler()),
		grpc.KeepaliveEnforcementPolicy(serverKeepalive),
	}, append(append(d.metricsServerOptions(), d.authzServerOptions()...), d.lineageServerOptions()...)...)...)
	opts := []grpcapi.Option{grpcapi.WithLogger(d.logger), grpcapi.WithForwarder(d.conns), grpcapi.WithLargeRequestBudget(d.cfg.MaxInflightRequestBytes),
		grpcapi.WithWriteGuard(d.disk.check)}
	if d.metrics != nil {
		opts = append(opts, grpcapi.WithBatchObserver(d.metrics.grpc.ObserveStreamed))
	}
	d.state = grpcapi.New(d.store, opts...)
	statedv1.RegisterStateServer(d.server, d.state)
	statedv1.RegisterClusterServer(d.server, grpcapi.NewCluster(d.store, opts...))
	statedv1.RegisterCheckpointsServer(d.server, grpcapi.NewCheckpoints(d.store, checkpointsAPI{d.ckpt}, opts...))
	statedv1.RegisterWindowsServer(d.server, grpcapi.NewWindows(d.store, opts...))
	d.health = health.NewServer()
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	d.health.SetServingStatus(statedv1.State_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	d.health.SetServingStatus(statedv1.Cluster_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	d.health.SetServingStatus(statedv1.Windows_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(d.server, d.health)
	reflection.Register(d.server)

	for _, ln := range d.listeners() {
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			if err := d.server.Serve(ln); err != nil {
				d.logger.Error("daemon: grpc serve stopped", "addr", ln.Addr().String(), "error", err)
			}
		}()
	}

	ctx, cancel := context.WithCancel(context.Background())
	d.stopBackground = cancel
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.expireLoop(ctx)
	}()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.windowTickLoop(ctx)
	}()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.ckpt.run(ctx)
	}()
}

// expireLoop deletes expired entries and idle client sessions on the
// leader every ExpiryInterval. Reads already hide expired entries; this
// reclaims their space and keeps the bookkeeping bounded.
func (d *Daemon) expireLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !d.store.IsLeader() {
			continue
		}
		err := d.expireDue(ctx)
		switch {
		case err == nil:
		case ctx.Err() != nil, errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrClosed):
			// Leadership moved or the daemon is closing: nothing to report.
		default:
			d.logger.Warn("daemon: expire entries", "error", err)
		}
	}
}

// expireDue proposes expiry commands while entries or sessions are due,
// at most expiryRounds of each.
func (d *Daemon) expireDue(ctx context.Context) error {
	for range expiryRounds {
		more, err := d.store.Expire(ctx, expiryBatch)
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	for range expiryRounds {
		n, err := d.store.ExpireSessions(ctx, sessionExpiryBatch)
		if err != nil {
			return err
		}
		if n < sessionExpiryBatch {
			break
		}
	}
	return nil
}

func (d *Daemon) listeners() []net.Listener {
	if d.tcpLn == nil {
		return []net.Listener{d.unixLn}
	}
	return []net.Listener{d.unixLn, d.tcpLn}
}

func (d *Daemon) closeListeners() {
	for _, ln := range d.listeners() {
		if ln != nil {
			ln.Close()
		}
	}
	d.closeMetrics()
}

// Reload re-reads the TLS certificates and CA bundles from their files, so
// that new connections use them; established connections keep theirs. A
// file that is unreadable, does not parse, does not match its key or is
// outside its validity keeps the old certificate: Reload logs and returns
// why. It also re-reads the token file (see reloadAuthz). Without TLS and
// tokens it does nothing.
func (d *Daemon) Reload() error {
	err := d.tls.reload()
	if err != nil {
		d.logger.Error("certificate reload refused", "error", err)
	} else if d.tls.client != nil || d.tls.peer != nil {
		d.logger.Info("certificates reloaded")
	}
	return errors.Join(err, d.reloadAuthz())
}

// TCPAddr is the TCP address gRPC is served on, with the port the system
// picked for ":0"; "" when TCP is disabled.
func (d *Daemon) TCPAddr() string {
	if d.tcpLn == nil {
		return ""
	}
	return d.tcpLn.Addr().String()
}

// AdvertiseGRPCAddr is the gRPC address this node advertises to the
// cluster: Config.AdvertiseGRPCAddr, else the bound TCP address; "" when
// TCP is disabled and nothing is advertised.
func (d *Daemon) AdvertiseGRPCAddr() string {
	if d.cfg.AdvertiseGRPCAddr != "" {
		return d.cfg.AdvertiseGRPCAddr
	}
	return d.TCPAddr()
}

// SocketPath is the unix socket gRPC is served on.
func (d *Daemon) SocketPath() string { return d.cfg.SocketPath }

// NodeID is the node's Raft id.
func (d *Daemon) NodeID() string { return d.cfg.NodeID }

// Store is the daemon's replicated store.
func (d *Daemon) Store() *raftstore.Store { return d.store }

// Superseded is closed when this node learns that its cluster was
// replaced by a restore from its checkpoint (raftstore.ErrSuperseded):
// its data dir is from before the restore, and it must stop serving.
// SupersededErr says why.
func (d *Daemon) Superseded() <-chan struct{} { return d.store.Superseded() }

// SupersededErr is the error that closed Superseded, nil before.
func (d *Daemon) SupersededErr() error { return d.store.SupersededErr() }

// CheckpointStatus is this node's checkpoint coordinator state (it runs
// checkpoints only while the node leads).
func (d *Daemon) CheckpointStatus() CheckpointStatus { return d.ckpt.Status() }

// Close stops serving (waiting up to a few seconds for in-flight RPCs),
// shuts Raft down, closes the state and removes the socket file. It is
// safe to call more than once; later calls return the first result.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

// leadershipHandoverTimeout bounds how long a stopping leader waits for
// another voter to take over before it stops anyway.
const leadershipHandoverTimeout = 3 * time.Second

// handOverLeadership makes a stopping leader hand leadership to another
// voter that answers (Store.TransferLeadership: Raft brings its log up to
// the leader's first), so that the cluster goes on committing at once
// instead of after an election timeout (a rolling restart stops every
// node in turn, the leader among them). Calls still arriving here are
// forwarded to the new leader while the gRPC server drains. A failed
// transfer is logged and the stop goes on: the others then elect a
// leader once the election timeout passes, as after a crash.
func (d *Daemon) handOverLeadership() {
	if !d.store.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), leadershipHandoverTimeout)
	defer cancel()
	start := time.Now()
	to, err := d.store.TransferLeadership(ctx)
	switch {
	case errors.Is(err, raftstore.ErrNoOtherVoter), errors.Is(err, raftstore.ErrNotLeader):
	case err != nil:
		d.logger.Warn("daemon: stopping leader could not hand leadership over; the others elect one after the election timeout", "error", err)
	default:
		d.logger.Info("daemon: stopping leader handed leadership over", "to", to, "took", time.Since(start))
	}
}

func (d *Daemon) close() error {
	d.health.Shutdown() // NOT_SERVING, so load balancers stop sending first
	d.handOverLeadership()
	d.stopBackground()
	d.closeMetrics()

	stopped := make(chan struct{})
	go func() {
		// Commit streams last as long as their clients: end them, each
		// once the request it serves is answered, or GracefulStop would
		// wait for every client to hang up.
		if d.state != nil {
			d.state.Drain()
		}
		d.server.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(gracefulStopTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		d.logger.Warn("daemon: in-flight RPCs did not finish; cutting them off", "waited", gracefulStopTimeout)
		d.server.Stop()
		<-stopped
	}
	d.bg.Wait()

	var errs []error
	d.ckpt.close()
	if err := d.conns.Close(); err != nil {
		errs = append(errs, fmt.Errorf("daemon: close connections to the leader: %w", err))
	}
	if err := d.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("daemon: close store: %w", err))
	}
	if err := os.Remove(d.cfg.SocketPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("daemon: remove socket: %w", err))
	}
	return errors.Join(errs...)
}
