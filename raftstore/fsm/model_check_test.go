package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/statedhq/stated/raftstore/command"
)

// TestStateMachineMatchesModel applies random command logs to the FSM and
// to the reference model (model_test.go) and compares, after every entry,
// the Result and everything a reader can see. The logs mix client sessions
// (several processes per client id, so that sessions fence each other;
// retries with the same and another payload, stale sequences, gaps, idle
// expiry and sweeps), format version 2 commits with their retry records,
// every mutation kind with TTLs and expiry, claims and fenced offsets,
// checkpoint barriers, cluster metadata and entries that do not decode.
// Mid-run the FSM is closed, reopened and fed the applied entries again;
// at the end the log is applied to a second FSM, which must hold the same
// bytes, and a snapshot of the first is restored into a third.
//
// Each run uses three fixed seeds and one new one, all logged, with 1,500
// entries each (under -race or -short, one fixed and one new seed with 400
// entries). Replay a seed with STATED_FSM_MODEL_SEED=<seed>, and set
// STATED_FSM_MODEL_STEPS=<n> for a longer or shorter log.
func TestStateMachineMatchesModel(t *testing.T) {
	// A snapshot stream is read in chunks of a few records, so that most
	// of it is read while entries apply (see takeSnapshot).
	defer func(n int) { streamChunk = n }(streamChunk)
	streamChunk = 200
	// A restored snapshot is written into many tables.
	defer func(n uint64) { snapshotTableSize = n }(snapshotTableSize)
	snapshotTableSize = 4 << 10
	fixed := []uint64{1, 2, 3}
	seeds := append(fixed, uint64(time.Now().UnixNano()))
	steps := 1500
	if testing.Short() || modelRace {
		seeds, steps = []uint64{1, seeds[3]}, 400
	}
	if s := os.Getenv("STATED_FSM_MODEL_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("STATED_FSM_MODEL_SEED=%q: %v", s, err)
		}
		seeds = []uint64{seed}
	}
	if s := os.Getenv("STATED_FSM_MODEL_STEPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("STATED_FSM_MODEL_STEPS=%q: want a positive number", s)
		}
		steps = n
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d, %d steps; replay with STATED_FSM_MODEL_SEED=%d", seed, steps, seed)
			runModel(t, seed, steps, slices.Contains(fixed, seed) && steps >= 1000)
		})
	}
}

type modelRun struct {
	t    *testing.T
	seed uint64
	dir  string
	f    *FSM
	m    *model
	g    *gen
	log  [][]byte
	got  []*Result
	kind map[string]int // what the run exercised, for the log

	// barrier is a barrier whose local checkpoint is checked only after
	// the next entry applied, so that the two run concurrently.
	barrier *pendingBarrier
	// snap is the stream of a snapshot opened some entries ago and read
	// only in part (head), as a leader sends one while it applies, with
	// its size and the state it must hold.
	snap     io.ReadCloser
	snapHead []byte
	snapSize int64
	snapDump [][2][]byte
}

type pendingBarrier struct {
	cp   *CheckpointResult
	m    *model // the model as of the barrier
	step int
	data []byte
}

// runModel runs one log of steps entries; with wantAll, it checks that
// the log produced every kind of outcome (only for fixed seeds, so that a
// new seed cannot fail for drawing a dull log).
func runModel(t *testing.T, seed uint64, steps int, wantAll bool) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m := newModel()
	run := &modelRun{t: t, seed: seed, dir: dir, f: f, m: m, g: newGen(seed, m, steps), kind: map[string]int{}}
	restartAt := steps/2 + run.g.r.IntN(steps/4+1)
	snapAt := steps/4 + run.g.r.IntN(steps/8+1)
	for step := 1; step <= steps; step++ {
		run.step(step)
		switch step {
		case snapAt:
			run.takeSnapshot()
		case snapAt + 20:
			run.persistSnapshot()
		case restartAt:
			run.restart()
		}
	}
	run.settleBarrier(nil)
	run.persistSnapshot()
	run.replayElsewhere()
	t.Logf("outcomes: %v", run.kind)
	for _, k := range []string{"applied", "batched", "duplicate", "fenced", "session superseded", "session not open",
		"session sequence reused", "session sequence stale", "reject offsets", "reject mutations", "reject command",
		"late open refused", "ended sessions swept"} {
		if run.kind[k] == 0 && wantAll {
			t.Errorf("the log never produced %q: the generator exercises too little", k)
		}
	}
}

