package stated

import (
	"context"
	"testing"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func TestReadConsistencyMapsToWireOptions(t *testing.T) {
	const (
		local  = statedv1.Consistency_CONSISTENCY_LOCAL
		sess   = statedv1.Consistency_CONSISTENCY_SESSION
		linear = statedv1.Consistency_CONSISTENCY_LINEARIZABLE
	)
	tests := []struct {
		name          string
		clientDefault Consistency
		read          []ReadOption
		lastIndex     uint64
		want          statedv1.Consistency
		wantMinIndex  uint64
	}{
		{"default before any commit reads local", ConsistencyDefault, nil, 0, local, 0},
		{"default after a commit reads its own writes", ConsistencyDefault, nil, 42, sess, 42},
		{"explicit default behaves as default", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencyDefault)}, 42, sess, 42},
		{"local never waits", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencyLocal)}, 42, local, 0},
		{"session waits for the last index", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencySession)}, 42, sess, 42},
		{"session before any commit", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencySession)}, 0, sess, 0},
		{"linearizable", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencyLinearizable)}, 42, linear, 0},
		{"client default local", ConsistencyLocal, nil, 42, local, 0},
		{"client default linearizable", ConsistencyLinearizable, nil, 42, linear, 0},
		{"client default session", ConsistencySession, nil, 7, sess, 7},
		{"read option overrides client default", ConsistencyLocal, []ReadOption{WithConsistency(ConsistencySession)}, 9, sess, 9},
		{"last read option wins", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencyLinearizable), WithConsistency(ConsistencyLocal)}, 9, local, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeClient(&fakeState{}, WithDefaultConsistency(tt.clientDefault))
			c.observeIndex(tt.lastIndex)
			got := c.readOptions(tt.read)
			if got.GetConsistency() != tt.want || got.GetMinIndex() != tt.wantMinIndex {
				t.Errorf("got %v min_index %d, want %v min_index %d", got.GetConsistency(), got.GetMinIndex(), tt.want, tt.wantMinIndex)
			}
		})
	}
}

func TestReadAfterCommitSendsSessionWithTheCommitIndex(t *testing.T) {
	f := &fakeState{indexes: []uint64{17}}
	c := newFakeClient(f)
	ctx := context.Background()
	if _, _, err := c.Get(ctx, "ns", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn().Put("ns", []byte("k"), []byte("v")).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetCounter(ctx, "ns", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if r := f.gets[0].GetRead(); r.GetConsistency() != statedv1.Consistency_CONSISTENCY_LOCAL || r.GetMinIndex() != 0 {
		t.Errorf("read before commit sent %v", r)
	}
	if r := f.gets[1].GetRead(); r.GetConsistency() != statedv1.Consistency_CONSISTENCY_SESSION || r.GetMinIndex() != 17 {
		t.Errorf("read after commit sent %v, want SESSION min_index 17", r)
	}
	if k := f.gets[1].GetKind(); k != statedv1.Kind_KIND_COUNTER {
		t.Errorf("GetCounter sent kind %v", k)
	}
}

func TestKindsAndConsistenciesMirrorTheWireEnums(t *testing.T) {
	for k, want := range map[Kind]statedv1.Kind{
		KindAny: statedv1.Kind_KIND_UNSPECIFIED, KindValue: statedv1.Kind_KIND_VALUE, KindMap: statedv1.Kind_KIND_MAP,
		KindList: statedv1.Kind_KIND_LIST, KindCounter: statedv1.Kind_KIND_COUNTER,
	} {
		if statedv1.Kind(k) != want {
			t.Errorf("Kind %v = %d, wire %v = %d", k, k, want, want)
		}
	}
	for c, want := range map[Consistency]statedv1.Consistency{
		ConsistencyDefault: statedv1.Consistency_CONSISTENCY_UNSPECIFIED, ConsistencyLocal: statedv1.Consistency_CONSISTENCY_LOCAL,
		ConsistencySession: statedv1.Consistency_CONSISTENCY_SESSION, ConsistencyLinearizable: statedv1.Consistency_CONSISTENCY_LINEARIZABLE,
	} {
		if statedv1.Consistency(c) != want {
			t.Errorf("Consistency %v = %d, wire %v = %d", c, c, want, want)
		}
	}
	for k, want := range map[Kind]string{KindAny: "any", KindValue: "value", KindMap: "map", KindList: "list", KindCounter: "counter", Kind(9): "Kind(9)"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), k.String(), want)
		}
	}
}

