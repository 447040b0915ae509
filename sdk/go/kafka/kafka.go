package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	stated "github.com/statedhq/stated/sdk/go"
)

// Handler processes one record: it adds the record's state changes to txn,
// which commits them together with the record's offset. It may read state
// through the Client (reads do not see txn's own pending changes). It may
// be called again for the same record, after a failed commit or a handler
// error in its batch, with a fresh txn: only the changes of the run that
// commits are applied.
type Handler func(ctx context.Context, txn *stated.Txn, rec *kgo.Record) error

// BatchHandler processes the records of one poll, in partition order (the
// records of one partition in offset order), adding their state changes to
// txn. The same rules as for Handler apply.
type BatchHandler func(ctx context.Context, txn *stated.Txn, recs []*kgo.Record) error

// Config configures a Processor.
type Config struct {
	// State is the stated client. Its client id owns the processor's
	// partition claims, so give every processor its own Client.
	State *stated.Client
	// Group is the Kafka consumer group, and the group under which stated
	// stores the offsets: 1 to 255 bytes.
	Group string
	// Topics are the topics to consume, named by Kafka's rules: 1 to 249
	// characters of [a-zA-Z0-9._-], not "." or "..".
	Topics []string
	// KafkaOptions configure the franz-go client: at least
	// kgo.SeedBrokers, and TLS, SASL or timeouts as needed. The processor
	// sets the consumer group, the topics, the offsets and the rebalance
	// callbacks itself (see Run); do not pass options for those. It reads
	// committed records only (kgo.ReadCommitted: a transactional
	// producer's aborted records are skipped, and records of an open
	// transaction wait for its end); kgo.FetchIsolationLevel here
	// overrides that.
	//
	// A member does not heartbeat while it joins the group, and a
	// rebalance may last up to the largest rebalance timeout of the
	// members. When you shorten kgo.SessionTimeout, set
	// kgo.RebalanceTimeout no longer than it (a broker that counts the
	// join against the session expires members mid-join otherwise), yet
	// longer than a commit to stated can take during a failover: a member
	// that rejoins later than the rebalance timeout is dropped, and its
	// batch is fenced and processed again by the new owner.
	KafkaOptions []kgo.Opt
	// Exactly one of Handler and BatchHandler must be set.
	Handler      Handler
	BatchHandler BatchHandler
	// StartOffset is where a partition for which stated has no offset
	// starts. Nil means the partition's earliest offset. With exactly
	// kgo.NewOffset().AtEnd(), the end found when the partition is first
	// claimed is recorded in stated, so that a partition that moves
	// before its first commit starts there on its next owner too; reading
	// committed records only (the default), that end is the last stable
	// offset, so a transaction open at the first claim counts once it
	// commits. An offset relative to the end (AtEnd().Relative(n)) is not
	// recorded, and such a partition can skip the records produced in
	// between. A partition added to a topic while the group runs is first
	// claimed when the Kafka client next refreshes its metadata
	// (kgo.MetadataMaxAge, 5 minutes by default): with AtEnd, the records
	// produced to it before then are not processed (as with Kafka's own
	// consumer and auto.offset.reset=latest); the earliest offset
	// processes them.
	StartOffset *kgo.Offset
	// MaxPollRecords caps the records of one poll, and so of one stated
	// commit and of the time a rebalance may wait for it. Zero means 5000.
	// A batch whose commit exceeds the maximum message size is committed
	// in halves (halved again as needed); only a single record too large
	// on its own stops Run.
	MaxPollRecords int
	// RetryBackoff is the first wait after a handler error before the
	// batch is processed again; it doubles up to 5 s. Zero means 100 ms.
	RetryBackoff time.Duration
	// OnFenced, if set, is called when stated refuses a commit because
	// another processor claimed the partition since (this one is a
	// zombie for it). The processor stops consuming the partition until
	// Kafka assigns it again, or claims it again after
	// ReclaimFencedAfter if Kafka has not revoked it by then.
	OnFenced func(err *stated.FencedError)
	// ReclaimFencedAfter is how long a fenced partition that Kafka still
	// assigns to this processor stays paused before the processor claims
	// it again and resumes from the offset stored in stated. A processor
	// that was the zombie learns from Kafka within the group's session
	// timeout that the partition moved (it is then revoked or lost here,
	// and not claimed again); one that still holds it after that owns it
	// in Kafka's group, and the claim that fenced it came from a member
	// that has left the group: a claim retried through a long stated
	// outage that applied after this processor's, or a process that
	// claimed the partition and died. Without a reclaim such a partition
	// would wait for the next rebalance, which may never come. A reclaim
	// is safe whoever is right: a claim fences every older one, and each
	// claimant resumes from the stored offsets. Zero means twice the
	// group's session timeout (kgo.SessionTimeout in KafkaOptions; 90 s
	// with franz-go's default of 45 s), at least 1 minute; negative
	// turns it off. While a partition is fenced, a poll waits no longer
	// than until its reclaim is due, also with KafkaCommitInterval
	// negative (a fenced partition is paused, and were it the only one
	// with records, the poll would not return for it).
	ReclaimFencedAfter time.Duration
	// KafkaCommitInterval is how often the processor commits, to the
	// Kafka group, the offsets of the newest completed stated checkpoint
	// for the partitions it owns, so that Kafka's committed offsets (what
	// lag tools read) show real progress and never run ahead of a
	// recoverable checkpoint. Kafka accepts commits for an active group
	// from its members only, which is why the processor does it. Zero
	// means 5s; a negative interval turns it off.
	KafkaCommitInterval time.Duration
	// WaitLogInterval is how long the processor may wait for one thing
	// (the Kafka group, a commit to stated, a fenced partition's
	// reassignment: see WaitKind) before it logs a warning saying so, and
	// how often it logs again while the wait lasts. Stats reports the
	// waits whatever the interval. Zero means 10s; a negative interval
	// turns the warnings off.
	WaitLogInterval time.Duration
	// OutboxInterval is how often, between batches, a processor with
	// OnWindowClosed callbacks reads their namespaces' outboxes for
	// emissions that no commit of its own returned: windows the daemon
	// closed because a source went idle, or emissions another processor
	// left unacknowledged. Zero means 1s; a negative interval reads them
	// only when Run starts and after an error.
	OutboxInterval time.Duration
	// Logger receives the processor's logs, and the Kafka client's
	// warnings and errors ("kafka client: ..."), unless KafkaOptions
	// gives the client a logger of its own (kgo.WithLogger; the
	// processor then does not see the client move a partition whose
	// records were deleted under it, and Stats.Lost does not count those
	// records). Nil discards them.
	Logger *slog.Logger
}

