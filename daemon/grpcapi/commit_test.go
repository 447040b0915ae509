package grpcapi_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/grpcapi"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

const (
	kPut          = statedv1.MutationKind_MUTATION_KIND_PUT
	kDelete       = statedv1.MutationKind_MUTATION_KIND_DELETE
	kMapPut       = statedv1.MutationKind_MUTATION_KIND_MAP_PUT
	kMapDelete    = statedv1.MutationKind_MUTATION_KIND_MAP_DELETE
	kListAppend   = statedv1.MutationKind_MUTATION_KIND_LIST_APPEND
	kCounterAdd   = statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD
	kDeletePrefix = statedv1.MutationKind_MUTATION_KIND_DELETE_PREFIX
)

func offset(group, topic string, partition int32, off int64) *statedv1.Offset {
	return &statedv1.Offset{Group: group, Topic: topic, Partition: partition, Offset: off}
}

func TestCommitRejectsInvalidRequestsNamingTheFieldAndAppliesNothing(t *testing.T) {
	t.Parallel()
	d, c := startClient(t, noPeriodicCheckpoints) // the applied index moves only with commits
	ns := "validation"

	many := func(n int, f func(i int) *statedv1.Mutation) []*statedv1.Mutation {
		out := make([]*statedv1.Mutation, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	manyOffsets := func(n int) []*statedv1.Offset {
		out := make([]*statedv1.Offset, n)
		for i := range out {
			out[i] = offset("g", "t", int32(i), 1)
		}
		return out
	}
	// bad returns a commit of a valid put, the bad mutation and another
	// valid put, so that a partial apply would show.
	bad := func(m *statedv1.Mutation) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put(ns, "a", "1"), m, put(ns, "b", "2")}}
	}
	badOffset := func(o *statedv1.Offset) *statedv1.CommitRequest {
		return &statedv1.CommitRequest{
			Mutations: []*statedv1.Mutation{put(ns, "a", "1")},
			Offsets:   []*statedv1.Offset{o},
		}
	}
	cases := []struct {
		name string
		req  *statedv1.CommitRequest
		want string
	}{
		{"unknown mutation kind", bad(&statedv1.Mutation{Kind: 99, Namespace: ns, Key: []byte("k")}), "mutations[1].kind: unknown mutation kind 99"},
		{"unspecified mutation kind", bad(&statedv1.Mutation{Namespace: ns, Key: []byte("k")}), "mutations[1].kind: unspecified"},
		{"empty namespace", bad(put("", "k", "v")), "mutations[1].namespace: empty"},
		{"namespace over 256 bytes", bad(put(strings.Repeat("n", 257), "k", "v")), "mutations[1].namespace: 257 bytes, limit 256"},
		{"namespace with a control character", bad(put("a\tb", "k", "v")), "mutations[1].namespace: control character"},
		{"empty key", bad(put(ns, "", "v")), "mutations[1].key: empty"},
		{"key over 4096 bytes", bad(put(ns, strings.Repeat("k", 4097), "v")), "mutations[1].key: 4097 bytes, limit 4096"},
		{"value over 4 MiB", bad(put(ns, "k", strings.Repeat("v", 4<<20+1))), "mutations[1].value: 4194305 bytes, limit 4194304"},
		{"map put without sub_key", bad(&statedv1.Mutation{Kind: kMapPut, Namespace: ns, Key: []byte("m"), Value: []byte("v")}), "mutations[1].sub_key: empty"},
		{"map delete without sub_key", bad(&statedv1.Mutation{Kind: kMapDelete, Namespace: ns, Key: []byte("m")}), "mutations[1].sub_key: empty"},
		{"sub_key on a put", bad(&statedv1.Mutation{Kind: kPut, Namespace: ns, Key: []byte("k"), SubKey: []byte("s")}), "mutations[1].sub_key: must be empty for PUT"},
		{"sub_key over 4096 bytes", bad(&statedv1.Mutation{Kind: kMapPut, Namespace: ns, Key: []byte("m"), SubKey: bytes.Repeat([]byte("s"), 4097)}), "mutations[1].sub_key: 4097 bytes, limit 4096"},
		{"value on a delete", bad(&statedv1.Mutation{Kind: kDelete, Namespace: ns, Key: []byte("k"), Value: []byte("v")}), "mutations[1].value: must be empty for DELETE"},
		{"delta on a put", bad(&statedv1.Mutation{Kind: kPut, Namespace: ns, Key: []byte("k"), Delta: 1}), "mutations[1].delta: must be zero for PUT"},
		{"negative ttl", bad(&statedv1.Mutation{Kind: kPut, Namespace: ns, Key: []byte("k"), TtlMillis: -1}), "mutations[1].ttl_millis: negative (-1)"},
		{"ttl on a delete", bad(&statedv1.Mutation{Kind: kDelete, Namespace: ns, Key: []byte("k"), TtlMillis: 10}), "mutations[1].ttl_millis: must be zero for DELETE"},
		{"ttl on a delete prefix", bad(&statedv1.Mutation{Kind: kDeletePrefix, Namespace: ns, TtlMillis: 10}), "mutations[1].ttl_millis: must be zero for DELETE_PREFIX"},
		{"ttl over 100 years", bad(&statedv1.Mutation{Kind: kCounterAdd, Namespace: ns, Key: []byte("c"), Delta: 1, TtlMillis: grpcapi.MaxTTLMillis + 1}), "mutations[1].ttl_millis: 3153600000001 ms, limit"},
		{"too many mutations", &statedv1.CommitRequest{Mutations: many(grpcapi.MaxMutationsPerCommit+1, func(i int) *statedv1.Mutation {
			return put(ns, fmt.Sprint(i), "")
		})}, "mutations: 100001 mutations, limit 100000"},
		{"too many offsets", &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put(ns, "a", "1")}, Offsets: manyOffsets(grpcapi.MaxOffsetsPerCommit + 1)}, "offsets: 10001 offsets, limit 10000"},
		{"negative offset", badOffset(offset("g", "t", 0, -1)), "offsets[0].offset: negative (-1)"},
		{"negative partition", badOffset(offset("g", "t", -2, 1)), "offsets[0].partition: negative (-2)"},
		{"empty group", badOffset(offset("", "t", 0, 1)), "offsets[0].group: empty"},
		{"group over 255 bytes", badOffset(offset(strings.Repeat("g", 256), "t", 0, 1)), "offsets[0].group: 256 bytes, limit 255"},
		{"empty topic", badOffset(offset("g", "", 0, 1)), "offsets[0].topic: empty"},
		{"topic named ..", badOffset(offset("g", "..", 0, 1)), `offsets[0].topic: ".." is not a valid topic name`},
		{"topic with a slash", badOffset(offset("g", "a/b", 0, 1)), "offsets[0].topic: invalid character '/' at 1"},
		{"topic over 249 characters", badOffset(offset("g", strings.Repeat("t", 250), 0, 1)), "offsets[0].topic: 250 characters, limit 249"},
		{"duplicate partition", &statedv1.CommitRequest{
			Mutations: []*statedv1.Mutation{put(ns, "a", "1")},
			Offsets:   []*statedv1.Offset{offset("g", "t", 0, 1), offset("g", "u", 0, 1), offset("g", "t", 0, 2)},
		}, `offsets[2]: duplicate of offsets[0] (group "g", topic "t", partition 0)`},
		{"client id over 256 bytes", &statedv1.CommitRequest{ClientId: strings.Repeat("c", 257), Mutations: []*statedv1.Mutation{put(ns, "a", "1")}}, "client_id: 257 bytes, limit 256"},
		{"client id with a control character", &statedv1.CommitRequest{ClientId: "c\x1b[2J", Mutations: []*statedv1.Mutation{put(ns, "a", "1")}}, "client_id: control character U+001B at byte 1"},
		{"sequence without session", &statedv1.CommitRequest{ClientId: "c", Sequence: 7, Mutations: []*statedv1.Mutation{put(ns, "a", "1")}}, "session_id: 0 with a sequence: open a session with OpenSession and send its id, so that a retry is recognised"},
		{"session without client id", &statedv1.CommitRequest{SessionId: 5, Sequence: 7}, "session_id: set without client_id"},
		{"session without sequence", &statedv1.CommitRequest{ClientId: "c", SessionId: 5}, "sequence: 0 with a session_id: sequences start at 1"},
		{"lane without session", &statedv1.CommitRequest{ClientId: "c", Lane: 2}, "lane: set without session_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Store().AppliedIndex()
			_, err := c.Commit(testContext(t), tc.req)
			wantStatus(t, err, codes.InvalidArgument, tc.want)
			if after := d.Store().AppliedIndex(); after != before {
				t.Errorf("applied index moved from %d to %d", before, after)
			}
			for _, key := range []string{"a", "b", "0"} {
				if r := get(t, c, ns, key); r.GetFound() {
					t.Errorf("key %q was written by a rejected commit", key)
				}
			}
			offs, err := c.GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{Group: "g"})
			if err != nil {
				t.Fatal(err)
			}
			if len(offs.GetOffsets()) != 0 {
				t.Errorf("offsets were written by a rejected commit: %v", offs.GetOffsets())
			}
		})
	}
}

