package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	stated "github.com/statedhq/stated/sdk/go"
)

// produce writes n records whose keys cycle through the demo's keys, and
// records what it wrote.
func (d *demo) produce(ctx context.Context, n int) error {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		seq := d.produced + i
		recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "key-%03d", seq%d.o.keys), Value: fmt.Appendf(nil, "%d", seq)}
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, r := range d.producer.ProduceSync(pctx, recs...) {
		if r.Err != nil {
			return fmt.Errorf("produce to kafka: %w", r.Err)
		}
		d.expected[string(r.Record.Key)]++
		d.ends[r.Record.Partition] = max(d.ends[r.Record.Partition], r.Record.Offset+1)
	}
	d.produced += n
	return nil
}

// offsets reads the group's offsets in stated (linearizable): the next
// record to process, per partition of the topic.
func (d *demo) offsets(ctx context.Context) (map[int32]int64, error) {
	offs, err := d.monitor.GetOffsets(ctx, demoGroup, stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		return nil, err
	}
	m := map[int32]int64{}
	for _, o := range offs {
		if o.Topic == demoTopic {
			m[o.Partition] = o.Offset
		}
	}
	return m, nil
}

// committed returns the records processed and committed in stated.
func (d *demo) committed(ctx context.Context) (int64, error) {
	offs, err := d.offsets(ctx)
	var n int64
	for _, o := range offs {
		n += o
	}
	return n, err
}

// processorAlive fails when the processor has exited.
func (d *demo) processorAlive() error {
	if d.processor.exited() {
		return fatal(d.exitedError(d.processor))
	}
	return nil
}

// waitCommitted waits until at least target records are committed, and
// returns how many are. It polls often, so that a kill that follows lands
// while the processor is busy.
func (d *demo) waitCommitted(ctx context.Context, target int64) (int64, error) {
	var n int64
	err := d.waitEvery(ctx, fmt.Sprintf("the processor to commit %d records", target), time.Minute, 2*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := d.processorAlive(); err != nil {
			return false, err
		}
		var err error
		n, err = d.committed(ctx)
		return err == nil && n >= target, err
	})
	return n, err
}

// waitDrained waits until stated's offsets reach the end of every
// partition produced to.
func (d *demo) waitDrained(ctx context.Context) error {
	return d.waitFor(ctx, fmt.Sprintf("the processor to reach the end of every partition (%d records)", d.produced), time.Minute, func(ctx context.Context) (bool, error) {
		if err := d.processorAlive(); err != nil {
			return false, err
		}
		offs, err := d.offsets(ctx)
		if err != nil {
			return false, err
		}
		for p, end := range d.ends {
			if offs[p] > end {
				return false, fatal(fmt.Errorf("CHECK FAILED: partition %d: stated's offset %d is past the end of the partition, %d", p, offs[p], end))
			}
			if offs[p] < end {
				return false, nil
			}
		}
		return true, nil
	})
}

// checkCounts reads every counter on every node, each once it has
// applied everything committed so far (the highest commit index any node
// reports), and through a linearizable read, and compares them with the
// records produced.
func (d *demo) checkCounts(ctx context.Context, when string) error {
	var index uint64
	for _, n := range d.nodes {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := n.client.NodeStatus(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("status of %s: %w", n.id, err)
		}
		index = max(index, st.CommitIndex, st.AppliedIndex)
	}
	var ids []string
	for _, n := range d.nodes {
		err := d.waitFor(ctx, fmt.Sprintf("%s to apply index %d", n.id, index), 30*time.Second, func(ctx context.Context) (bool, error) {
			st, err := n.client.NodeStatus(ctx)
			return err == nil && st.AppliedIndex >= index, err
		})
		if err != nil {
			return err
		}
		if err := d.compareCounts(ctx, n.id, n.client, stated.ConsistencyLocal); err != nil {
			return err
		}
		ids = append(ids, n.id)
	}
	if err := d.compareCounts(ctx, "a linearizable read", d.monitor, stated.ConsistencyLinearizable); err != nil {
		return err
	}
	d.say("counts exact %s: %d records over %d keys on %s (each read locally at index %d or later) and linearizably",
		when, d.produced, len(d.expected), strings.Join(ids, " "), index)
	return nil
}

// compareCounts scans the counters through c and fails listing the keys
// whose count differs from the records produced.
func (d *demo) compareCounts(ctx context.Context, where string, c *stated.Client, cons stated.Consistency) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got := map[string]int64{}
	for e, err := range c.Scan(sctx, stated.ScanQuery{Namespace: demoNamespace, Kind: stated.KindCounter}, stated.WithConsistency(cons)) {
		if err != nil {
			return fmt.Errorf("read the counts on %s: %w", where, err)
		}
		got[string(e.Key)] = e.Counter
	}
	var diffs []string
	var total int64
	for k, want := range d.expected {
		total += got[k]
		if got[k] != want {
			diffs = append(diffs, fmt.Sprintf("%s counted %d, produced %d", k, got[k], want))
		}
	}
	for k, n := range got {
		if _, ok := d.expected[k]; !ok {
			total += n
			diffs = append(diffs, fmt.Sprintf("%s counted %d, never produced", k, n))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	shown := diffs[:min(len(diffs), 10)]
	return fmt.Errorf("CHECK FAILED: counts on %s: %d of %d keys differ, %d records counted of %d produced:\n  %s",
		where, len(diffs), len(d.expected), total, d.produced, strings.Join(shown, "\n  "))
}

// fatalError ends a wait at once.
type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }

func fatal(err error) error { return &fatalError{err} }

// waitFor polls cond until it holds, at most for bound. An error cond
// returns is kept for the message when the bound is reached, unless it is
// fatal, which ends the wait.
func (d *demo) waitFor(ctx context.Context, what string, bound time.Duration, cond func(context.Context) (bool, error)) error {
	return d.waitEvery(ctx, what, bound, 25*time.Millisecond, cond)
}

// waitEvery is waitFor polling at the given interval.
func (d *demo) waitEvery(ctx context.Context, what string, bound, every time.Duration, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(bound)
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ok, err := cond(cctx)
		cancel()
		if ok {
			return nil
		}
		var f *fatalError
		if errors.As(err, &f) {
			return f.err
		}
		if err != nil {
			last = err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("while waiting for %s: %w", what, context.Cause(ctx))
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("waited %s for %s; the last error: %v", bound, what, last)
			}
			return fmt.Errorf("waited %s for %s", bound, what)
		}
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
}
