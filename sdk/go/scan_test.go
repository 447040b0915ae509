package stated

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

func entries(keys ...string) []*statedv1.Entry {
	out := make([]*statedv1.Entry, len(keys))
	for i, k := range keys {
		out[i] = &statedv1.Entry{Kind: statedv1.Kind_KIND_VALUE, Key: []byte(k), Value: []byte("v" + k)}
	}
	return out
}

func TestScanYieldsEntriesOfEveryBatchInOrder(t *testing.T) {
	f := &fakeState{scanBatches: [][]*statedv1.Entry{entries("a", "b"), {}, entries("c")}}
	c := newFakeClient(f)
	var got []string
	for e, err := range c.Scan(context.Background(), ScanQuery{Namespace: "ns", Kind: KindValue, Prefix: []byte("p"), Limit: 10}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(e.Key)+"="+string(e.Value))
	}
	if want := "a=va b=vb c=vc"; join(got) != want {
		t.Errorf("got %q, want %q", join(got), want)
	}
	r := f.scans[0]
	if r.GetNamespace() != "ns" || r.GetKind() != statedv1.Kind_KIND_VALUE || string(r.GetPrefix()) != "p" || r.GetLimit() != 10 {
		t.Errorf("request %v", r)
	}
}

func TestScanBreakCancelsTheStream(t *testing.T) {
	f := &fakeState{scanBatches: [][]*statedv1.Entry{entries("a", "b", "c"), entries("d")}}
	c := newFakeClient(f)
	n := 0
	for _, err := range c.Scan(context.Background(), ScanQuery{Namespace: "ns"}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 2 {
			break
		}
	}
	if f.scanCtx.Err() == nil {
		t.Fatal("the stream's context is still live after the consumer broke out")
	}
}

func TestScanYieldsAnErrorOnceThenStops(t *testing.T) {
	f := &fakeState{scanBatches: [][]*statedv1.Entry{entries("a")}, scanErr: status.Error(codes.Unavailable, "leader lost")}
	c := newFakeClient(f)
	var keys []string
	var errs []error
	for e, err := range c.Scan(context.Background(), ScanQuery{Namespace: "ns"}) {
		if err != nil {
			errs = append(errs, err)
			continue // a careless consumer: the iterator must still stop
		}
		keys = append(keys, string(e.Key))
	}
	if join(keys) != "a" || len(errs) != 1 || !errors.Is(errs[0], ErrUnavailable) {
		t.Fatalf("keys %q errs %v; want a then one ErrUnavailable", keys, errs)
	}
}

func TestScanEntriesConvertExpiryAndKinds(t *testing.T) {
	exp := time.UnixMilli(1_700_000_000_123)
	f := &fakeState{scanBatches: [][]*statedv1.Entry{{
		{Kind: statedv1.Kind_KIND_COUNTER, Key: []byte("c"), Counter: -3},
		{Kind: statedv1.Kind_KIND_MAP, Key: []byte("m"), SubKey: []byte("s"), Value: []byte("x"), ExpiresAtUnixMillis: exp.UnixMilli()},
	}}}
	c := newFakeClient(f)
	var got []Entry
	for e, err := range c.Scan(context.Background(), ScanQuery{Namespace: "ns"}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if len(got) != 2 || got[0].Kind != KindCounter || got[0].Counter != -3 || !got[0].ExpiresAt.IsZero() ||
		got[1].Kind != KindMap || string(got[1].SubKey) != "s" || !got[1].ExpiresAt.Equal(exp) {
		t.Fatalf("got %+v", got)
	}
}

func TestMapScanDecodesValuesAndStopsAtADecodeError(t *testing.T) {
	one, _ := Int64().Encode(1)
	f := &fakeState{scanBatches: [][]*statedv1.Entry{{
		{Kind: statedv1.Kind_KIND_MAP, Key: []byte("k"), SubKey: []byte("a"), Value: one},
		{Kind: statedv1.Kind_KIND_MAP, Key: []byte("k"), SubKey: []byte("b"), Value: []byte("short")},
		{Kind: statedv1.Kind_KIND_MAP, Key: []byte("k"), SubKey: []byte("c"), Value: one},
	}}}
	c := newFakeClient(f)
	m := NewMap(c, "ns", Int64())
	var subs []string
	var errs []error
	for e, err := range m.Scan(context.Background(), "k", Range{Start: "a", End: "z"}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		subs = append(subs, e.SubKey)
	}
	if join(subs) != "a" || len(errs) != 1 || !errors.Is(errs[0], ErrCodec) {
		t.Fatalf("sub-keys %q errs %v; want a then one ErrCodec", subs, errs)
	}
	r := f.scans[0]
	if r.GetKind() != statedv1.Kind_KIND_MAP || string(r.GetKey()) != "k" || string(r.GetStart()) != "a" || string(r.GetEnd()) != "z" {
		t.Errorf("request %v", r)
	}
}

func join(s []string) string { return strings.Join(s, " ") }