func (r *modelRun) fail(step int, data []byte, format string, args ...any) {
	r.t.Helper()
	var hist strings.Builder
	for i := max(0, len(r.log)-6); i < len(r.log); i++ {
		fmt.Fprintf(&hist, "\n  %d: %s", i+1, describe(r.log[i]))
	}
	r.t.Fatalf("seed %d step %d (index %d): %s\ncommand: %s\nlast entries:%s\nreplay with STATED_FSM_MODEL_SEED=%d",
		r.seed, step, len(r.log), fmt.Sprintf(format, args...), describe(data), hist.String(), r.seed)
}

func (r *modelRun) step(step int) {
	if !r.g.barriers[step] && r.g.r.IntN(8) == 0 {
		r.batchStep(step)
		return
	}
	r.apply(step, r.g.next(step))
}

// batchStep generates 2 to 6 commands. When all are commits of the
// current format, they go as one TypeCommitBatch entry, which must give
// each commit the result the model gives it as an entry of its own at the
// batch's index and time, in order; otherwise they go as entries of their
// own.
func (r *modelRun) batchStep(step int) {
	type generated struct {
		data     []byte
		cmd      *command.Command
		pending  *genLane
		pendingC *command.Commit
	}
	var gens []generated
	batchable := true
	for range 2 + r.g.r.IntN(5) {
		data := r.g.next(step)
		cmd, err := command.Decode(data)
		gens = append(gens, generated{data, cmd, r.g.pending, r.g.pendingC})
		batchable = batchable && err == nil && cmd.Type == command.TypeCommit && cmd.Version >= 4
	}
	if !batchable {
		for _, g := range gens {
			r.g.pending, r.g.pendingC = g.pending, g.pendingC
			r.apply(step, g.data)
		}
		return
	}
	batch := &command.Command{Type: command.TypeCommitBatch, Now: r.g.now}
	for _, g := range gens {
		batch.Batch = append(batch.Batch, g.cmd.Commit)
	}
	data := command.Encode(nil, batch)
	r.log = append(r.log, data)
	index := uint64(len(r.log))
	wants := make([]mResult, len(gens))
	for i, g := range gens {
		wants[i] = r.m.apply(index, &command.Command{Type: command.TypeCommit, Now: batch.Now, Version: g.cmd.Version, Commit: g.cmd.Commit})
		r.g.pending, r.g.pendingC = g.pending, g.pendingC
		r.g.observe(wants[i])
	}
	got := r.applyUnchanged(step, index, data)
	r.got = append(r.got, got)
	if got.Err != nil || len(got.Batch) != len(gens) {
		r.fail(step, data, "batch of %d commits: err %v, %d results", len(gens), got.Err, len(got.Batch))
	}
	r.kind["batched"]++
	for i, sub := range got.Batch {
		r.kind[outcome(sub)]++
		if d := diffResult(sub, wants[i]); d != "" {
			r.fail(step, data, "commit %d of the batch: %s", i, d)
		}
	}
	r.settleBarrier(batch)
	if d := r.diffState(batch.Now); d != "" {
		r.fail(step, data, "state after the batch at now=%d: %s", batch.Now, d)
	}
}

// applyUnchanged applies data at index and checks that the state machine
// left the entry's bytes as it found them: the leader's Raft log answers
// replication from the entries it holds in memory (raftstore.recentLog),
// the very ones the state machine is handed, so a write into them would
// reach the followers.
func (r *modelRun) applyUnchanged(step int, index uint64, data []byte) *Result {
	before := bytes.Clone(data)
	got := r.f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
	if !bytes.Equal(data, before) {
		r.fail(step, before, "the state machine wrote into the entry's bytes")
	}
	return got
}