func TestCommitWithOneInvalidMutationAmongValidOnesAppliesNothing(t *testing.T) {
	t.Parallel()
	d, c := startClient(t, noPeriodicCheckpoints) // the applied index moves only with commits
	before := d.Store().AppliedIndex()
	_, err := c.Commit(testContext(t), &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{
			put("ns", "a", "1"),
			{Kind: kCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 5},
			{Kind: kMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s"), Value: []byte("v")},
			{Kind: kMapPut, Namespace: "ns", Key: []byte("m")}, // no sub_key
			put("ns", "b", "2"),
		},
		Offsets: []*statedv1.Offset{offset("g", "t", 0, 10)},
	})
	wantStatus(t, err, codes.InvalidArgument, "mutations[3].sub_key: empty")
	assertNothingApplied(t, d, c, before)
}

// assertNothingApplied checks that none of the keys the atomicity tests
// write exist and that the applied index is still before.
func assertNothingApplied(t *testing.T, d *daemon.Daemon, c statedv1.StateClient, before uint64) {
	t.Helper()
	if after := d.Store().AppliedIndex(); after != before {
		t.Errorf("applied index moved from %d to %d", before, after)
	}
	for _, k := range []string{"a", "b"} {
		if get(t, c, "ns", k).GetFound() {
			t.Errorf("key %q was written", k)
		}
	}
	ctr, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: "ns", Key: []byte("c"), Kind: statedv1.Kind_KIND_COUNTER})
	if err != nil || ctr.GetFound() {
		t.Errorf("counter c: found=%v err=%v, want not found", ctr.GetFound(), err)
	}
	m, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: "ns", Key: []byte("m"), Kind: statedv1.Kind_KIND_MAP, SubKey: []byte("s")})
	if err != nil || m.GetFound() {
		t.Errorf("map m[s]: found=%v err=%v, want not found", m.GetFound(), err)
	}
}

