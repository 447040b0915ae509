package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// WindowClosedFunc handles emissions of one window namespace: closed
// windows' results, and updates and timers if the namespace has them, in
// ascending emission id. It puts what it does with them into txn, which
// also acknowledges them and commits once fn returns nil: the effects and
// the acknowledgement apply together or not at all. It may run again for
// the same emissions (after an error, or after a crash before its commit),
// with a fresh txn; only the run whose txn commits counts. Effects outside
// stated are at least once.
type WindowClosedFunc func(ctx context.Context, txn *stated.Txn, ems []stated.Emission) error

// SourceOf is the watermark source of a record's partition, "topic/3".
// The processor sets it as the Txn's default source before it calls the
// Handler with each record, so a handler's window adds need not name it:
// each partition has its own watermark, and one that lags holds the
// namespace's watermark (and so its windows) back until it catches up or
// goes idle, as Kafka Streams and Flink do per partition. A BatchHandler
// sees many records at once and passes it itself:
//
//	txn.AddWindow("clicks", r.Key, r.Timestamp, stated.NoValue(), stated.FromSource(kafka.SourceOf(r)))
//
// Adds without a source share the default source "": the watermark then
// follows the greatest event time of all partitions together, and a
// partition that lags behind the others by more than the namespace's
// MaxOutOfOrder has its records counted late.
func SourceOf(r *kgo.Record) string {
	return r.Topic + "/" + strconv.FormatInt(int64(r.Partition), 10)
}

const (
	// defaultOutboxInterval is how often an idle processor looks for
	// emissions no commit of its own returned.
	defaultOutboxInterval = time.Second
	// maxDelivery caps the emissions of one callback, and so the acks of
	// one commit.
	maxDelivery = 1000
)

// OnWindowClosed makes the Processor hand the emissions of window
// namespace ns to fn, exactly once: each emission is acknowledged in the
// transaction that commits fn's effects, and until it is, it is delivered
// again. Call it right after New, before Run, at most once per
// namespace; it panics otherwise (a programming error, like registering
// a route twice). Each partition Kafka assigns is made a watermark
// source of ns (a watermark hint at time 0) before its records are
// fetched, so that a partition whose records come later than the others'
// still holds the watermark back; those New's group join assigned before
// OnWindowClosed was called are made sources when Run starts.
//
// The Processor delivers:
//   - the emissions each of its commits returns (the windows that commit
//     closed), right after the commit;
//   - when Run starts, after an error, and every Config.OutboxInterval
//     while it runs, every emission pending in ns's outbox (read from
//     the first): those a crash left unacknowledged, those the daemon's
//     tick closed when a source went idle, and those another processor
//     did not acknowledge.
//
// Emissions of one namespace arrive in ascending id, in calls of at most
// 1000. When fn returns an error nothing is acknowledged, and the
// Processor tries again after a backoff, before it processes more
// records. When several processors share the namespace, each emission is
// acknowledged by one of them: another's fn may have run for it, but its
// transaction is refused as a whole (the ack finds the emission no longer
// pending) and the processor moves on.
//
// A commit refused because a namespace's outbox is full
// (stated.ErrOutboxFull) is retried after the pending emissions have been
// delivered: that is the namespace's backpressure.
func (p *Processor) OnWindowClosed(ns string, fn WindowClosedFunc) {
	switch {
	case ns == "":
		panic("kafka: OnWindowClosed: empty namespace")
	case fn == nil:
		panic(fmt.Sprintf("kafka: OnWindowClosed(%q): nil callback", ns))
	}
	w := &p.windows
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.running:
		panic(fmt.Sprintf("kafka: OnWindowClosed(%q) after Run", ns))
	case w.fns[ns] != nil:
		panic(fmt.Sprintf("kafka: OnWindowClosed(%q) registered twice", ns))
	}
	if w.fns == nil {
		w.fns = map[string]WindowClosedFunc{}
	}
	w.fns[ns] = fn
	w.names = append(w.names, ns)
	slices.Sort(w.names)
}

// windowDelivery is the Processor's side of the outbox of each namespace
// with an OnWindowClosed callback. Run uses it from its own goroutine only,
// once it has started; mu guards registration.
type windowDelivery struct {
	mu      sync.Mutex
	running bool
	fns     map[string]WindowClosedFunc
	names   []string // sorted

	// delivered is, per namespace, the highest id of an emission whose
	// callback's transaction this processor committed.
	delivered map[string]uint64
	// stale says the outboxes must be read before the next batch: at
	// start, and after an error that may have left emissions pending.
	stale    bool
	lastRead time.Time
}