const (
	defaultKafkaCommitInterval = 5 * time.Second
	defaultMaxPollRecords      = 5000
	defaultRetryBackoff        = 100 * time.Millisecond
	maxRetryBackoff            = 5 * time.Second
	releaseTimeout             = 5 * time.Second
	defaultWaitLogInterval     = 10 * time.Second
	defaultReclaimFencedAfter  = time.Minute
)

// ErrConfig is matched by the errors New returns for a bad Config.
var ErrConfig = errors.New("kafka: invalid config")

func configError(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
}

func (c *Config) check() error {
	switch {
	case c.State == nil:
		return configError("State", "nil")
	case c.Group == "":
		return configError("Group", "empty")
	case len(c.Group) > maxGroupBytes:
		return configError("Group", "%d bytes, limit %d", len(c.Group), maxGroupBytes)
	case len(c.Topics) == 0:
		return configError("Topics", "empty")
	case (c.Handler == nil) == (c.BatchHandler == nil):
		return configError("Handler", "set exactly one of Handler and BatchHandler")
	case c.MaxPollRecords < 0:
		return configError("MaxPollRecords", "negative (%d)", c.MaxPollRecords)
	case c.RetryBackoff < 0:
		return configError("RetryBackoff", "negative (%s)", c.RetryBackoff)
	}
	for i, t := range c.Topics {
		if err := checkTopic(fmt.Sprintf("Topics[%d]", i), t); err != nil {
			return err
		}
	}
	return nil
}

// maxGroupBytes and maxTopicLength are the daemon's limits on a group and
// a topic name, which it would otherwise refuse only at the first claim.
const (
	maxGroupBytes  = 255
	maxTopicLength = 249
)

// checkTopic applies Kafka's rules for topic names, as the daemon does.
func checkTopic(field, topic string) error {
	switch {
	case topic == "":
		return configError(field, "empty")
	case len(topic) > maxTopicLength:
		return configError(field, "%d characters, limit %d", len(topic), maxTopicLength)
	case topic == "." || topic == "..":
		return configError(field, "%q is not a valid topic name", topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return configError(field, "invalid character %q at %d; topics use [a-zA-Z0-9._-]", c, i)
		}
	}
	return nil
}

type topicPartition struct {
	topic     string
	partition int32
}

// owned is a partition this processor holds a claim on.
type owned struct {
	claim stated.PartitionClaim
	// next is the offset of the next record to process: records below it
	// are committed already. -1 until the first record when stated had no
	// offset for the partition.
	next int64
}

// fencedPart is a partition stated fenced: when, and the offset of the
// first record of the batch its fencing dropped, where it resumes if
// stated holds no offset for it.
type fencedPart struct {
	at     time.Time
	resume int64
}

// Processor consumes Kafka records into stated with exactly-once effect:
// see Run.
type Processor struct {
	cfg    Config
	logger *slog.Logger
	cl     *kgo.Client
	// clReady is closed once cl is set: the client joins the group as
	// soon as it exists, so its callbacks can run before New returns.
	clReady chan struct{}
	// splitLogged is set once a batch too large for one commit was
	// split (Run's goroutine only).
	splitLogged bool
	// unknownTopicIDs are the topics whose fetches fail with
	// UNKNOWN_TOPIC_ID, and fetchErrorLogs when each kind of fetch error
	// was last logged (fetchErrors; Run's goroutine only).
	unknownTopicIDs map[string]unknownTopicID
	fetchErrorLogs  map[string]fetchErrorLog

	mu    sync.Mutex
	owned map[topicPartition]*owned
	// resets are the partitions the Kafka client moved to their log start
	// because the records it was consuming were deleted (clientLogger),
	// each with the offset it was fetching then (0 if its warning did not
	// say); batch counts the gap at their first record at or past it.
	resets map[topicPartition]int64
	// fatal is the error Run stops with, set by fail; pollCancel ends the
	// poll Run waits in.
	fatal      error
	pollCancel context.CancelFunc
	// fencedParts are partitions stated fenced since Kafka last assigned
	// them, paused until it revokes or assigns them again, or until
	// reclaimFenced claims them again.
	fencedParts map[topicPartition]fencedPart

	waits *waits

	lastKafkaCommit time.Time
	kafkaCommitted  map[topicPartition]int64 // what this processor told Kafka

	windows windowDelivery // OnWindowClosed callbacks

	// life is where the Processor is: lifeNew until Run or Close,
	// lifeRunning while Run runs, lifeEnded once Run returned, lifeClosed
	// after Close.
	life atomic.Int32
}

const (
	lifeNew int32 = iota
	lifeRunning
	lifeEnded
	lifeClosed
)

// errClosed is Run's error for a Processor that was closed.
var errClosed = errors.New("kafka: Run after Close")

// Close leaves the group, which releases the processor's claims in
// stated, and closes its Kafka client, for a Processor that will not Run:
// New joins the group at once, and without Close its member would hold
// the partitions Kafka assigns it, fencing nobody but processing nothing,
// until the process exits. Run closes the Processor when it returns, so
// Close is not needed after Run, and does nothing then. It fails while
// Run runs: cancel Run's context instead.
func (p *Processor) Close() error {
	if p.life.CompareAndSwap(lifeNew, lifeClosed) {
		p.close()
		return nil
	}
	if p.life.Load() == lifeRunning {
		return errors.New("kafka: Close while Run runs: cancel Run's context, and Run closes the Processor when it returns")
	}
	return nil
}

