//go:build linux

package test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

type rpRead struct {
	start, end time.Time
	val        int64
	err        error
}

// TestPartitionIsolatedLeaderMinorityClientAndCheckpoints cuts the
// leader off. While it is cut off: linearizable reads on it (raw gRPC and
// the SDK) must never return a register value older than one the
// majority acknowledged before the read started; an SDK client whose
// daemon is the old leader must get an error within its deadline and
// never an acknowledgement; a raw commit with no deadline must not hang
// forever; a checkpoint triggered on either side must not complete on the
// minority. After the heal the old leader must catch up, and its client
// must commit again.
func TestPartitionIsolatedLeaderMinorityClientAndCheckpoints(t *testing.T) {
	rpIsolatedLeader(t, func(c *rpCluster, old int) {
		if err := c.lab.cut(old); err != nil {
			t.Fatal(err)
		}
	}, func(c *rpCluster, old int) {
		if err := c.lab.plug(old); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPartitionLeaderWhoseSendsAreLost is the test above with an
// asymmetric fault: both followers drop every packet from the leader, and
// the leader still receives theirs.
func TestPartitionLeaderWhoseSendsAreLost(t *testing.T) {
	rpIsolatedLeader(t, func(c *rpCluster, old int) {
		c.dropFrom((old+1)%3, old)
		c.dropFrom((old+2)%3, old)
	}, func(c *rpCluster, old int) {
		c.heal((old + 1) % 3)
		c.heal((old + 2) % 3)
	})
}

// TestPartitionLeaderThatHearsNothing: the leader drops every packet
// from both followers; they still receive its packets.
func TestPartitionLeaderThatHearsNothing(t *testing.T) {
	rpIsolatedLeader(t, func(c *rpCluster, old int) {
		c.dropFrom(old, (old+1)%3)
		c.dropFrom(old, (old+2)%3)
	}, func(c *rpCluster, old int) {
		c.heal(old)
	})
}

func rpIsolatedLeader(t *testing.T, fault, heal func(c *rpCluster, old int)) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newRPCluster(ctx, t)
	old := leaderOf(ctx, t, c.nodes)
	a, b := (old+1)%3, (old+2)%3
	t.Logf("leader %s", c.nodes[old].id)
	cOld := c.sdk(ctx, old)
	cA := c.sdk(ctx, a)
	if _, err := cOld.Txn().Put("rp", []byte("reg"), []byte("1")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cA.Txn().CounterAdd("rp", []byte("minority"), 0).Commit(ctx); err != nil {
		t.Fatal(err)
	}

	// Acknowledged register writes through the majority: value -> ack time.
	var mu sync.Mutex
	acks := map[int64]time.Time{1: time.Now()}
	var reads []rpRead
	var sdkReads []rpRead

	fault(c, old)
	cutAt := time.Now()
	t.Logf("cut the leader %s", c.nodes[old].id)

	rctx, stopReads := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Raw linearizable reads on the old leader, 1 s each.
	wg.Add(1)
	go func() {
		defer wg.Done()
		client, closeConn := c.nodes[old].client()
		defer closeConn()
		for i := 0; i < 2000 && rctx.Err() == nil; i++ {
			s := time.Now()
			cctx, cancel := context.WithTimeout(rctx, time.Second)
			resp, err := client.Get(cctx, &statedv1.GetRequest{Namespace: "rp", Key: []byte("reg"), Kind: statedv1.Kind_KIND_VALUE,
				Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE}})
			cancel()
			r := rpRead{start: s, end: time.Now(), err: err}
			if err == nil {
				r.val, _ = strconv.ParseInt(string(resp.Value), 10, 64)
			}
			mu.Lock()
			reads = append(reads, r)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// SDK linearizable reads through the old leader's client, 2 s each.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 500 && rctx.Err() == nil; i++ {
			s := time.Now()
			cctx, cancel := context.WithTimeout(rctx, 2*time.Second)
			item, _, err := cOld.Get(cctx, "rp", []byte("reg"), stated.WithConsistency(stated.ConsistencyLinearizable))
			cancel()
			r := rpRead{start: s, end: time.Now(), err: err}
			if err == nil {
				r.val, _ = strconv.ParseInt(string(item.Value), 10, 64)
			}
			mu.Lock()
			sdkReads = append(sdkReads, r)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// The majority writes 2, 3, ... through a's client.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := int64(2); v < 400 && rctx.Err() == nil; v++ {
			cctx, cancel := context.WithTimeout(rctx, 30*time.Second)
			_, err := cA.Txn().Put("rp", []byte("reg"), []byte(strconv.FormatInt(v, 10))).Commit(cctx)
			cancel()
			if err != nil {
				if rctx.Err() == nil {
					t.Errorf("majority write %d: %v", v, err)
				}
				return
			}
			mu.Lock()
			acks[v] = time.Now()
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// The minority's client: commits with a 4 s deadline.
	var minorityErrs []string
	for i := 0; i < 3; i++ {
		s := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		res, err := cOld.Txn().CounterAdd("rp", []byte("minority"), 1).Commit(cctx)
		cancel()
		took := time.Since(s)
		if err == nil {
			t.Errorf("the cut-off leader's client was acknowledged (index %d) %v after the cut", res.Index, time.Since(cutAt))
			continue
		}
		minorityErrs = append(minorityErrs, fmt.Sprintf("%v after %v: %v (Unavailable %v, deadline %v)", time.Since(cutAt).Round(time.Millisecond), took.Round(time.Millisecond), err,
			errors.Is(err, stated.ErrUnavailable), errors.Is(err, context.DeadlineExceeded)))
		if took > 6*time.Second {
			t.Errorf("a commit with a 4 s deadline returned after %v", took)
		}
	}
	for _, e := range minorityErrs {
		t.Logf("minority commit: %s", e)
	}

	// A raw commit without any deadline on the minority: it must end.
	rawDone := make(chan error, 1)
	go func() {
		client, closeConn := c.nodes[old].client()
		defer closeConn()
		_, err := client.Commit(ctx, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{
			Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "rp", Key: []byte("raw"), Delta: 1}}})
		rawDone <- err
	}()

	// Checkpoints triggered on both sides during the partition.
	trig := func(i int) (string, error) {
		conn := c.nodes[i].dial()
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := statedv1.NewCheckpointsClient(conn).Trigger(cctx, &statedv1.TriggerCheckpointRequest{Wait: true})
		return fmt.Sprintf("%v", resp), err
	}
	if resp, err := trig(old); err == nil {
		t.Errorf("a checkpoint triggered on the cut-off old leader completed: %s", resp)
	} else {
		t.Logf("checkpoint on the minority: %v", err)
	}
	majorityEpoch := uint64(0)
	for try := 0; try < 5; try++ {
		resp, err := trig(b)
		t.Logf("checkpoint on the majority (try %d): %v %v", try, resp, err)
		if err == nil {
			majorityEpoch = 1
			break
		}
		time.Sleep(time.Second)
	}
	if majorityEpoch == 0 {
		t.Errorf("no checkpoint completed on the majority side during the partition")
	}

	select {
	case err := <-rawDone:
		t.Logf("raw commit without deadline on the minority returned: %v (%v)", err, status.Code(err))
		if err == nil {
			t.Errorf("raw commit on the minority was acknowledged")
		}
	case <-time.After(20 * time.Second):
		t.Errorf("a raw commit with no deadline through the cut-off old leader had not returned %v after the cut", time.Since(cutAt))
	}
	time.Sleep(3 * time.Second)
	stopReads()
	wg.Wait()

	// Check the reads against the acknowledged writes.
	check := func(name string, rs []rpRead) {
		okReads, errs := 0, map[string]int{}
		for _, r := range rs {
			if r.err != nil {
				errs[status.Code(r.err).String()]++
				continue
			}
			okReads++
			for v, at := range acks {
				if at.Before(r.start) && v > r.val {
					t.Errorf("%s: stale linearizable read on the cut-off leader: started %v after the cut, returned %d, but %d was acknowledged %v before it started",
						name, r.start.Sub(cutAt), r.val, v, r.start.Sub(at))
					break
				}
			}
		}
		t.Logf("%s: %d reads answered, errors by code %v", name, okReads, errs)
	}
	check("raw", reads)
	check("sdk", sdkReads)
	maxV := int64(0)
	for v := range acks {
		maxV = max(maxV, v)
	}
	t.Logf("majority acknowledged register values up to %d", maxV)

	// Heal. The old leader's client commits again; the old leader catches up.
	heal(c, old)
	healed := time.Now()
	var res stated.CommitResult
	var err error
	for try := 0; try < 12; try++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err = cOld.Txn().CounterAdd("rp", []byte("minority"), 1).Commit(cctx)
		cancel()
		if err == nil {
			break
		}
		t.Logf("after heal, try %d: %v", try, err)
	}
	if err != nil {
		t.Fatalf("the old leader's client could not commit within 60 s of the heal: %v", err)
	}
	t.Logf("old leader's client committed %v after the heal (index %d)", time.Since(healed), res.Index)
	cctx, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	item, _, err := cOld.Get(cctx, "rp", []byte("reg"), stated.WithConsistency(stated.ConsistencyLinearizable))
	if err != nil {
		t.Fatalf("linearizable read on the old leader after heal: %v", err)
	}
	if got, _ := strconv.ParseInt(string(item.Value), 10, 64); got < maxV {
		t.Errorf("after the heal the old leader reads %d, the majority acknowledged %d", got, maxV)
	}
	c.waitAllCaughtUp(ctx, res.Index, 30*time.Second)
	// The minority counter: 3 timed-out commits (unknown) + the raw one
	// (unknown) + 1 acknowledged.
	for _, n := range c.nodes {
		client, closeConn := n.client()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := client.Get(cctx, &statedv1.GetRequest{Namespace: "rp", Key: []byte("minority"), Kind: statedv1.Kind_KIND_COUNTER,
			Read: &statedv1.ReadOptions{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: res.Index}})
		cancel()
		closeConn()
		if err != nil {
			t.Errorf("%s: %v", n.id, err)
			continue
		}
		t.Logf("%s: minority counter %d (1 acknowledged, 3 timed out)", n.id, resp.Counter)
		if resp.Counter < 1 || resp.Counter > 4 {
			t.Errorf("%s: minority counter %d, want 1..4", n.id, resp.Counter)
		}
	}
}
