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