// New checks cfg and creates a Processor; Run starts it.
func New(cfg Config) (*Processor, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.MaxPollRecords == 0 {
		cfg.MaxPollRecords = defaultMaxPollRecords
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = defaultRetryBackoff
	}
	if cfg.KafkaCommitInterval == 0 {
		cfg.KafkaCommitInterval = defaultKafkaCommitInterval
	}
	if cfg.WaitLogInterval == 0 {
		cfg.WaitLogInterval = defaultWaitLogInterval
	}
	if cfg.OutboxInterval == 0 {
		cfg.OutboxInterval = defaultOutboxInterval
	}
	if cfg.StartOffset == nil {
		start := kgo.NewOffset().AtStart()
		cfg.StartOffset = &start
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Processor{cfg: cfg, logger: logger, owned: map[topicPartition]*owned{}, fencedParts: map[topicPartition]fencedPart{}, resets: map[topicPartition]int64{},
		waits: newWaits(), kafkaCommitted: map[topicPartition]int64{}, clReady: make(chan struct{}),
		unknownTopicIDs: map[string]unknownTopicID{}, fetchErrorLogs: map[string]fetchErrorLog{}}
	// The member joins the group as soon as the client exists.
	p.waits.begin(WaitKafkaGroup, "joining the group")
	// Committed records only, unless KafkaOptions say otherwise: the
	// records of an aborted transaction must count zero times.
	// The Kafka client's warnings go to Config.Logger (a WithLogger in
	// KafkaOptions replaces this), and its reset of a partition whose
	// records were deleted under it is counted (clientLogger).
	opts := append([]kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.WithLogger(clientLogger{p})}, cfg.KafkaOptions...)
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(p.onAssigned),
		kgo.OnPartitionsAssigned(p.onAssignedDone),
		kgo.OnPartitionsRevoked(p.onRevoked),
		kgo.OnPartitionsLost(p.onLost),
		kgo.WithHooks(groupHooks{p.waits}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	p.cl = cl
	if p.cfg.ReclaimFencedAfter == 0 {
		// Past the session timeout, a zombie has learned it is out.
		session, _ := cl.OptValue(kgo.SessionTimeout).(time.Duration)
		p.cfg.ReclaimFencedAfter = max(defaultReclaimFencedAfter, 2*session)
	}
	close(p.clReady)
	return p, nil
}

// Run consumes until ctx ends or processing fails, then leaves the group
// and closes the Kafka client. It returns nil when ctx ended, else the
// error that stopped it; a Processor runs once.
//
// When Kafka assigns partitions, Run claims them in stated (fencing out
// any earlier owner) and starts each at the offset stored in stated, or at
// StartOffset when there is none. Kafka's committed offsets are not used:
// stated is the source of truth. For each poll it runs the handler and
// commits the state changes together with each partition's next offset in
// one stated transaction. Rebalances wait while a batch is in flight
// (kgo.BlockRebalanceOnPoll), so revoked partitions are committed or
// abandoned before they move; their claims are released.
//
// A handler error abandons the batch: nothing of it is committed, and its
// partitions are rewound and processed again after a backoff. A commit
// that stated refuses because a partition was claimed by another processor
// drops that partition (see Config.OnFenced) and processes the rest of the
// batch again. A commit larger than the maximum message size is made again
// in halves (see Config.MaxPollRecords); one that applied but whose answer
// (the emissions of the windows it closed) was larger than it comes back
// from the client as a Duplicate (it sends the commit again alone), and is
// not made again. Any other refused commit stops
// Run with the error; so does
// stated.ErrSessionFenced, which says another process opened a session
// with the same client id: this processor is a zombie, and its commits
// would all be refused; and so does a claim of this processor's found
// released or older claims than its own found current, which only a
// restore of the stated cluster does (ErrClaimReleased), whether the
// commit was fenced by its claim or refused by its session first (a
// restore drops the sessions: the processor then reads the group's claims
// to tell): a processor started again resumes from the restored offsets.
//
// Run never waits silently: whatever it waits for longer than
// Config.WaitLogInterval (the Kafka group, a commit to stated, a fenced
// partition, fetches that fail) it logs as a warning, again at every
// interval, and Stats reports at any time. A fetch error is logged at most
// every 5 s per partition and kind, and a poll that brings only errors is
// followed by a pause (up to 1 s).
//
// Where Kafka no longer holds what stated's offsets point at, Run says
// so. A claimed partition whose offset in stated is past its end stops
// Run with ErrOffsetPastLogEnd before any of its records is processed
// (the topic was deleted and created again, or the brokers lost
// acknowledged records); a consumed topic whose fetches fail with
// UNKNOWN_TOPIC_ID for 10 s stops it with ErrTopicRecreated (the Kafka
// client does not follow a recreated topic). Records Kafka deleted before
// they were processed (retention, DeleteRecords: stated's offset below the
// log start at a claim, or records deleted under the Kafka client while it
// consumed them) cannot be processed: each such gap is logged as a warning
// naming the partition and the number of records, and counted in
// Stats.Lost; at a claim, stated's offset moves up to the log start.
func (p *Processor) Run(ctx context.Context) error {
	for {
		cur := p.life.Load()
		if cur == lifeClosed {
			return errClosed
		}
		if p.life.CompareAndSwap(cur, lifeRunning) {
			break
		}
	}
	defer p.life.Store(lifeEnded)
	defer p.startWatch()() // after close: leaving the group can take long too
	defer p.close()
	p.windows.start()
	p.registerOwnedSources(ctx)
	// pause waits out the backoff after a failure, and doubles it up to
	// maxRetryBackoff; pauseFetch does so for polls that bring fetch
	// errors and no records, with a backoff of its own and a shorter
	// bound (the Kafka client retries on its own; this only keeps the
	// loop from spinning). Both report false when ctx ended.
	backoff, fetchBackoff := p.cfg.RetryBackoff, p.cfg.RetryBackoff
	pause := func() bool { return sleepBackoff(ctx, &backoff, maxRetryBackoff) }
	pauseFetch := func() bool { return sleepBackoff(ctx, &fetchBackoff, maxFetchBackoff) }
	for {
		// Pending window emissions go first: at start (a crash may have
		// left them unacknowledged), after an error, and every
		// OutboxInterval. Between batches, so no rebalance waits for it.
		if p.outboxDue() {
			err := p.deliverPending(ctx)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, errCallback):
				p.logger.Warn("kafka: window emissions not delivered; trying again", "group", p.cfg.Group, "backoff", backoff, "error", err)
				if !pause() {
					return nil
				}
				continue
			default:
				return err
			}
		}
		fetches := p.poll(ctx)
		if ctx.Err() != nil {
			p.cl.AllowRebalance()
			return nil
		}
		failing, err := p.fetchErrors(fetches)
		if err != nil {
			p.cl.AllowRebalance()
			return err
		}
		if failing && fetches.NumRecords() == 0 {
			// franz-go answers a poll at once with the error of a fetch
			// that keeps failing: not a loop that spins. What runs
			// between batches still runs.
			p.reclaimFenced(ctx)
			p.maybeCommitToKafka(ctx)
			p.cl.AllowRebalance()
			if !pauseFetch() {
				return nil
			}
			continue
		}
		fetchBackoff = p.cfg.RetryBackoff
		batch := p.batch(fetches)
		// After the batch is taken (without the reclaimed partitions'
		// records, which the new claim's offsets replace) and before
		// AllowRebalance, so that no revoke runs meanwhile.
		p.reclaimFenced(ctx)
		res, err := p.process(ctx, batch)
		if err == nil {
			// The batch is committed; the windows it closed go to their
			// callbacks now, or, if that fails, before the next batch.
			err = p.deliverCommitted(ctx, res.Emissions)
		}
		switch {
		case err == nil:
			backoff = p.cfg.RetryBackoff
			p.maybeCommitToKafka(ctx)
		case ctx.Err() != nil:
			p.cl.AllowRebalance()
			return nil
		case errors.Is(err, errHandler), errors.Is(err, errOutboxFull), errors.Is(err, stated.ErrDiskFull):
			what := "handler failed"
			p.windows.stale = p.windows.active() // after any error
			if errors.Is(err, stated.ErrDiskFull) {
				what = "stated's leader refuses commits: its data disk is nearly full (below its --min-free-disk)"
			}
			if errors.Is(err, errOutboxFull) {
				what = "a window outbox is full; waiting for its emissions to be acknowledged"
				if p.windows.active() {
					// Delivering the pending emissions acknowledges them.
					what = "a window outbox is full; delivering its emissions first"
				}
			}
			p.logger.Warn("kafka: "+what+"; the batch will be processed again", "group", p.cfg.Group, "records", batch.records, "backoff", backoff, "error", err)
			p.rewind(batch)
			p.cl.AllowRebalance()
			if !pause() {
				return nil
			}
			continue
		case errors.Is(err, errCallback):
			// The batch committed; its emissions wait in the outbox.
			p.logger.Warn("kafka: window emissions not delivered; trying again before the next batch", "group", p.cfg.Group, "backoff", backoff, "error", err)
			p.cl.AllowRebalance()
			if !pause() {
				return nil
			}
			continue
		default:
			p.cl.AllowRebalance()
			return err
		}
		p.cl.AllowRebalance()
	}
}