// apply applies one generated entry and checks its result and the state.
func (r *modelRun) apply(step int, data []byte) {
	cmd, _ := command.Decode(data)
	if cmd != nil && cmd.Type == command.TypeCheckpoint {
		// A barrier's local checkpoint first removes the older ones (their
		// uploads are done or abandoned), in the background: settle the
		// pending barrier while its checkpoint is still there.
		r.settleBarrier(nil)
	}
	r.log = append(r.log, data)
	index := uint64(len(r.log))
	endedBefore := len(r.m.ended)
	want := r.m.apply(index, cmd)
	r.g.observe(want)
	var re *RejectError
	switch {
	case cmd == nil:
	case cmd.Type == command.TypeOpenSession && cmd.Session != nil && cmd.Session.ID != 0 &&
		errors.As(want.err, &re) && re.Field == "session.id":
		r.kind["late open refused"]++
	case cmd.Type == command.TypeExpireSessions && len(r.m.ended) < endedBefore:
		r.kind["ended sessions swept"]++
	}
	got := r.applyUnchanged(step, index, data)
	r.got = append(r.got, got)
	r.kind[outcome(got)]++
	if d := diffResult(got, want); d != "" {
		r.fail(step, data, "result: %s", d)
	}
	r.settleBarrier(cmd)
	if got.Checkpoint != nil {
		r.barrier = &pendingBarrier{cp: got.Checkpoint, m: r.m.clone(), step: step, data: data}
	}
	if cmd != nil && cmd.Type == command.TypeCheckpointDone && got.Err == nil && cmd.Epoch != 0 {
		r.f.removals.wait() // the removal runs off the apply loop
		for e := uint64(1); e <= cmd.Epoch; e++ {
			if _, err := os.Stat(r.f.CheckpointDir(e)); !errors.Is(err, os.ErrNotExist) {
				r.fail(step, data, "local checkpoint %d is still there after checkpoint %d completed (%v)", e, cmd.Epoch, err)
			}
		}
	}
	// Reads at the step's time, and sometimes a little later, when more
	// entries have expired than the state machine deleted.
	now := r.g.now
	if step%3 == 0 {
		now += r.g.r.Int64N(int64(2 * time.Second))
	}
	if d := r.diffState(now); d != "" {
		r.fail(step, data, "state at now=%d: %s", now, d)
	}
}

// settleBarrier waits for the local checkpoint of the pending barrier and
// checks that it holds the state as of the barrier or of the entry after
// it (next, which applied while the checkpoint was being made; nil at the
// end of the run, and before a barrier is applied, whose checkpoint
// removes the older ones).
func (r *modelRun) settleBarrier(next *command.Command) {
	b := r.barrier
	if b == nil {
		return
	}
	r.barrier = nil
	if err := b.cp.Wait(); err != nil {
		r.fail(b.step, b.data, "local checkpoint: %v", err)
	}
	if next != nil && next.Type == command.TypeCheckpointDone && next.Epoch >= b.cp.Epoch {
		return // the next entry completed the epoch and removed its local copy
	}
	info, err := ReadCheckpoint(b.cp.Dir)
	if err != nil {
		r.fail(b.step, b.data, "read checkpoint: %v", err)
	}
	m := b.m
	switch info.AppliedIndex {
	case b.cp.Index:
	case uint64(len(r.log)):
		m = r.m
	default:
		r.fail(b.step, b.data, "checkpoint of the barrier at index %d holds applied index %d", b.cp.Index, info.AppliedIndex)
	}
	var offs []command.Offset
	for _, grp := range genGroups {
		offs = append(offs, m.offsetsOf(m.offsets, grp)...)
	}
	if info.Epoch != m.lastEpoch || !slices.Equal(info.Offsets, offs) || info.Keys != m.counts().StateKeys {
		r.fail(b.step, b.data, "checkpoint at index %d holds epoch %d offsets %v keys %d; want epoch %d offsets %v keys %d",
			info.AppliedIndex, info.Epoch, info.Offsets, info.Keys, m.lastEpoch, offs, m.counts().StateKeys)
	}
}

