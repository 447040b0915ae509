package stated

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestTxnBuildsOneCommitRequestWithEveryMutationAndOffsetInOrder(t *testing.T) {
	c := newFakeClient(&fakeState{})
	txn := c.Txn().
		Put("ns", []byte("k"), []byte("v"), WithTTL(2*time.Second)).
		Delete("ns", []byte("gone")).
		MapPut("ns", []byte("m"), []byte("s"), []byte("mv")).
		MapDelete("ns", []byte("m"), []byte("old")).
		ListAppend("ns", []byte("l"), []byte("e1")).
		CounterAdd("ns", []byte("c"), -5).
		DeletePrefix("ns", []byte("user/")).
		CommitOffset("g", "orders", 2, 101)
	if got := txn.Len(); got != 8 {
		t.Errorf("Len() = %d, want 8", got)
	}
	want := &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{
			{Kind: statedv1.MutationKind_MUTATION_KIND_PUT, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TtlMillis: 2000},
			{Kind: statedv1.MutationKind_MUTATION_KIND_DELETE, Namespace: "ns", Key: []byte("gone")},
			{Kind: statedv1.MutationKind_MUTATION_KIND_MAP_PUT, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s"), Value: []byte("mv")},
			{Kind: statedv1.MutationKind_MUTATION_KIND_MAP_DELETE, Namespace: "ns", Key: []byte("m"), SubKey: []byte("old")},
			{Kind: statedv1.MutationKind_MUTATION_KIND_LIST_APPEND, Namespace: "ns", Key: []byte("l"), Value: []byte("e1")},
			{Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: "ns", Key: []byte("c"), Delta: -5},
			{Kind: statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX, Namespace: "ns", Key: []byte("user/")},
		},
		Offsets:   []*statedv1.Offset{{Group: "g", Topic: "orders", Partition: 2, Offset: 101}},
		ClientId:  "test-client",
		SessionId: 77,
		Lane:      3,
		Sequence:  7,
	}
	if got := sentRequest(t, txn, &lane{session: 77, id: 3, next: 7}); !proto.Equal(got, want) {
		t.Errorf("request:\n got %v\nwant %v", got, want)
	}
}

func TestTxnCopiesCallerBuffers(t *testing.T) {
	c := newFakeClient(&fakeState{})
	buf := []byte("key1")
	val := []byte("val1")
	txn := c.Txn().Put("ns", buf, val)
	copy(buf, "XXXX")
	copy(val, "YYYY")
	m := sentRequest(t, txn, &lane{session: 1, next: 1}).Mutations[0]
	if string(m.Key) != "key1" || string(m.Value) != "val1" {
		t.Errorf("mutation changed with the caller's buffers: key %q value %q", m.Key, m.Value)
	}
}

func TestTypedHandlesBuildTheSameMutationsAsTheByteAPI(t *testing.T) {
	c := newFakeClient(&fakeState{})
	typed := c.Txn()
	NewValue(c, "v", String()).In(typed).Put("k", "x").Delete("d")
	NewMap(c, "m", Int64()).In(typed).Put("k", "s", 1).Delete("k", "s2").Clear("k2")
	NewList(c, "l", String()).In(typed).Append("k", "e").Clear("k2")
	NewCounter(c, "c").In(typed).Add("k", 3).Reset("k2")

	one, _ := Int64().Encode(1)
	raw := c.Txn().
		Put("v", []byte("k"), []byte("x")).Delete("v", []byte("d")).
		MapPut("m", []byte("k"), []byte("s"), one).MapDelete("m", []byte("k"), []byte("s2")).Delete("m", []byte("k2")).
		ListAppend("l", []byte("k"), []byte("e")).Delete("l", []byte("k2")).
		CounterAdd("c", []byte("k"), 3).Delete("c", []byte("k2"))
	if got, want := sentRequest(t, typed, &lane{next: 1}), sentRequest(t, raw, &lane{next: 1}); !proto.Equal(got, want) {
		t.Errorf("typed handles built\n %v\nwant\n %v", got, want)
	}
}

func TestWithTTLSendsWholeMillisecondsRoundedUp(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{999 * time.Microsecond, 1},
		{time.Millisecond, 1},
		{1500 * time.Microsecond, 2},
		{300 * time.Millisecond, 300},
		{time.Hour, 3_600_000},
		{-time.Nanosecond, -1}, // the daemon refuses negative TTLs
		{-2 * time.Millisecond, -2},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			if got := ttlMillis([]WriteOption{WithTTL(tt.ttl)}); got != tt.want {
				t.Errorf("ttl_millis = %d, want %d", got, tt.want)
			}
		})
	}
	if got := ttlMillis(nil); got != 0 {
		t.Errorf("no WithTTL: ttl_millis = %d, want 0", got)
	}
}