// sleepBackoff waits *d, or until ctx ends (false), then doubles *d up to
// limit.
func sleepBackoff(ctx context.Context, d *time.Duration, limit time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*d):
	}
	*d = min(2**d, limit)
	return true
}

// poll waits for records, but no longer than the Kafka commit interval, so
// that an idle processor still commits new checkpoints' offsets, nor than
// the outbox interval when it has window callbacks, nor past the time the
// first fenced partition is due to be claimed again (reclaimFenced runs
// after a poll, and a fenced partition is paused: were it the only one
// with records, the poll would not return for it).
func (p *Processor) poll(ctx context.Context) kgo.Fetches {
	limit := p.cfg.KafkaCommitInterval
	if p.windows.active() && p.cfg.OutboxInterval > 0 && (limit < 0 || p.cfg.OutboxInterval < limit) {
		limit = p.cfg.OutboxInterval
	}
	if due, ok := p.reclaimDue(); ok && (limit < 0 || due < limit) {
		limit = max(due, time.Millisecond)
	}
	var pctx context.Context
	var cancel context.CancelFunc
	if limit >= 0 {
		pctx, cancel = context.WithTimeout(ctx, limit)
	} else {
		pctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	// fail ends the poll: an error found on franz-go's goroutine (a
	// claimed partition whose offset is past its end) stops Run at once.
	p.mu.Lock()
	if p.fatal != nil {
		cancel()
	}
	p.pollCancel = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.pollCancel = nil
		p.mu.Unlock()
	}()
	return p.cl.PollRecords(pctx, p.cfg.MaxPollRecords)
}

// partBatch is the records of one partition in a poll.
type partBatch struct {
	tp      topicPartition
	claim   stated.PartitionClaim
	records []*kgo.Record
}

type batch struct {
	parts   []*partBatch
	records int
}

// batch keeps the records of partitions this processor owns that it has
// not committed yet, grouped by partition.
func (p *Processor) batch(fetches kgo.Fetches) *batch {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := &batch{}
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		tp := topicPartition{ftp.Topic, ftp.Partition}
		o, ok := p.owned[tp]
		if !ok {
			return // revoked, lost or fenced since the fetch
		}
		// The fetch's own records, less those committed already (a fetch
		// from before a rewind), copied only when there are such.
		n := len(ftp.Records)
		// Records the client fetched before the reset, below the offset
		// it was fetching, may still come first: the gap starts past them.
		if prior, reset := p.resets[tp]; reset {
			if i := slices.IndexFunc(ftp.Records, func(r *kgo.Record) bool { return r.Offset >= prior }); i >= 0 {
				delete(p.resets, tp)
				from := max(o.next, prior)
				if first := ftp.Records[i].Offset; o.next >= 0 && first > from {
					p.waits.lost(first - from)
					p.logger.Warn("kafka: records deleted by Kafka before this group processed them are lost for good: the records the processor was consuming were deleted under it (retention or DeleteRecords; the processor was slower than retention); processing goes on from the log start",
						"group", p.cfg.Group, "topic", tp.topic, "partition", tp.partition, "stated_offset", o.next, "log_start", first, "lost", first-from)
				}
			}
		}
		pb := &partBatch{tp: tp, claim: o.claim, records: ftp.Records[:n:n]}
		committed := func(r *kgo.Record) bool { return o.next >= 0 && r.Offset < o.next }
		if slices.ContainsFunc(pb.records, committed) {
			pb.records = slices.DeleteFunc(slices.Clone(pb.records), committed)
		}
		if len(pb.records) > 0 {
			b.parts = append(b.parts, pb)
			b.records += len(pb.records)
		}
	})
	return b
}