func TestCommitWithAnOffsetBelowTheStoredOneIsRejectedAndAppliesNone(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	mustCommit(t, c, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{put("ns", "x", "first")},
		Offsets:   []*statedv1.Offset{offset("g", "t", 0, 10), offset("g", "t", 1, 20)},
	})
	_, err := c.Commit(testContext(t), &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{put("ns", "a", "1"), put("ns", "x", "second")},
		Offsets:   []*statedv1.Offset{offset("g", "t", 0, 11), offset("g", "t", 1, 19)},
	})
	wantStatus(t, err, codes.InvalidArgument, "offsets[1].offset: 19 is lower than the stored 20")

	if get(t, c, "ns", "a").GetFound() {
		t.Error(`key "a" was written by the rejected commit`)
	}
	if v := string(get(t, c, "ns", "x").GetValue()); v != "first" {
		t.Errorf(`key "x" = %q, want "first"`, v)
	}
	offs, err := c.GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, o := range offs.GetOffsets() {
		got = append(got, o.GetOffset())
	}
	if fmt.Sprint(got) != "[10 20]" {
		t.Errorf("offsets = %v, want [10 20]", got)
	}
}

func TestCommitOfEveryMutationKindIsReadBack(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	idx := mustCommit(t, c, &statedv1.CommitRequest{
		Mutations: []*statedv1.Mutation{
			put("ns", "v", "value"),
			{Kind: kMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s1"), Value: []byte("one")},
			{Kind: kMapPut, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s2"), Value: []byte("two")},
			{Kind: kMapDelete, Namespace: "ns", Key: []byte("m"), SubKey: []byte("s2")},
			{Kind: kListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte("first")},
			{Kind: kCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 40},
			{Kind: kCounterAdd, Namespace: "ns", Key: []byte("c"), Delta: 2},
			put("ns", "gone", "x"),
			{Kind: kDelete, Namespace: "ns", Key: []byte("gone")},
			put("other", "p/1", "x"),
			put("other", "p/2", "x"),
			put("other", "q", "x"),
			{Kind: kDeletePrefix, Namespace: "other", Key: []byte("p/")},
		},
		Offsets:  []*statedv1.Offset{offset("g", "t", 3, 7)},
		ClientId: "client-1",
	})
	if idx == 0 {
		t.Fatal("commit returned index 0")
	}
	read := &statedv1.ReadOptions{MinIndex: idx}
	ctx := testContext(t)
	check := func(req *statedv1.GetRequest, found bool, value string, counter int64) {
		t.Helper()
		req.Read = read
		r, err := c.Get(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFound() != found || string(r.GetValue()) != value || r.GetCounter() != counter {
			t.Errorf("get %v = found %v value %q counter %d, want %v %q %d", req, r.GetFound(), r.GetValue(), r.GetCounter(), found, value, counter)
		}
		if r.GetAppliedIndex() < idx {
			t.Errorf("applied_index %d below the commit's %d", r.GetAppliedIndex(), idx)
		}
	}
	check(&statedv1.GetRequest{Namespace: "ns", Key: []byte("v"), Kind: statedv1.Kind_KIND_VALUE}, true, "value", 0)
	check(&statedv1.GetRequest{Namespace: "ns", Key: []byte("m"), Kind: statedv1.Kind_KIND_MAP, SubKey: []byte("s1")}, true, "one", 0)
	check(&statedv1.GetRequest{Namespace: "ns", Key: []byte("m"), Kind: statedv1.Kind_KIND_MAP, SubKey: []byte("s2")}, false, "", 0)
	check(&statedv1.GetRequest{Namespace: "ns", Key: []byte("c"), Kind: statedv1.Kind_KIND_COUNTER}, true, "", 42)
	check(&statedv1.GetRequest{Namespace: "ns", Key: []byte("gone"), Kind: statedv1.Kind_KIND_VALUE}, false, "", 0)
	check(&statedv1.GetRequest{Namespace: "other", Key: []byte("p/1"), Kind: statedv1.Kind_KIND_VALUE}, false, "", 0)
	check(&statedv1.GetRequest{Namespace: "other", Key: []byte("q"), Kind: statedv1.Kind_KIND_VALUE}, true, "x", 0)

	list, _ := scanAll(t, c, &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_LIST, Key: []byte("l")})
	if len(list) != 1 || string(list[0].GetValue()) != "first" {
		t.Errorf("list l = %v, want one element \"first\"", list)
	}
	offs, err := c.GetOffsets(ctx, &statedv1.GetOffsetsRequest{Group: "g", Read: read})
	if err != nil {
		t.Fatal(err)
	}
	if len(offs.GetOffsets()) != 1 || offs.GetOffsets()[0].GetOffset() != 7 || offs.GetOffsets()[0].GetPartition() != 3 {
		t.Errorf("offsets = %v, want t/3 at 7", offs.GetOffsets())
	}
}

func TestCommitWithTTLReportsExpiryInUnixMillis(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	start := time.Now()
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{
		{Kind: kPut, Namespace: "ns", Key: []byte("k"), Value: []byte("v"), TtlMillis: time.Hour.Milliseconds()},
	}})
	end := time.Now()
	got := get(t, c, "ns", "k").GetExpiresAtUnixMillis()
	lo, hi := start.Add(time.Hour).UnixMilli()-1, end.Add(time.Hour).UnixMilli()+1
	if got < lo || got > hi {
		t.Errorf("expires_at_unix_millis = %d, want within [%d, %d]", got, lo, hi)
	}
	if e := get(t, c, "ns", "missing").GetExpiresAtUnixMillis(); e != 0 {
		t.Errorf("missing key has expires_at %d", e)
	}
}

func TestRequestOverTheMaxMessageSizeFailsFastWithResourceExhausted(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, func(c *daemon.Config) { c.MaxMessageBytes = 1 << 20 })
	// The client may send more than the server accepts, so the request
	// reaches the server instead of failing in the client.
	c := dial(t, d.TCPAddr(), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	start := time.Now()
	_, err := c.Commit(testContext(t), &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("ns", "big", strings.Repeat("v", 2<<20))}})
	wantStatus(t, err, codes.ResourceExhausted, "")
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %s to refuse an oversized request", elapsed)
	}
	if get(t, c, "ns", "big").GetFound() {
		t.Error("oversized value was written")
	}
}

func TestDeletePrefixWithAnEmptyKeyClearsTheNamespace(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("ns", "a", "1"), put("ns", "b", "2"), put("keep", "a", "1")}})
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{{Kind: kDeletePrefix, Namespace: "ns"}}})
	if entries, _ := scanAll(t, c, &statedv1.ScanRequest{Namespace: "ns"}); len(entries) != 0 {
		t.Errorf("namespace still holds %d entries", len(entries))
	}
	if !get(t, c, "keep", "a").GetFound() {
		t.Error("another namespace was cleared too")
	}
}