// takeSnapshot takes a snapshot as Raft does: Snapshot, then Persist,
// which writes a reference to the state. It then opens the stream the
// reference leads to, as a leader does to send it, and reads its start;
// persistSnapshot reads the rest some entries later and checks that it
// holds the state as of when it was opened.
func (r *modelRun) takeSnapshot() {
	t := r.t
	applied := r.f.AppliedIndex()
	ref, _, err := DecodeSnapshotRef(persistRef(t, r.f))
	if err != nil || ref != applied {
		t.Fatalf("seed %d: the snapshot reference holds applied index %d (%v), want %d", r.seed, ref, err, applied)
	}
	size, rc, err := r.f.OpenSnapshotStream(ref)
	if err != nil {
		t.Fatalf("seed %d: open the snapshot stream: %v", r.seed, err)
	}
	head := make([]byte, 64)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("seed %d: read the start of the snapshot stream: %v", r.seed, err)
	}
	r.snap, r.snapHead, r.snapSize, r.snapDump = rc, head, size, dump(t, r.f)
}

func (r *modelRun) persistSnapshot() {
	if r.snap == nil {
		return
	}
	t := r.t
	rest, err := io.ReadAll(r.snap)
	r.snap.Close()
	r.snap = nil
	if err != nil {
		t.Fatalf("seed %d: read the snapshot stream: %v", r.seed, err)
	}
	stream := append(r.snapHead, rest...)
	if int64(len(stream)) != r.snapSize {
		t.Fatalf("seed %d: the snapshot stream is %d bytes, OpenSnapshotStream said %d", r.seed, len(stream), r.snapSize)
	}
	c := openFSM(t)
	if err := c.Restore(nopCloser{bytes.NewReader(stream)}); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, c); !slices.EqualFunc(got, r.snapDump, func(a, b [2][]byte) bool { return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) }) {
		t.Fatalf("seed %d: a snapshot stream read while entries applied does not hold the state it was opened at (%d keys, want %d)", r.seed, len(got), len(r.snapDump))
	}
}

// restart closes the FSM, opens it again and replays every applied entry,
// as Raft does after a restart: nothing may change.
func (r *modelRun) restart() {
	t := r.t
	r.persistSnapshot()
	before := dump(t, r.f)
	if err := r.f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Open(r.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.f = f
	t.Cleanup(func() { f.Close() })
	last := uint64(len(r.log))
	if f.AppliedIndex() != last {
		t.Fatalf("seed %d: applied index after reopen = %d, want %d", r.seed, f.AppliedIndex(), last)
	}
	for i, data := range r.log {
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
		if res.Index != uint64(i+1) || res.Err != nil || res.Duplicate || res.Claimed != nil || res.Session != nil || res.Checkpoint != nil {
			t.Fatalf("seed %d: replay of applied entry %d after reopen returned %+v, want only its index", r.seed, i+1, res)
		}
	}
	if f.AppliedIndex() != last {
		t.Fatalf("seed %d: replay moved the applied index to %d", r.seed, f.AppliedIndex())
	}
	after := dump(t, f)
	if !slices.EqualFunc(before, after, func(a, b [2][]byte) bool { return bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1]) }) {
		t.Fatalf("seed %d: reopening and replaying changed the state (%d keys before, %d after)", r.seed, len(before), len(after))
	}
	if d := r.diffState(r.g.now); d != "" {
		t.Fatalf("seed %d: after reopen: %s", r.seed, d)
	}
}

