package grpcapi_test

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore/fsm"
)

func TestReadsRejectInvalidRequestsNamingTheField(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	key := []byte("k")
	gets := []struct {
		name string
		req  *statedv1.GetRequest
		want string
	}{
		{"empty namespace", &statedv1.GetRequest{Key: key, Kind: statedv1.Kind_KIND_VALUE}, "namespace: empty"},
		{"empty key", &statedv1.GetRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_VALUE}, "key: empty"},
		{"kind list", &statedv1.GetRequest{Namespace: "ns", Key: key, Kind: statedv1.Kind_KIND_LIST}, "kind: KIND_LIST cannot be read with Get"},
		{"kind unspecified", &statedv1.GetRequest{Namespace: "ns", Key: key}, "kind: KIND_UNSPECIFIED cannot be read with Get"},
		{"map without sub_key", &statedv1.GetRequest{Namespace: "ns", Key: key, Kind: statedv1.Kind_KIND_MAP}, "sub_key: empty"},
		{"value with sub_key", &statedv1.GetRequest{Namespace: "ns", Key: key, Kind: statedv1.Kind_KIND_VALUE, SubKey: key}, "sub_key: must be empty"},
		{"unknown consistency", &statedv1.GetRequest{Namespace: "ns", Key: key, Kind: statedv1.Kind_KIND_VALUE, Read: &statedv1.ReadOptions{Consistency: 9}}, "read.consistency: unknown consistency 9"},
	}
	for _, tc := range gets {
		t.Run("get with "+tc.name, func(t *testing.T) {
			_, err := c.Get(testContext(t), tc.req)
			wantStatus(t, err, codes.InvalidArgument, tc.want)
		})
	}
	scans := []struct {
		name string
		req  *statedv1.ScanRequest
		want string
	}{
		{"empty namespace", &statedv1.ScanRequest{}, "namespace: empty"},
		{"map without key", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_MAP}, "key: empty"},
		{"list without key", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_LIST}, "key: empty"},
		{"value kind with key", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_VALUE, Key: key}, "key: must be empty"},
		{"unknown kind", &statedv1.ScanRequest{Namespace: "ns", Kind: 42}, "kind: unknown kind 42"},
		{"prefix over 4096 bytes", &statedv1.ScanRequest{Namespace: "ns", Prefix: bytes.Repeat(key, 4097)}, "prefix: 4097 bytes, limit 4096"},
		{"unknown consistency", &statedv1.ScanRequest{Namespace: "ns", Read: &statedv1.ReadOptions{Consistency: -1}}, "read.consistency: unknown consistency -1"},
	}
	for _, tc := range scans {
		t.Run("scan with "+tc.name, func(t *testing.T) {
			stream, err := c.Scan(testContext(t), tc.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantStatus(t, err, codes.InvalidArgument, tc.want)
		})
	}
	t.Run("get offsets with an empty group", func(t *testing.T) {
		_, err := c.GetOffsets(testContext(t), &statedv1.GetOffsetsRequest{})
		wantStatus(t, err, codes.InvalidArgument, "group: empty")
	})
}

func TestReadsAtEveryConsistencyLevelSeeTheCommit(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	idx := mustCommit(t, c, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("ns", "k", "v")}})
	for _, read := range []*statedv1.ReadOptions{
		nil,
		{MinIndex: idx},
		{Consistency: statedv1.Consistency_CONSISTENCY_LOCAL},
		{Consistency: statedv1.Consistency_CONSISTENCY_SESSION, MinIndex: idx},
		{Consistency: statedv1.Consistency_CONSISTENCY_LINEARIZABLE},
	} {
		r, err := c.Get(testContext(t), &statedv1.GetRequest{Namespace: "ns", Key: []byte("k"), Kind: statedv1.Kind_KIND_VALUE, Read: read})
		if err != nil {
			t.Fatalf("read %v: %v", read, err)
		}
		if !r.GetFound() || string(r.GetValue()) != "v" || r.GetAppliedIndex() < idx {
			t.Errorf("read %v = %v, want v at index >= %d", read, r, idx)
		}
	}
}

// seedScanData writes, in namespace "ns", enough entries of every kind that
// scans cross several batches: 600 values, a counter per 7th key, a map of
// 700 entries and a list of 300 elements under key "k0100", and a map entry
// and a list element under a few others.
func seedScanData(t *testing.T, c statedv1.StateClient) {
	t.Helper()
	var ms []*statedv1.Mutation
	for i := range 600 {
		k := []byte(fmt.Sprintf("k%04d", i))
		ms = append(ms, &statedv1.Mutation{Kind: kPut, Namespace: "ns", Key: k, Value: []byte(fmt.Sprint(i))})
		if i%7 == 0 {
			ms = append(ms, &statedv1.Mutation{Kind: kCounterAdd, Namespace: "ns", Key: k, Delta: int64(i)})
		}
		if i%50 == 0 {
			ms = append(ms,
				&statedv1.Mutation{Kind: kMapPut, Namespace: "ns", Key: k, SubKey: []byte("s"), Value: []byte("m")},
				&statedv1.Mutation{Kind: kListAppend, Namespace: "ns", Key: k, Value: []byte("l")})
		}
	}
	for i := range 700 {
		ms = append(ms, &statedv1.Mutation{Kind: kMapPut, Namespace: "ns", Key: []byte("k0100"), SubKey: []byte(fmt.Sprintf("sub%04d", i)), Value: []byte("mv")})
	}
	for range 300 {
		ms = append(ms, &statedv1.Mutation{Kind: kListAppend, Namespace: "ns", Key: []byte("k0100"), Value: []byte("lv")})
	}
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: ms})
}

