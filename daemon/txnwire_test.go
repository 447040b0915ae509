package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/daemontest"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

// A Txn of more mutations than a coalesced call carries is sent in wire
// form (sdk/go/txnwire.go): its mutations written straight into the
// bytes of its Commit call. These tests commit such Txns to a real daemon
// and read back what they applied.

// oneNodeClient starts a daemon and dials it.
func oneNodeClient(t *testing.T) (context.Context, *stated.Client) {
	ctx := testContext(t)
	d := daemontest.Start(t)
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}

// TestALargeTxnAppliesEveryMutationAsBuilt: every kind of mutation,
// counter adds made before and after the Txn went to wire form and merged
// across it, and an offset, in one Txn of 60 builder calls.
func TestALargeTxnAppliesEveryMutationAsBuilt(t *testing.T) {
	ctx, c := oneNodeClient(t)
	key := func(i int) []byte { return fmt.Appendf(nil, "k-%03d", i) }
	txn := c.Txn()
	txn.CounterAdd("n", []byte("c"), 1) // a message, before the wire form
	txn.Put("v", []byte("gone"), []byte("x"))
	for i := range 40 {
		txn.Put("v", key(i), bytes.Repeat([]byte{byte(i)}, i))
	}
	txn.CounterAdd("n", []byte("c"), 2) // merged into the first add
	txn.CounterAdd("n", []byte("d"), 7) // an add among the wire bytes
	txn.MapPut("m", []byte("map"), []byte("s1"), []byte("one"))
	txn.MapPut("m", []byte("map"), []byte("s2"), []byte("two"))
	txn.MapDelete("m", []byte("map"), []byte("s1"))
	txn.ListAppend("l", []byte("list"), []byte("e1"))
	txn.ListAppend("l", []byte("list"), []byte("e2"))
	txn.Delete("v", key(3))
	txn.DeletePrefix("v", []byte("gone"))
	txn.Delete("n", []byte("d")) // ends d's run: the next add starts anew
	txn.CounterAdd("n", []byte("d"), 5)
	txn.CommitOffset("g", "topic", 0, 42)
	if _, err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	for name, want := range map[string]int64{"c": 3, "d": 5} {
		if got, err := c.GetCounter(ctx, "n", []byte(name)); err != nil || got != want {
			t.Fatalf("counter %s = %d, %v; want %d", name, got, err, want)
		}
	}
	for i := range 40 {
		item, found, err := c.Get(ctx, "v", key(i))
		switch {
		case err != nil:
			t.Fatal(err)
		case i == 3 && found:
			t.Fatalf("%s: found %q after its delete", key(i), item.Value)
		case i != 3 && (!found || !bytes.Equal(item.Value, bytes.Repeat([]byte{byte(i)}, i))):
			t.Fatalf("%s: %q, found %v", key(i), item.Value, found)
		}
	}
	if _, found, err := c.Get(ctx, "v", []byte("gone")); err != nil || found {
		t.Fatalf("gone: found %v, %v; its prefix was deleted", found, err)
	}
	if _, found, _ := c.MapGet(ctx, "m", []byte("map"), []byte("s1")); found {
		t.Fatal("map entry s1 found after its delete")
	}
	if item, found, err := c.MapGet(ctx, "m", []byte("map"), []byte("s2")); err != nil || !found || string(item.Value) != "two" {
		t.Fatalf("map entry s2: %q, %v, %v", item.Value, found, err)
	}
	var list []string
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "l", Kind: stated.KindList, Key: []byte("list")}) {
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, string(e.Value))
	}
	if strings.Join(list, ",") != "e1,e2" {
		t.Fatalf("list %v, want [e1 e2]", list)
	}
	offs, err := c.GetOffsets(ctx, "g")
	if err != nil || len(offs) != 1 || offs[0].Offset != 42 {
		t.Fatalf("offsets %+v, %v; want topic's partition 0 at 42", offs, err)
	}
}

// TestALargeTxnsRefusalNamesItsOwnMutation: the daemon names the field it
// refuses by its index in what it received; a Txn in wire form whose adds
// merged maps it back to its own builder call.
func TestALargeTxnsRefusalNamesItsOwnMutation(t *testing.T) {
	ctx, c := oneNodeClient(t)
	txn := c.Txn()
	txn.CounterAdd("n", []byte("c"), 1).CounterAdd("n", []byte("c"), 1) // one add sent
	for i := range 30 {
		ns := "v"
		if i == 25 {
			ns = "" // builder call 27, mutations[26] as sent
		}
		txn.Put(ns, fmt.Appendf(nil, "k%d", i), []byte("x"))
	}
	_, err := txn.Commit(ctx)
	if err == nil || !strings.Contains(err.Error(), "mutations[27].namespace") {
		t.Fatalf("commit: %v; want a refusal naming mutations[27].namespace", err)
	}
	if n, err := c.GetCounter(ctx, "n", []byte("c")); err != nil || n != 0 {
		t.Fatalf("counter = %d, %v; the refused Txn applied nothing", n, err)
	}
}