// start freezes the registrations; Run calls it.
func (w *windowDelivery) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running = true
	w.delivered = map[string]uint64{}
	w.stale = len(w.names) > 0
}

func (w *windowDelivery) active() bool { return len(w.names) > 0 }

// errCallback wraps an OnWindowClosed callback's error, and other
// failures to deliver that the next attempt may not have: Run backs off
// and delivers again.
var errCallback = errors.New("kafka: window emissions not delivered")

// errOutboxFull is a batch refused by stated's backpressure: Run delivers
// the pending emissions and processes the batch again.
var errOutboxFull = errors.New("kafka: window outbox full")

// outboxDue reports whether the outboxes should be read now.
func (p *Processor) outboxDue() bool {
	w := &p.windows
	if !w.active() {
		return false
	}
	return w.stale || p.cfg.OutboxInterval > 0 && time.Since(w.lastRead) >= p.cfg.OutboxInterval
}

// deliverPending reads the outbox of every namespace with a callback,
// from the first pending emission, and delivers what it holds. An error
// wrapping errCallback is worth another attempt; any other ends Run.
func (p *Processor) deliverPending(ctx context.Context) error {
	w := &p.windows
	w.stale = true // until every namespace is read through
	for _, ns := range w.names {
		var after uint64
		for {
			p.waits.enter(WaitStatedRead, fmt.Sprintf("reading the pending emissions of window namespace %q, unanswered", ns))
			ems, err := p.cfg.State.Emissions(ctx, ns, after, maxDelivery)
			p.waits.leave(WaitStatedRead)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("%w: reading the outbox of %q: %w", errCallback, ns, err)
			}
			if len(ems) == 0 {
				break
			}
			if err := p.deliver(ctx, ns, ems); err != nil {
				return err
			}
			after = ems[len(ems)-1].ID
		}
	}
	w.stale = false
	w.lastRead = time.Now()
	return nil
}

// deliverCommitted delivers the emissions a commit of this processor
// returned, for the namespaces with a callback. When one does not follow
// the last emission this processor delivered (the daemon's tick closed
// windows in between, or a delivery failed), or they have a gap (a batch
// committed in halves, with another entry between them), the namespace's
// outbox is read from the first pending emission instead, so that fn sees
// them in id order.
func (p *Processor) deliverCommitted(ctx context.Context, ems []stated.Emission) error {
	w := &p.windows
	if !w.active() || len(ems) == 0 {
		return nil
	}
	byNS := map[string][]stated.Emission{}
	for _, em := range ems {
		if w.fns[em.Namespace] != nil {
			byNS[em.Namespace] = append(byNS[em.Namespace], em)
		}
	}
	for _, ns := range w.names {
		got := byNS[ns]
		if len(got) == 0 {
			continue
		}
		slices.SortFunc(got, func(a, b stated.Emission) int { return cmp.Compare(a.ID, b.ID) })
		// The emissions of a batch committed in halves may have a gap:
		// another entry emitted between the halves.
		if w.stale || got[0].ID != w.delivered[ns]+1 || !consecutive(got) {
			// deliverPending reads every namespace: it catches up here too.
			return p.deliverPending(ctx)
		}
		for len(got) > 0 {
			n := min(len(got), maxDelivery)
			if err := p.deliver(ctx, ns, got[:n]); err != nil {
				return err
			}
			got = got[n:]
		}
	}
	return nil
}

// consecutive reports whether ems, sorted by id, have no gap.
func consecutive(ems []stated.Emission) bool {
	for i := 1; i < len(ems); i++ {
		if ems[i].ID != ems[i-1].ID+1 {
			return false
		}
	}
	return true
}