func TestCommitSendsItsSessionAndASequenceThatStartsAtOneAndIncreases(t *testing.T) {
	f := &fakeState{indexes: []uint64{10, 12, 11}}
	c := newFakeClient(f, WithClientID("svc-a"))
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.Txn().Put("ns", []byte("k"), []byte{byte(i)}).Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range f.commits {
		if r.ClientId != "svc-a" || r.SessionId != 77 || r.Lane != 0 || r.Sequence != uint64(i+1) {
			t.Errorf("commit %d: client_id %q session %d lane %d sequence %d, want %q 77 0 %d", i, r.ClientId, r.SessionId, r.Lane, r.Sequence, "svc-a", i+1)
		}
	}
	if len(f.opens) != 1 || f.opens[0].GetClientId() != "svc-a" {
		t.Errorf("opened sessions %v, want one for svc-a", f.opens)
	}
	// The commit answered with 11 after 12 must not lower LastIndex.
	if got := c.LastIndex(); got != 12 {
		t.Errorf("LastIndex() = %d, want 12", got)
	}
}

func TestCommitReturnsTheIndexAndEmptyTxnIsStillSent(t *testing.T) {
	f := &fakeState{indexes: []uint64{5}}
	c := newFakeClient(f)
	res, err := c.Txn().Commit(context.Background())
	if err != nil || res.Index != 5 {
		t.Fatalf("Commit() = %+v, %v; want index 5", res, err)
	}
	if len(f.commits) != 1 {
		t.Fatalf("%d commits sent, want 1", len(f.commits))
	}
}

func TestTxnCommitsAtMostOnce(t *testing.T) {
	t.Run("after success", func(t *testing.T) {
		f := &fakeState{indexes: []uint64{1}}
		txn := newFakeClient(f).Txn().Put("ns", []byte("k"), nil)
		if _, err := txn.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := txn.Commit(context.Background()); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("second Commit: %v, want ErrTxnDone", err)
		}
		if len(f.commits) != 1 {
			t.Fatalf("%d commits sent, want 1", len(f.commits))
		}
	})
	t.Run("after failure", func(t *testing.T) {
		f := &fakeState{commitErr: status.Error(codes.Unavailable, "no leader")}
		txn := newFakeClient(f).Txn()
		if _, err := txn.Commit(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Commit: %v, want ErrUnavailable", err)
		}
		if _, err := txn.Commit(context.Background()); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("second Commit: %v, want ErrTxnDone", err)
		}
	})
}

type badJSON struct{ C chan int }

func TestTxnKeepsTheFirstCodecErrorAndCommitSendsNothing(t *testing.T) {
	f := &fakeState{}
	c := newFakeClient(f)
	vals := NewValue(c, "ns", JSON[badJSON]())
	txn := c.Txn().Put("ns", []byte("ok"), []byte("1"))
	vals.In(txn).Put("bad1", badJSON{C: make(chan int)}).Put("bad2", badJSON{C: make(chan int)})
	_, err := txn.Commit(context.Background())
	if !errors.Is(err, ErrCodec) {
		t.Fatalf("Commit: %v, want ErrCodec", err)
	}
	if want := `"bad1"`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the first bad key %s", err, want)
	}
	if len(f.commits) != 0 {
		t.Fatalf("%d commits sent, want none", len(f.commits))
	}
	if _, err := txn.Commit(context.Background()); !errors.Is(err, ErrTxnDone) {
		t.Fatalf("second Commit: %v, want ErrTxnDone", err)
	}
	// The handle's own Put reports the error the same way.
	if err := vals.Put(context.Background(), "k", badJSON{C: make(chan int)}); !errors.Is(err, ErrCodec) {
		t.Fatalf("Value.Put: %v, want ErrCodec", err)
	}
}

func TestUpdateCommitsUnlessFnFails(t *testing.T) {
	f := &fakeState{indexes: []uint64{3}}
	c := newFakeClient(f)
	fnErr := errors.New("abort")
	if _, err := c.Update(context.Background(), func(t *Txn) error {
		t.Put("ns", []byte("k"), []byte("v"))
		return fnErr
	}); !errors.Is(err, fnErr) {
		t.Fatalf("Update: %v, want fn's error", err)
	}
	if len(f.commits) != 0 {
		t.Fatalf("Update sent a commit although fn failed")
	}
	res, err := c.Update(context.Background(), func(t *Txn) error {
		t.CounterAdd("ns", []byte("c"), 1)
		return nil
	})
	if err != nil || res.Index != 3 || len(f.commits) != 1 {
		t.Fatalf("Update = %+v, %v with %d commits; want index 3, one commit", res, err, len(f.commits))
	}
}

func TestClosedClientReturnsErrClosed(t *testing.T) {
	f := &fakeState{}
	c := newFakeClient(f)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	if _, err := c.Txn().Commit(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit: %v, want ErrClosed", err)
	}
	if _, _, err := c.Get(ctx, "ns", []byte("k")); !errors.Is(err, ErrClosed) {
		t.Errorf("Get: %v, want ErrClosed", err)
	}
	if _, err := c.GetOffsets(ctx, "g"); !errors.Is(err, ErrClosed) {
		t.Errorf("GetOffsets: %v, want ErrClosed", err)
	}
	for _, err := range c.Scan(ctx, ScanQuery{Namespace: "ns"}) {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Scan: %v, want ErrClosed", err)
		}
	}
	if len(f.commits)+len(f.gets)+len(f.scans) != 0 {
		t.Error("a closed client sent requests")
	}
}