// storeScan reads q in one scan of the store itself: the reference the
// batched gRPC scan must match.
func storeScan(t *testing.T, s interface {
	Scan(fsm.ScanQuery, func(fsm.Entry) error) error
}, q fsm.ScanQuery) []string {
	t.Helper()
	var out []string
	err := s.Scan(q, func(e fsm.Entry) error {
		out = append(out, fmt.Sprintf("%s/%d/%x=%s/%d", e.Key, e.Kind, e.SubKey, e.Value, e.Counter))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wireEntries(es []*statedv1.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%s/%d/%x=%s/%d", e.GetKey(), e.GetKind(), e.GetSubKey(), e.GetValue(), e.GetCounter())
	}
	return out
}

func TestScanStreamsInBatchesTheSameEntriesAsOneStoreScan(t *testing.T) {
	t.Parallel()
	d, c := startClient(t)
	seedScanData(t, c)
	cases := []struct {
		name string
		req  *statedv1.ScanRequest
		q    fsm.ScanQuery
	}{
		{"whole namespace", &statedv1.ScanRequest{Namespace: "ns"}, fsm.ScanQuery{Namespace: "ns"}},
		{"namespace with a limit", &statedv1.ScanRequest{Namespace: "ns", Limit: 500}, fsm.ScanQuery{Namespace: "ns", Limit: 500}},
		{"namespace range", &statedv1.ScanRequest{Namespace: "ns", Start: []byte("k0090"), End: []byte("k0400")}, fsm.ScanQuery{Namespace: "ns", Start: []byte("k0090"), End: []byte("k0400")}},
		{"namespace prefix", &statedv1.ScanRequest{Namespace: "ns", Prefix: []byte("k01")}, fsm.ScanQuery{Namespace: "ns", Prefix: []byte("k01")}},
		{"values", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_VALUE}, fsm.ScanQuery{Namespace: "ns", Kind: fsm.KindValue}},
		{"counters", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_COUNTER}, fsm.ScanQuery{Namespace: "ns", Kind: fsm.KindCounter}},
		{"one map", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_MAP, Key: []byte("k0100")}, fsm.ScanQuery{Namespace: "ns", Kind: fsm.KindMap, Key: []byte("k0100")}},
		{"one map with a limit", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_MAP, Key: []byte("k0100"), Limit: 300}, fsm.ScanQuery{Namespace: "ns", Kind: fsm.KindMap, Key: []byte("k0100"), Limit: 300}},
		{"one list", &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_LIST, Key: []byte("k0100")}, fsm.ScanQuery{Namespace: "ns", Kind: fsm.KindList, Key: []byte("k0100")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := storeScan(t, d.Store(), tc.q)
			entries, responses := scanAll(t, c, tc.req)
			got := wireEntries(entries)
			if len(got) != len(want) {
				t.Fatalf("scan returned %d entries, the store %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("entry %d = %s, want %s", i, got[i], want[i])
				}
			}
			if min := (len(want) + 255) / 256; responses < min {
				t.Errorf("%d entries came in %d responses; batches hold at most 256", len(want), responses)
			}
		})
	}
}

func TestScanOfAListHonoursStartAndPrefix(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	var ms []*statedv1.Mutation
	for i := range 600 {
		ms = append(ms, &statedv1.Mutation{Kind: kListAppend, Namespace: "ns", Key: []byte("l"), Value: []byte(fmt.Sprint(i))})
	}
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: ms})
	pos := func(i uint64) []byte { return []byte{0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)} }

	got, _ := scanAll(t, c, &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_LIST, Key: []byte("l"), Start: pos(100), End: pos(450)})
	if len(got) != 350 || string(got[0].GetValue()) != "100" || string(got[349].GetValue()) != "449" {
		t.Errorf("list range [100, 450) returned %d elements", len(got))
	}
	got, _ = scanAll(t, c, &statedv1.ScanRequest{Namespace: "ns", Kind: statedv1.Kind_KIND_LIST, Key: []byte("l"), Prefix: pos(0x200)[:7]})
	if len(got) != 600-0x200 || string(got[0].GetValue()) != fmt.Sprint(0x200) {
		t.Errorf("list prefix 0x02xx returned %d elements", len(got))
	}
}

func TestScanOfLargeValuesKeepsResponsesNearOneMiB(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	big := bytes.Repeat([]byte("v"), 300<<10)
	var ms []*statedv1.Mutation
	for i := range 10 {
		ms = append(ms, &statedv1.Mutation{Kind: kPut, Namespace: "ns", Key: []byte(fmt.Sprint(i)), Value: big})
	}
	mustCommit(t, c, &statedv1.CommitRequest{Mutations: ms})
	entries, responses := scanAll(t, c, &statedv1.ScanRequest{Namespace: "ns"})
	if len(entries) != 10 {
		t.Fatalf("got %d entries, want 10", len(entries))
	}
	if responses < 3 {
		t.Errorf("3 MB of values came in %d responses, want at least 3", responses)
	}
}

func TestScanOfNothingSendsOneEmptyResponseWithTheAppliedIndex(t *testing.T) {
	t.Parallel()
	_, c := startClient(t)
	idx := mustCommit(t, c, &statedv1.CommitRequest{Mutations: []*statedv1.Mutation{put("other", "k", "v")}})
	stream, err := c.Scan(testContext(t), &statedv1.ScanRequest{Namespace: "ns", Read: &statedv1.ReadOptions{MinIndex: idx}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEntries()) != 0 || resp.GetAppliedIndex() < idx {
		t.Errorf("response = %v, want no entries at index >= %d", resp, idx)
	}
}