// deliver runs ns's callback over ems in a new Txn, acknowledges them in
// it and commits.
func (p *Processor) deliver(ctx context.Context, ns string, ems []stated.Emission) error {
	w := &p.windows
	txn := p.cfg.State.Txn()
	if err := w.fns[ns](ctx, txn, ems); err != nil {
		w.stale = true
		return fmt.Errorf("%w: the callback of %q failed on emissions %d..%d: %w", errCallback, ns, ems[0].ID, ems[len(ems)-1].ID, err)
	}
	txn.Ack(ems...)
	p.waits.enter(WaitStatedCommit, fmt.Sprintf("commit of the callback of %q acknowledging %d emissions, unanswered (the client retries while stated is unavailable)", ns, len(ems)))
	_, err := txn.Commit(ctx)
	p.waits.leave(WaitStatedCommit)
	if err == nil {
		w.delivered[ns] = max(w.delivered[ns], ems[len(ems)-1].ID)
		p.waits.delivered(len(ems))
		return nil
	}
	w.stale = true
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, stated.ErrInvalidArgument) {
		// Another processor may have acknowledged some of them since they
		// were read, which refuses the whole commit: then the next
		// reading of the outbox leaves them out. If every one is still
		// pending, the callback's own changes were refused.
		if gone, rerr := p.someAcknowledged(ctx, ns, ems); rerr == nil && gone {
			p.logger.Info("kafka: window emissions acknowledged by another processor; delivering the rest",
				"group", p.cfg.Group, "namespace", ns, "first_id", ems[0].ID, "last_id", ems[len(ems)-1].ID)
			return fmt.Errorf("%w: emissions of %q acknowledged elsewhere: %w", errCallback, ns, err)
		}
	}
	return fmt.Errorf("kafka: commit of the callback of %q with %d emissions: %w", ns, len(ems), err)
}

// someAcknowledged reports whether some of ems are no longer pending.
func (p *Processor) someAcknowledged(ctx context.Context, ns string, ems []stated.Emission) (bool, error) {
	pending, err := p.cfg.State.Emissions(ctx, ns, ems[0].ID-1, len(ems))
	if err != nil {
		return false, err
	}
	ids := map[uint64]bool{}
	for _, em := range pending {
		ids[em.ID] = true
	}
	for _, em := range ems {
		if !ids[em.ID] {
			return true, nil
		}
	}
	return false, nil
}

// registerSources makes each claimed partition a watermark source of
// every namespace with a callback, before any of its records is fetched:
// a watermark hint at time 0, which moves no watermark but holds the
// namespace's back. Without it, at the first start, a partition whose
// records came later than another's would not be a source yet, the
// namespace's watermark would follow the other partitions alone, and its
// first records could be counted late. A partition that then stays
// silent stops holding the watermark after the namespace's idle timeout.
// A failure is logged: the partition becomes a source with its first
// record.
func (p *Processor) registerSources(ctx context.Context, claims []stated.PartitionClaim) {
	names := p.windows.namespaces()
	if len(names) == 0 || len(claims) == 0 {
		return
	}
	txn := p.cfg.State.Txn()
	for _, ns := range names {
		for _, c := range claims {
			txn.AdvanceWatermark(ns, c.Topic+"/"+strconv.FormatInt(int64(c.Partition), 10), time.UnixMilli(0))
		}
	}
	p.waits.enter(WaitStatedClaim, fmt.Sprintf("registering %d assigned partitions as watermark sources of %d window namespaces, unanswered", len(claims), len(names)))
	_, err := txn.Commit(ctx)
	p.waits.leave(WaitStatedClaim)
	if err != nil {
		p.logger.Warn("kafka: registering assigned partitions as watermark sources failed; each becomes one with its first record",
			"group", p.cfg.Group, "partitions", len(claims), "namespaces", names, "error", err)
	}
}

// registerOwnedSources registers, when Run starts, the partitions claimed
// before it as watermark sources of the namespaces with a callback. New
// joins the group, so the first assignment may be claimed before
// OnWindowClosed registered a namespace (onAssigned then registered
// nothing for it). A hint at time 0 moves no watermark, so registering a
// partition twice changes nothing.
func (p *Processor) registerOwnedSources(ctx context.Context) {
	if !p.windows.active() {
		return
	}
	p.mu.Lock()
	claims := make([]stated.PartitionClaim, 0, len(p.owned))
	for _, o := range p.owned {
		claims = append(claims, o.claim)
	}
	p.mu.Unlock()
	p.registerSources(ctx, claims)
}

// namespaces returns the namespaces with a callback; safe from any
// goroutine.
func (w *windowDelivery) namespaces() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.names)
}