var errHandler = errors.New("kafka: handler failed")

// ErrClaimReleased is what Run returns when stated refuses a commit
// because the partition's claims went back behind this processor's claim,
// which only a restore of the stated cluster from a checkpoint does: its
// claim was released although the processor did not release it (a
// restore releases every claim), or the partition's newest claim is older
// than this processor's, or there is none (the checkpoint was taken
// before this processor claimed the partition). A commit that the restore
// refused by its session first (it drops every session; the Client then
// reports stated.ErrSessionExpired) is checked against the group's claims
// too, and its error matches both. The restored offsets are
// then behind the records this processor has processed since the
// checkpoint, or absent; going on from its own position would skip them. Start the processor again (a new
// Run, or the service restarted): it claims its partitions again and
// resumes from the offsets stated holds.
var ErrClaimReleased = errors.New("kafka: the processor's claim was released in stated (the stated cluster was restored from a checkpoint)")

// restoredUnder reports whether the fence fe of a commit can only come
// from a restore of the stated cluster from a checkpoint, which took the
// partition's claims back to or behind this processor's claim: the
// partition's newest claim is older than this processor's, or there is
// none (the checkpoint was taken before this processor claimed it), or
// it is this processor's epoch, released although the processor did not
// release it (a restore releases every claim; the processor commits only
// what it owns), or owned by another (claimed anew after the restore: one
// history issues each epoch once). Claim epochs only grow otherwise, so
// that only a newer claim than this processor's, another's or its own
// reclaim's, is an ordinary fence.
func restoredUnder(fe *stated.FencedError) bool {
	return fe.Epoch >= fe.CurrentEpoch
}

// claimsTakenBack is the error Run returns for the commit of b that
// failed with err, an error matching stated.ErrSessionExpired, when the
// group's claims, read linearizably, show that a restore took a claim of
// b back (restoredUnder's rule): the partition's claim is older than this
// processor's, or there is none, or it is this processor's epoch but
// released or another's. That error matches ErrClaimReleased and wraps
// err. A restore drops every session: the commit was refused by its
// session before its claims were checked. It returns nil when no claim
// of b was taken back (a session that expired while the commit was
// retried), or when the claims do not read (err then stops Run as
// before).
func (p *Processor) claimsTakenBack(ctx context.Context, b *batch, err error) error {
	p.waits.enter(WaitStatedRead, "reading the group's claims after a commit refused by its session, unanswered")
	g, gerr := p.cfg.State.GetGroup(ctx, p.cfg.Group, stated.WithConsistency(stated.ConsistencyLinearizable))
	p.waits.leave(WaitStatedRead)
	if gerr != nil {
		p.logger.Warn("kafka: reading the group's claims after a commit refused by its session", "group", p.cfg.Group, "error", gerr)
		return nil
	}
	current := make(map[topicPartition]stated.ClaimInfo, len(g.Claims))
	for _, c := range g.Claims {
		current[topicPartition{c.Topic, c.Partition}] = c
	}
	owner := p.cfg.State.ClientID()
	for _, pb := range b.parts {
		c, ok := current[pb.tp]
		newest := uint64(0)
		if ok {
			newest = c.Epoch
		}
		if ok && (c.Epoch > pb.claim.Epoch || (c.Epoch == pb.claim.Epoch && !c.Released && c.Owner == owner)) {
			continue // still this processor's, or claimed since by another
		}
		what := "claimed by nobody"
		switch {
		case !ok:
		case c.Epoch < pb.claim.Epoch:
			what = "an older claim"
		case c.Released:
			what = "released"
		default:
			what = "claimed by " + c.Owner
		}
		return fmt.Errorf("%w: %s/%d, claim epoch %d (stated's newest: %d, %s), found after the commit of %d records was refused by its session; start the processor again to resume from stated's offsets: %w",
			ErrClaimReleased, pb.tp.topic, pb.tp.partition, pb.claim.Epoch, newest, what, b.records, err)
	}
	return nil
}

// process runs the handler over b and commits, dropping fenced partitions
// and processing the rest again until the commit succeeds.
func (p *Processor) process(ctx context.Context, b *batch) (stated.CommitResult, error) {
	for len(b.parts) > 0 {
		txn := p.cfg.State.Txn()
		if err := p.handle(ctx, txn, b); err != nil {
			return stated.CommitResult{}, fmt.Errorf("%w: %w", errHandler, err)
		}
		for _, pb := range b.parts {
			txn.CommitClaimedOffset(p.cfg.Group, pb.claim, pb.records[len(pb.records)-1].Offset+1)
		}
		p.waits.enter(WaitStatedCommit, fmt.Sprintf("commit of %d records from %d partitions, unanswered (the client retries while stated is unavailable)", b.records, len(b.parts)))
		res, err := txn.Commit(ctx)
		p.waits.leave(WaitStatedCommit)
		var fe *stated.FencedError
		if errors.As(err, &fe) && restoredUnder(fe) {
			return stated.CommitResult{}, fmt.Errorf("%w: %s/%d, claim epoch %d (stated's newest: %d); start the processor again to resume from stated's offsets: %w",
				ErrClaimReleased, fe.Topic, fe.Partition, fe.Epoch, fe.CurrentEpoch, err)
		}
		if errors.As(err, &fe) {
			tp := topicPartition{fe.Topic, fe.Partition}
			p.fenced(fe, b.first(tp))
			b.drop(tp)
			continue
		}
		if errors.Is(err, stated.ErrSessionExpired) {
			// A restore drops the sessions, so the commit in flight
			// through it (or the first of a Client that stayed up) is
			// refused by its session before its claims are checked.
			if rerr := p.claimsTakenBack(ctx, b, err); rerr != nil {
				return stated.CommitResult{}, rerr
			}
		}
		if errors.Is(err, stated.ErrOutboxFull) {
			return stated.CommitResult{}, fmt.Errorf("%w: commit of %d records: %w", errOutboxFull, b.records, err)
		}
		if errors.Is(err, stated.ErrDiskFull) {
			// Nothing applied; Run processes the batch again after a
			// backoff, until the operator makes room.
			return stated.CommitResult{}, fmt.Errorf("kafka: commit of %d records: %w", b.records, err)
		}
		if errors.Is(err, stated.ErrResourceExhausted) && b.records > 1 {
			// Larger than the maximum message size: refused before the
			// daemon applied anything. Each half commits on its own, and
			// halves again if it is still too large. Should the second
			// half fail, the caller's rewind of b also covers the first,
			// whose records batch() then skips as committed.
			first, second := b.halves()
			if !p.splitLogged { // once: every large batch may need it
				p.splitLogged = true
				p.logger.Warn("kafka: a batch's commit is larger than the maximum message size; committing it in halves (this is logged once; lower MaxPollRecords, or raise the message size of the client and the daemon)",
					"group", p.cfg.Group, "records", b.records, "error", err)
			}
			res, err := p.process(ctx, first)
			if err != nil {
				return res, err
			}
			p.dropFenced(second) // fenced while the first half committed
			res2, err := p.process(ctx, second)
			res2.Emissions = append(res.Emissions, res2.Emissions...)
			return res2, err
		}
		if err != nil {
			return stated.CommitResult{}, fmt.Errorf("kafka: commit of %d records: %w", b.records, err)
		}
		if res.Duplicate {
			// An earlier attempt applied and its answer was lost, or was
			// too large to receive (the client then sent the commit
			// again alone): the emissions of the windows it closed are
			// in the outboxes.
			p.windows.stale = p.windows.active()
		}
		p.committed(b)
		p.waits.committed(b.records)
		return res, nil
	}
	return stated.CommitResult{}, nil
}