// replayElsewhere applies the whole log to a second FSM, which must return
// the same results and hold the same bytes, and restores a snapshot of the
// first into a third.
func (r *modelRun) replayElsewhere() {
	t := r.t
	b := openFSM(t)
	for i, data := range r.log {
		res := b.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
		if d := diffResults(res, r.got[i]); d != "" {
			t.Fatalf("seed %d: entry %d on a second replica: %s\ncommand: %s", r.seed, i+1, d, describe(data))
		}
		if res.Checkpoint != nil {
			if err := res.Checkpoint.Wait(); err != nil {
				t.Fatalf("seed %d: second replica's checkpoint: %v", r.seed, err)
			}
		}
	}
	sameContents(t, r.f, b)
	// The same log in batches of random sizes (ApplyBatch) gives the same
	// results, entry by entry, and the same bytes.
	applyInBatches(t, r.seed, r.log)
	c := openFSM(t)
	if err := c.Restore(nopCloser{bytes.NewReader(snapshotBytes(t, r.f))}); err != nil {
		t.Fatal(err)
	}
	sameContents(t, r.f, c)
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// outcome names a result for the tally of what a run exercised.
func outcome(res *Result) string {
	var se *SessionError
	var fe *FenceError
	var re *RejectError
	switch {
	case res.Duplicate:
		return "duplicate"
	case errors.As(res.Err, &se):
		return "session " + se.Reason.String()
	case errors.As(res.Err, &fe):
		return "fenced"
	case errors.As(res.Err, &re):
		return "reject " + strings.SplitN(strings.SplitN(re.Field, "[", 2)[0], ".", 2)[0]
	case res.Err != nil:
		return "error"
	}
	return "applied"
}

// diffResult compares a Result with what the model says, error fields
// included but not messages.
func diffResult(got *Result, want mResult) string {
	if got.Index != want.index || got.Duplicate != want.dup {
		return fmt.Sprintf("index %d duplicate %v (err %v), want index %d duplicate %v (err %v)",
			got.Index, got.Duplicate, got.Err, want.index, want.dup, want.err)
	}
	if d := diffErr(got.Err, want.err); d != "" {
		return d
	}
	if (got.Claimed == nil) != (want.claimed == nil) || !slices.Equal(got.Claimed, want.claimed) {
		return fmt.Sprintf("claimed %+v, want %+v", got.Claimed, want.claimed)
	}
	if (got.Session == nil) != (want.session == nil) || got.Session != nil && *got.Session != *want.session {
		return fmt.Sprintf("session %+v, want %+v", got.Session, want.session)
	}
	switch {
	case (got.Checkpoint == nil) != (want.ckptEpoch == 0):
		return fmt.Sprintf("checkpoint %+v, want epoch %d", got.Checkpoint, want.ckptEpoch)
	case got.Checkpoint != nil && (got.Checkpoint.Epoch != want.ckptEpoch || got.Checkpoint.Index != want.index):
		return fmt.Sprintf("checkpoint epoch %d index %d, want epoch %d index %d",
			got.Checkpoint.Epoch, got.Checkpoint.Index, want.ckptEpoch, want.index)
	}
	return ""
}

func diffErr(got, want error) string {
	if want == nil {
		if got != nil {
			return fmt.Sprintf("err %v, want none", got)
		}
		return ""
	}
	if !errors.Is(got, ErrRejected) {
		return fmt.Sprintf("err %v does not match ErrRejected; want %#v", got, want)
	}
	switch w := want.(type) {
	case *RejectError:
		var g *RejectError
		if !errors.As(got, &g) || g.Field != w.Field || errors.Is(got, ErrFenced) || errors.Is(got, ErrSessionRefused) {
			return fmt.Sprintf("err %v, want a rejection of field %q", got, w.Field)
		}
	case *SessionError:
		var g *SessionError
		if !errors.As(got, &g) || !errors.Is(got, ErrSessionRefused) {
			return fmt.Sprintf("err %v, want a session refusal %q", got, w.Reason)
		}
		gc := *g
		gc.Message = ""
		if gc != *w {
			return fmt.Sprintf("session refusal %+v, want %+v", gc, *w)
		}
	case *FenceError:
		var g *FenceError
		if !errors.As(got, &g) || !errors.Is(got, ErrFenced) {
			return fmt.Sprintf("err %v, want fenced (%s)", got, w.Reason)
		}
		gc := *g
		gc.Reason = w.Reason
		if gc != *w || !strings.Contains(g.Reason, w.Reason) {
			return fmt.Sprintf("fence %+v, want %+v", *g, *w)
		}
	default:
		panic(fmt.Sprintf("model error of type %T", want))
	}
	return ""
}

// diffResults compares two replicas' results for one entry.
func diffResults(a, b *Result) string {
	if len(a.Batch) != len(b.Batch) {
		return fmt.Sprintf("%d results of a batch vs %d", len(a.Batch), len(b.Batch))
	}
	for i := range a.Batch {
		if d := diffResults(a.Batch[i], b.Batch[i]); d != "" {
			return fmt.Sprintf("commit %d of the batch: %s", i, d)
		}
	}
	ea, eb := fmt.Sprint(a.Err), fmt.Sprint(b.Err)
	if a.Index != b.Index || a.Duplicate != b.Duplicate || ea != eb || !slices.Equal(a.Claimed, b.Claimed) ||
		(a.Session == nil) != (b.Session == nil) || a.Session != nil && *a.Session != *b.Session ||
		(a.Checkpoint == nil) != (b.Checkpoint == nil) || a.Checkpoint != nil && a.Checkpoint.Epoch != b.Checkpoint.Epoch {
		return fmt.Sprintf("%+v (err %s) vs %+v (err %s)", a, ea, b, eb)
	}
	return ""
}

// diffState compares everything a reader of the FSM can see at now with
// the model.
func (r *modelRun) diffState(now int64) string {
	f, m := r.f, r.m
	if got, want := f.AppliedIndex(), uint64(len(r.log)); got != want {
		return fmt.Sprintf("applied index %d, want %d", got, want)
	}
	for _, ns := range genNamespaces {
		if d := diffScan(f, ScanQuery{Namespace: ns}, now, m.live(ns, now)); d != "" {
			return d
		}
	}
	// One map, one list, a key prefix and ranges, picked at random.
	rnd := r.g.r
	ns, key := pick(rnd, genNamespaces), pick(rnd, genKeys)
	start, end, limit := pick(rnd, genKeys), pick(rnd, genKeys), rnd.IntN(4)
	kind := pick(rnd, []Kind{KindAny, KindValue, KindCounter})
	sub, subStart, subEnd := pick(rnd, genSubs), pick(rnd, genSubs), pick(rnd, genSubs)
	pos := listPosition(uint64(rnd.IntN(3)))
	inRange := func(k, start, end string) bool { return k >= start && (end == "" || k < end) }
	filter := func(keep func(e mEntry) bool) []mEntry {
		return slices.DeleteFunc(m.live(ns, now), func(e mEntry) bool { return !keep(e) })
	}
	for _, q := range []struct {
		q    ScanQuery
		want []mEntry
	}{
		{ScanQuery{Namespace: ns, Kind: KindMap, Key: []byte(key)}, filter(func(e mEntry) bool { return e.kind == KindMap && e.key == key })},
		{ScanQuery{Namespace: ns, Kind: KindList, Key: []byte(key)}, filter(func(e mEntry) bool { return e.kind == KindList && e.key == key })},
		{ScanQuery{Namespace: ns, Prefix: []byte(key)}, filter(func(e mEntry) bool { return strings.HasPrefix(e.key, key) })},
		{ScanQuery{Namespace: ns, Kind: KindCounter}, filter(func(e mEntry) bool { return e.kind == KindCounter })},
		{ScanQuery{Namespace: ns, Kind: kind, Start: []byte(start), End: []byte(end), Limit: limit}, firstN(filter(func(e mEntry) bool {
			return (kind == KindAny || e.kind == kind) && inRange(e.key, start, end)
		}), limit)},
		{ScanQuery{Namespace: ns, Kind: KindMap, Key: []byte(key), Prefix: []byte(sub), Start: []byte(subStart), End: []byte(subEnd)}, filter(func(e mEntry) bool {
			return e.kind == KindMap && e.key == key && strings.HasPrefix(e.sub, sub) && inRange(e.sub, subStart, subEnd)
		})},
		{ScanQuery{Namespace: ns, Kind: KindList, Key: []byte(key), Start: pos}, filter(func(e mEntry) bool {
			return e.kind == KindList && e.key == key && e.sub >= string(pos)
		})},
	} {
		if d := diffScan(f, q.q, now, q.want); d != "" {
			return d
		}
	}
	// Every entry the model stores, live or expired, through Get.
	for _, e := range m.entries {
		if e.kind == KindList {
			continue
		}
		got, ok, err := f.Get(e.ns, []byte(e.key), e.kind, []byte(e.sub), now)
		live := e.exp == 0 || e.exp > now
		switch {
		case err != nil:
			return fmt.Sprintf("get %q/%q %v %q: %v", e.ns, e.key, e.kind, e.sub, err)
		case ok != live:
			return fmt.Sprintf("get %q/%q %v %q: found %v, want %v (expires %d)", e.ns, e.key, e.kind, e.sub, ok, live, e.exp)
		case ok:
			if d := diffEntry(got, e); d != "" {
				return "get: " + d
			}
		}
	}
	if got, err := f.Counts(); err != nil || got != m.counts() {
		return fmt.Sprintf("counts %+v (%v), want %+v", got, err, m.counts())
	}
	for _, c := range append(genClients, genLegacy...) {
		got, ok, err := f.Session(c)
		s, want := m.sessions[c]
		if err != nil || ok != want || ok && got != (ClientSession{ID: s.id, OpenedIndex: s.opened, IdleTimeout: s.idle, LastActive: s.lastActive}) {
			return fmt.Sprintf("session of %q: %+v %v (%v), want %+v %v", c, got, ok, err, s, want)
		}
	}
	if got, err := f.IdleSessions(now, 100); err != nil || !slices.Equal(got, m.idleSessions(now, 100)) {
		return fmt.Sprintf("idle sessions %+v (%v), want %+v", got, err, m.idleSessions(now, 100))
	}
	if got, err := f.EndedSessionsDue(now); err != nil || got != m.endedDue(now) {
		return fmt.Sprintf("ended sessions due %v (%v), want %v", got, err, m.endedDue(now))
	}
	if got, err := f.ExpiryDue(now); err != nil || got != m.expiryDue(now) {
		return fmt.Sprintf("expiry due %v (%v), want %v", got, err, m.expiryDue(now))
	}
	for _, grp := range genGroups {
		if got, err := f.Offsets(grp); err != nil || !slices.Equal(got, m.offsetsOf(m.offsets, grp)) {
			return fmt.Sprintf("offsets of %q: %+v (%v), want %+v", grp, got, err, m.offsetsOf(m.offsets, grp))
		}
		if got, err := f.CheckpointedOffsets(grp); err != nil || !slices.Equal(got, m.offsetsOf(m.ckptOffsets, grp)) {
			return fmt.Sprintf("checkpointed offsets of %q: %+v (%v), want %+v", grp, got, err, m.offsetsOf(m.ckptOffsets, grp))
		}
		if got, err := f.Claims(grp); err != nil || !slices.Equal(got, m.claimsOf(grp)) {
			return fmt.Sprintf("claims of %q: %+v (%v), want %+v", grp, got, err, m.claimsOf(grp))
		}
	}
	want := CheckpointState{LastEpoch: m.lastEpoch, Completed: m.completed, CompletedAt: m.completedAt}
	if got, err := f.CheckpointState(); err != nil || got != want {
		return fmt.Sprintf("checkpoint state %+v (%v), want %+v", got, err, want)
	}
	if got, err := f.ClusterID(); err != nil || got != m.clusterID {
		return fmt.Sprintf("cluster id %q (%v), want %q", got, err, m.clusterID)
	}
	if got, err := f.Members(); err != nil || !slices.Equal(got, m.membersSorted()) {
		return fmt.Sprintf("members %+v (%v), want %+v", got, err, m.membersSorted())
	}
	return ""
}

func firstN(es []mEntry, n int) []mEntry {
	if n > 0 && len(es) > n {
		return es[:n]
	}
	return es
}

func diffScan(f *FSM, q ScanQuery, now int64, want []mEntry) string {
	var got []Entry
	err := f.Scan(q, now, func(e Entry) error {
		e.Key, e.SubKey, e.Value = slices.Clone(e.Key), slices.Clone(e.SubKey), slices.Clone(e.Value)
		got = append(got, e)
		return nil
	})
	if err != nil {
		return fmt.Sprintf("scan %+v: %v", q, err)
	}
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("scan %+v: %d entries, missing %s", q, len(got), fmtModelEntry(want[i]))
		case i >= len(want):
			return fmt.Sprintf("scan %+v: extra entry %s after %d", q, fmtEntry(got[i]), len(want))
		}
		if d := diffEntry(got[i], want[i]); d != "" {
			return fmt.Sprintf("scan %+v entry %d: %s", q, i, d)
		}
	}
	return ""
}