func TestWithMinIndexRaisesTheReadsFloorAndNeverLowersIt(t *testing.T) {
	const (
		local  = statedv1.Consistency_CONSISTENCY_LOCAL
		sess   = statedv1.Consistency_CONSISTENCY_SESSION
		linear = statedv1.Consistency_CONSISTENCY_LINEARIZABLE
	)
	tests := []struct {
		name          string
		clientDefault Consistency
		read          []ReadOption
		lastIndex     uint64
		want          statedv1.Consistency
		wantMinIndex  uint64
	}{
		{"default before any commit waits for the given index", ConsistencyDefault, []ReadOption{WithMinIndex(50)}, 0, sess, 50},
		{"default waits for the given index above the last", ConsistencyDefault, []ReadOption{WithMinIndex(50)}, 42, sess, 50},
		{"default keeps the last index above the given one", ConsistencyDefault, []ReadOption{WithMinIndex(10)}, 42, sess, 42},
		{"zero adds nothing before a commit", ConsistencyDefault, []ReadOption{WithMinIndex(0)}, 0, local, 0},
		{"session takes the higher index", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencySession), WithMinIndex(50)}, 42, sess, 50},
		{"local waits for the given index only", ConsistencyDefault, []ReadOption{WithConsistency(ConsistencyLocal), WithMinIndex(10)}, 42, sess, 10},
		{"local with zero still does not wait", ConsistencyDefault, []ReadOption{WithMinIndex(0), WithConsistency(ConsistencyLocal)}, 42, local, 0},
		{"client default local waits for the given index", ConsistencyLocal, []ReadOption{WithMinIndex(7)}, 42, sess, 7},
		{"linearizable carries the index to the leader", ConsistencyDefault, []ReadOption{WithMinIndex(50), WithConsistency(ConsistencyLinearizable)}, 42, linear, 50},
		{"the highest of several indexes counts", ConsistencyDefault, []ReadOption{WithMinIndex(60), WithMinIndex(50)}, 0, sess, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFakeClient(&fakeState{}, WithDefaultConsistency(tt.clientDefault))
			c.observeIndex(tt.lastIndex)
			got := c.readOptions(tt.read)
			if got.GetConsistency() != tt.want || got.GetMinIndex() != tt.wantMinIndex {
				t.Errorf("got %v min_index %d, want %v min_index %d", got.GetConsistency(), got.GetMinIndex(), tt.want, tt.wantMinIndex)
			}
		})
	}
}

func TestReadsSendTheIndexGivenWithMinIndex(t *testing.T) {
	f := &fakeState{}
	c := newFakeClient(f)
	ctx := context.Background()
	if _, _, err := c.MapGet(ctx, "ns", []byte("k"), []byte("s"), WithMinIndex(99)); err != nil {
		t.Fatal(err)
	}
	for _, err := range c.Scan(ctx, ScanQuery{Namespace: "ns"}, WithMinIndex(98)) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if r := f.gets[0].GetRead(); r.GetConsistency() != statedv1.Consistency_CONSISTENCY_SESSION || r.GetMinIndex() != 99 {
		t.Errorf("MapGet sent %v, want SESSION min_index 99", r)
	}
	if len(f.scans) != 1 {
		t.Fatalf("%d scans sent, want 1", len(f.scans))
	}
	if r := f.scans[0].GetRead(); r.GetConsistency() != statedv1.Consistency_CONSISTENCY_SESSION || r.GetMinIndex() != 98 {
		t.Errorf("Scan sent %v, want SESSION min_index 98", r)
	}
}