// TestLargeTxnsInWireFormFromManyGoroutinesApplyTheirOwnBytes: each
// committed Txn gives its bytes back to a pool the next one takes from;
// goroutines committing at once must each apply exactly their own.
func TestLargeTxnsInWireFormFromManyGoroutinesApplyTheirOwnBytes(t *testing.T) {
	ctx, c := oneNodeClient(t)
	const goroutines, txns, puts = 4, 10, 300
	value := func(g, n, i int) []byte {
		return fmt.Appendf(nil, "value-%d-%d-%d-%s", g, n, i, strings.Repeat("v", (g*7+n*3+i)%50))
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for n := range txns {
				txn := c.Txn()
				for i := range puts {
					txn.Put("p", fmt.Appendf(nil, "%d/%02d/%03d", g, n, i), value(g, n, i))
				}
				if _, err := txn.Commit(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := 0
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "p", Kind: stated.KindValue}) {
		if err != nil {
			t.Fatal(err)
		}
		var g, n, i int
		if _, err := fmt.Sscanf(string(e.Key), "%d/%d/%d", &g, &n, &i); err != nil {
			t.Fatalf("key %q: %v", e.Key, err)
		}
		if want := value(g, n, i); !bytes.Equal(e.Value, want) {
			t.Fatalf("%s = %q, want %q", e.Key, e.Value, want)
		}
		seen++
	}
	if seen != goroutines*txns*puts {
		t.Fatalf("%d keys, want %d", seen, goroutines*txns*puts)
	}
}

// TestLargeCommitsThroughAFollowerApplyTheirOwnBytes: a large commit
// request is decoded on the follower that receives it, forwarded, decoded
// again and converted on the leader (its mutations into pooled memory),
// and decoded on every replica as it applies (into memory reused from
// entry to entry). Goroutines committing at once through a follower, with
// refused commits among theirs, must each apply exactly their own
// mutations.
func TestLargeCommitsThroughAFollowerApplyTheirOwnBytes(t *testing.T) {
	nodes := daemontest.StartCluster(t, 3)
	ctx := testContext(t)
	follower := stateClient(t, nodes[2])
	const goroutines, commits, puts = 4, 12, 200
	value := func(g, n, i int) []byte {
		return fmt.Appendf(nil, "value-%d-%d-%d-%s", g, n, i, strings.Repeat("v", (g*7+n*3+i)%50))
	}
	refused := func(g, n int) bool { return (g+n)%5 == 0 }
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for n := range commits {
				req := &statedv1.CommitRequest{}
				for i := range puts {
					req.Mutations = append(req.Mutations, &statedv1.Mutation{Kind: statedv1.MutationKind_MUTATION_KIND_PUT,
						Namespace: "p", Key: fmt.Appendf(nil, "%d/%02d/%03d", g, n, i), Value: value(g, n, i)})
				}
				if refused(g, n) {
					req.Mutations[puts/2].Namespace = "" // validation refuses it, naming the field
				}
				_, err := follower.Commit(ctx, req)
				if refused(g, n) != (status.Code(err) == codes.InvalidArgument) || !refused(g, n) && err != nil {
					errs <- fmt.Errorf("commit %d/%d (refused %v): %v", g, n, refused(g, n), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c, err := stated.Dial(ctx, nodes[0].SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen, want := 0, 0
	for g := range goroutines {
		for n := range commits {
			if !refused(g, n) {
				want += puts
			}
		}
	}
	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "p", Kind: stated.KindValue}, stated.WithConsistency(stated.ConsistencyLinearizable)) {
		if err != nil {
			t.Fatal(err)
		}
		var g, n, i int
		if _, err := fmt.Sscanf(string(e.Key), "%d/%d/%d", &g, &n, &i); err != nil {
			t.Fatalf("key %q: %v", e.Key, err)
		}
		if refused(g, n) || !bytes.Equal(e.Value, value(g, n, i)) {
			t.Fatalf("%s = %q, want %q (refused %v)", e.Key, e.Value, value(g, n, i), refused(g, n))
		}
		seen++
	}
	if seen != want {
		t.Fatalf("%d keys, want %d", seen, want)
	}
}