func (p *Processor) handle(ctx context.Context, txn *stated.Txn, b *batch) error {
	if p.cfg.BatchHandler != nil {
		recs := make([]*kgo.Record, 0, b.records)
		for _, pb := range b.parts {
			recs = append(recs, pb.records...)
		}
		return p.cfg.BatchHandler(ctx, txn, recs)
	}
	for _, pb := range b.parts {
		// A partBatch's records share their topic and partition, and so
		// their source; it is set again for each record, since a handler
		// may have set another.
		src := SourceOf(pb.records[0])
		for _, r := range pb.records {
			txn.SetDefaultSource(src)
			if err := p.cfg.Handler(ctx, txn, r); err != nil {
				return fmt.Errorf("topic %q partition %d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
			}
		}
	}
	return nil
}

// halves splits b into two batches of half its records each (the first
// gets the odd one), keeping each partition's records in order.
func (b *batch) halves() (first, second *batch) {
	first, second = &batch{}, &batch{}
	want := (b.records + 1) / 2
	for _, pb := range b.parts {
		n := min(len(pb.records), want-first.records)
		if n > 0 {
			first.parts = append(first.parts, &partBatch{tp: pb.tp, claim: pb.claim, records: pb.records[:n:n]})
			first.records += n
		}
		if n < len(pb.records) {
			second.parts = append(second.parts, &partBatch{tp: pb.tp, claim: pb.claim, records: pb.records[n:]})
			second.records += len(pb.records) - n
		}
	}
	return first, second
}

// dropFenced removes from b the partitions this processor no longer owns
// under b's claims.
func (p *Processor) dropFenced(b *batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pb := range slices.Clone(b.parts) {
		if o, ok := p.owned[pb.tp]; !ok || o.claim.Epoch != pb.claim.Epoch {
			b.drop(pb.tp)
		}
	}
}

// first returns the offset of partition tp's first record in b, -1 when
// b has none.
func (b *batch) first(tp topicPartition) int64 {
	for _, pb := range b.parts {
		if pb.tp == tp {
			return pb.records[0].Offset
		}
	}
	return -1
}

// drop removes partition tp's records from b.
func (b *batch) drop(tp topicPartition) {
	out := b.parts[:0]
	for _, pb := range b.parts {
		if pb.tp == tp {
			b.records -= len(pb.records)
			continue
		}
		out = append(out, pb)
	}
	b.parts = out
}

// committed moves each partition's next offset past the committed batch.
func (p *Processor) committed(b *batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pb := range b.parts {
		if o, ok := p.owned[pb.tp]; ok && o.claim.Epoch == pb.claim.Epoch {
			o.next = pb.records[len(pb.records)-1].Offset + 1
		}
	}
}

// rewind seeks the partitions of an abandoned batch back to their first
// uncommitted record, so that the next polls return the batch again.
func (p *Processor) rewind(b *batch) {
	seek := map[string]map[int32]kgo.EpochOffset{}
	for _, pb := range b.parts {
		if seek[pb.tp.topic] == nil {
			seek[pb.tp.topic] = map[int32]kgo.EpochOffset{}
		}
		seek[pb.tp.topic][pb.tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: pb.records[0].Offset}
	}
	p.cl.SetOffsets(seek)
}

// fenced drops a partition another processor claimed since, and stops
// fetching it until Kafka assigns it to this processor again or
// reclaimFenced claims it again; resume is the offset of the first record
// of the batch the fencing dropped.
func (p *Processor) fenced(fe *stated.FencedError, resume int64) {
	tp := topicPartition{fe.Topic, fe.Partition}
	p.mu.Lock()
	delete(p.owned, tp)
	p.fencedParts[tp] = fencedPart{at: time.Now(), resume: resume}
	p.updateFencedWait()
	p.mu.Unlock()
	p.cl.PauseFetchPartitions(map[string][]int32{fe.Topic: {fe.Partition}})
	p.logger.Warn("kafka: partition claimed by another processor; stopped consuming it",
		"group", p.cfg.Group, "topic", fe.Topic, "partition", fe.Partition, "epoch", fe.Epoch, "current_epoch", fe.CurrentEpoch, "owner", fe.Owner)
	if p.cfg.OnFenced != nil {
		p.cfg.OnFenced(fe)
	}
}

// reclaimDue returns how long until the first fenced partition is due to
// be claimed again; false when none is fenced or reclaims are off.
func (p *Processor) reclaimDue() (time.Duration, bool) {
	if p.cfg.ReclaimFencedAfter < 0 {
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, f := range p.fencedParts {
		if f.resume >= 0 && (first.IsZero() || f.at.Before(first)) {
			first = f.at
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return time.Until(first.Add(p.cfg.ReclaimFencedAfter)), true
}

// reclaimFenced claims again the partitions fenced at least
// ReclaimFencedAfter ago that Kafka has neither revoked from this
// processor nor assigned to it again since (see Config.ReclaimFencedAfter),
// and resumes each from the offset stored in stated, or, when there is
// none, from the first record of the batch its fencing dropped. It runs
// between a poll and AllowRebalance, so no revoke runs meanwhile. A claim
// that fails is tried again after another ReclaimFencedAfter.
func (p *Processor) reclaimFenced(ctx context.Context) {
	if p.cfg.ReclaimFencedAfter < 0 {
		return
	}
	now := time.Now()
	var parts []stated.TopicPartition
	p.mu.Lock()
	for tp, f := range p.fencedParts {
		if now.Sub(f.at) >= p.cfg.ReclaimFencedAfter && f.resume >= 0 {
			parts = append(parts, stated.TopicPartition{Topic: tp.topic, Partition: tp.partition})
		}
	}
	p.mu.Unlock()
	if len(parts) == 0 {
		return
	}
	slices.SortFunc(parts, func(a, b stated.TopicPartition) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	p.waits.enter(WaitStatedClaim, fmt.Sprintf("claim of %d fenced partitions Kafka still assigns here, unanswered (the client retries while stated is unavailable)", len(parts)))
	claims, err := p.cfg.State.Claim(ctx, p.cfg.Group, parts)
	p.waits.leave(WaitStatedClaim)
	if err != nil {
		p.mu.Lock()
		for _, tp := range parts {
			if f, ok := p.fencedParts[topicPartition{tp.Topic, tp.Partition}]; ok {
				f.at = now
				p.fencedParts[topicPartition{tp.Topic, tp.Partition}] = f
			}
		}
		p.mu.Unlock()
		if ctx.Err() == nil {
			p.logger.Warn("kafka: claiming fenced partitions again failed; trying again later", "group", p.cfg.Group, "partitions", len(parts), "retry_after", p.cfg.ReclaimFencedAfter, "error", err)
		}
		return
	}
	seek := map[string]map[int32]kgo.EpochOffset{}
	resume := map[string][]int32{}
	p.mu.Lock()
	for _, c := range claims {
		tp := topicPartition{c.Topic, c.Partition}
		o := &owned{claim: c, next: -1}
		at := p.fencedParts[tp].resume
		if c.HasOffset {
			o.next, at = c.Offset, c.Offset
		}
		delete(p.fencedParts, tp)
		p.owned[tp] = o
		if seek[c.Topic] == nil {
			seek[c.Topic] = map[int32]kgo.EpochOffset{}
		}
		seek[c.Topic][c.Partition] = kgo.EpochOffset{Epoch: -1, Offset: at}
		resume[c.Topic] = append(resume[c.Topic], c.Partition)
		p.logger.Warn("kafka: fenced partition still assigned here by Kafka after the reclaim delay; claimed it again",
			"group", p.cfg.Group, "topic", c.Topic, "partition", c.Partition, "epoch", c.Epoch, "offset", at, "fenced_for", p.cfg.ReclaimFencedAfter)
	}
	p.updateFencedWait()
	p.mu.Unlock()
	p.cl.SetOffsets(seek)
	p.cl.ResumeFetchPartitions(resume)
}

// onAssigned claims newly assigned partitions in stated and starts each at
// the offset stored there. franz-go calls it after fetching the group's
// committed offsets and before consuming; an error ends the group session
// and franz-go joins again.
func (p *Processor) onAssigned(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var parts []stated.TopicPartition
	for topic, ps := range offsets {
		for partition := range ps {
			parts = append(parts, stated.TopicPartition{Topic: topic, Partition: partition})
		}
	}
	if len(parts) == 0 {
		return offsets, nil
	}
	p.waits.enter(WaitStatedClaim, fmt.Sprintf("claim of %d assigned partitions, unanswered (the client retries while stated is unavailable)", len(parts)))
	claims, err := p.cfg.State.Claim(ctx, p.cfg.Group, parts)
	p.waits.leave(WaitStatedClaim)
	if err != nil {
		p.logger.Warn("kafka: claiming assigned partitions failed; rejoining", "group", p.cfg.Group, "partitions", len(parts), "error", err)
		return nil, fmt.Errorf("kafka: claim %d partitions in stated: %w", len(parts), err)
	}
	if claims, err = p.recordEndStarts(ctx, claims); err != nil {
		p.logger.Warn("kafka: recording where newly claimed partitions start failed; rejoining", "group", p.cfg.Group, "error", err)
		return nil, err
	}
	<-p.clReady
	if checked, err := p.checkLogBounds(ctx, claims); err != nil {
		if ctx.Err() == nil {
			// Run stops before it processes a record of the
			// partitions this assignment starts.
			p.logger.Error(err.Error(), "group", p.cfg.Group)
			p.fail(err)
		}
	} else {
		claims = checked
	}
	out := make(map[string]map[int32]kgo.Offset, len(offsets))
	resume := map[string][]int32{}
	p.mu.Lock()
	for _, c := range claims {
		o := &owned{claim: c, next: -1}
		start := *p.cfg.StartOffset
		if c.HasOffset {
			o.next = c.Offset
			start = kgo.NewOffset().At(c.Offset).WithEpoch(-1)
		}
		p.owned[topicPartition{c.Topic, c.Partition}] = o
		delete(p.fencedParts, topicPartition{c.Topic, c.Partition})
		if out[c.Topic] == nil {
			out[c.Topic] = map[int32]kgo.Offset{}
		}
		out[c.Topic][c.Partition] = start
		resume[c.Topic] = append(resume[c.Topic], c.Partition)
	}
	p.updateFencedWait()
	p.mu.Unlock()
	p.registerSources(ctx, claims)
	// A partition fenced earlier was paused; it is ours again.
	<-p.clReady
	p.cl.ResumeFetchPartitions(resume)
	p.logger.Info("kafka: claimed assigned partitions", "group", p.cfg.Group, "partitions", len(claims))
	return out, nil
}

// recordEndStarts records in stated where a claimed partition without an
// offset starts when StartOffset is the end of the partition: the end
// moves, so a partition that moved to another processor before its first
// commit would start there at a later end, past the records produced in
// between (Kafka's own consumer commits its position on revoke for the
// same reason). Starting from the earliest offset, or from a fixed
// offset or time, starts at the same records wherever it runs.
func (p *Processor) recordEndStarts(ctx context.Context, claims []stated.PartitionClaim) ([]stated.PartitionClaim, error) {
	if *p.cfg.StartOffset != kgo.NewOffset().AtEnd() {
		return claims, nil
	}
	topics := map[string]bool{}
	for _, c := range claims {
		if !c.HasOffset {
			topics[c.Topic] = true
		}
	}
	if len(topics) == 0 {
		return claims, nil
	}
	<-p.clReady
	// With committed records only (the default), the end is the last
	// stable offset: where the processor's own consumer would start, so
	// that a transaction open at the first claim counts once it commits.
	// The high watermark is past that transaction's records.
	list := kadm.NewClient(p.cl).ListEndOffsets
	if iso, _ := p.cl.OptValue(kgo.FetchIsolationLevel).(int8); iso == 1 {
		list = kadm.NewClient(p.cl).ListCommittedOffsets
	}
	ends, err := list(ctx, slices.Collect(maps.Keys(topics))...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: list the end offsets of newly claimed partitions: %w", err)
	}
	txn := p.cfg.State.Txn()
	out := slices.Clone(claims)
	for i, c := range out {
		if c.HasOffset {
			continue
		}
		end, ok := ends.Lookup(c.Topic, c.Partition)
		if !ok {
			return nil, fmt.Errorf("kafka: no end offset listed for %s/%d", c.Topic, c.Partition)
		}
		txn.CommitClaimedOffset(p.cfg.Group, c, end.Offset)
		out[i].Offset, out[i].HasOffset = end.Offset, true
	}
	p.waits.enter(WaitStatedCommit, "commit of where newly claimed partitions start (StartOffset at the end), unanswered (the client retries while stated is unavailable)")
	_, err = txn.Commit(ctx)
	p.waits.leave(WaitStatedCommit)
	if err != nil {
		return nil, fmt.Errorf("kafka: record where newly claimed partitions start: %w", err)
	}
	return out, nil
}

// onRevoked releases the claims of revoked partitions. With
// BlockRebalanceOnPoll it runs between batches, so nothing is in flight.
func (p *Processor) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	p.drop(ctx, revoked)
}

// onLost forgets partitions lost with the group session; their claims are
// released too, which changes nothing where another processor has claimed
// them since.
func (p *Processor) onLost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	p.drop(ctx, lost)
}

func (p *Processor) drop(ctx context.Context, parts map[string][]int32) {
	var claims []stated.PartitionClaim
	p.mu.Lock()
	for topic, ps := range parts {
		for _, partition := range ps {
			tp := topicPartition{topic, partition}
			delete(p.fencedParts, tp)
			if o, ok := p.owned[tp]; ok {
				claims = append(claims, o.claim)
				delete(p.owned, tp)
			}
		}
	}
	p.updateFencedWait()
	p.mu.Unlock()
	if len(claims) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := p.cfg.State.Release(ctx, p.cfg.Group, claims); err != nil {
		// The claims stay until another processor claims the partitions,
		// which it does on assignment whatever their state.
		p.logger.Warn("kafka: releasing revoked partitions failed", "group", p.cfg.Group, "partitions", len(claims), "error", err)
	}
}

// maybeCommitToKafka commits the newest completed checkpoint's offsets of
// the owned partitions to the Kafka group, every KafkaCommitInterval. It
// runs between batches, while no rebalance can run, so it only ever
// commits partitions this member owns.
func (p *Processor) maybeCommitToKafka(ctx context.Context) {
	if p.cfg.KafkaCommitInterval < 0 || time.Since(p.lastKafkaCommit) < p.cfg.KafkaCommitInterval {
		return
	}
	p.lastKafkaCommit = time.Now()
	p.waits.enter(WaitStatedRead, "reading the newest checkpoint's offsets, unanswered")
	g, err := p.cfg.State.GetGroup(ctx, p.cfg.Group, stated.WithConsistency(stated.ConsistencyLocal))
	p.waits.leave(WaitStatedRead)
	if err != nil {
		p.logger.Warn("kafka: reading checkpointed offsets", "group", p.cfg.Group, "error", err)
		return
	}
	commit := map[string]map[int32]kgo.EpochOffset{}
	var tps []topicPartition
	p.mu.Lock()
	for _, o := range g.Checkpointed {
		tp := topicPartition{o.Topic, o.Partition}
		if _, ok := p.owned[tp]; !ok || o.Offset <= p.kafkaCommitted[tp] {
			continue
		}
		if commit[o.Topic] == nil {
			commit[o.Topic] = map[int32]kgo.EpochOffset{}
		}
		commit[o.Topic][o.Partition] = kgo.EpochOffset{Epoch: -1, Offset: o.Offset}
		tps = append(tps, tp)
	}
	p.mu.Unlock()
	if len(tps) == 0 {
		return
	}
	var commitErr error
	p.waits.enter(WaitKafkaOffsetCommit, fmt.Sprintf("committing checkpointed offsets of %d partitions to the group, unanswered", len(tps)))
	defer p.waits.leave(WaitKafkaOffsetCommit)
	p.cl.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, pr := range t.Partitions {
				if err := kerr.ErrorForCode(pr.ErrorCode); err != nil && commitErr == nil {
					commitErr = fmt.Errorf("topic %q partition %d: %w", t.Topic, pr.Partition, err)
				}
			}
		}
	})
	if commitErr != nil {
		p.logger.Warn("kafka: committing checkpointed offsets to the group", "group", p.cfg.Group, "error", commitErr)
		return
	}
	p.mu.Lock()
	for _, tp := range tps {
		p.kafkaCommitted[tp] = commit[tp.topic][tp.partition].Offset
	}
	p.mu.Unlock()
}

// close leaves the group (revoking and releasing every partition) and
// closes the Kafka client.
func (p *Processor) close() {
	p.cl.CloseAllowingRebalance()
}