func diffEntry(got Entry, want mEntry) string {
	ok := got.Kind == want.kind && string(got.Key) == want.key && string(got.SubKey) == want.sub && got.ExpiresAt == want.exp
	if want.kind == KindCounter {
		ok = ok && got.Counter == want.counter
	} else {
		ok = ok && bytes.Equal(got.Value, want.value)
	}
	if !ok {
		return fmt.Sprintf("got %s, want %s", fmtEntry(got), fmtModelEntry(want))
	}
	return ""
}

func fmtEntry(e Entry) string {
	return fmt.Sprintf("{%v %q sub %q value %q counter %d expires %d}", e.Kind, e.Key, e.SubKey, e.Value, e.Counter, e.ExpiresAt)
}

func fmtModelEntry(e mEntry) string {
	sub := fmt.Sprintf("%q", e.sub)
	if e.kind == KindList {
		sub = fmt.Sprint("pos ", listPos(e.sub))
	}
	return fmt.Sprintf("{%v %q/%q sub %s value %q counter %d expires %d}", e.kind, e.ns, e.key, sub, e.value, e.counter, e.exp)
}

// describe renders an encoded command for a failure message.
func describe(data []byte) string {
	cmd, err := command.Decode(data)
	if err != nil {
		return fmt.Sprintf("%x (does not decode: %v)", data, err)
	}
	s := fmt.Sprintf("v%d %s now=%d", cmd.Version, typeName(cmd.Type), cmd.Now)
	if c := cmd.Commit; c != nil {
		s += fmt.Sprintf(" client=%q session=%d lane=%d seq=%d hash=%x", c.ClientID, c.SessionID, c.Lane, c.Seq, c.Hash[:4])
		for _, mu := range c.Mutations {
			s += fmt.Sprintf(" [%v %q/%q sub=%q value=%q delta=%d ttl=%d]", mu.Op, mu.Namespace, mu.Key, mu.SubKey, mu.Value, mu.Delta, mu.TTL)
		}
		for _, o := range c.Offsets {
			s += fmt.Sprintf(" [offset %s/%s/%d=%d epoch %d]", o.Group, o.Topic, o.Partition, o.Offset, o.Epoch)
		}
	}
	switch {
	case cmd.Claim != nil:
		s += fmt.Sprintf(" %+v", *cmd.Claim)
	case cmd.Session != nil:
		s += fmt.Sprintf(" %+v", *cmd.Session)
	case cmd.Member != nil:
		s += fmt.Sprintf(" %+v", *cmd.Member)
	case cmd.Type == command.TypeExpire:
		s += fmt.Sprintf(" limit=%d", cmd.ExpireLimit)
	case cmd.Type == command.TypeExpireSessions:
		s += fmt.Sprintf(" %+v", cmd.Expired)
	case cmd.Type == command.TypeCheckpointDone:
		s += fmt.Sprintf(" epoch=%d offsets=%+v", cmd.Epoch, cmd.Offsets)
	case cmd.Type == command.TypeSetClusterID:
		s += fmt.Sprintf(" %q", cmd.ClusterID)
	}
	return s
}

func typeName(t command.Type) string {
	names := map[command.Type]string{
		command.TypeCommit: "commit", command.TypeExpire: "expire", command.TypeSetClusterID: "set-cluster-id",
		command.TypeSetMember: "set-member", command.TypeRemoveMember: "remove-member", command.TypeClaim: "claim",
		command.TypeRelease: "release", command.TypeCheckpoint: "checkpoint", command.TypeCheckpointDone: "checkpoint-done",
		command.TypeOpenSession: "open-session", command.TypeExpireSessions: "expire-sessions", command.TypeCommitBatch: "commit-batch",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type-%d", t)
}
