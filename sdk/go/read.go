package stated

import (
	"context"
	"errors"
	"io"
	"iter"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Kind is the kind of state stored under a key. One key may hold state of
// several kinds at once; each kind is its own space. The values mirror
// statedv1.Kind.
type Kind int

const (
	// KindAny matches every kind, in a Scan of a namespace.
	KindAny Kind = iota
	// KindValue is a plain value: Put, Get, Delete.
	KindValue
	// KindMap is a map of sub-keys to values, ordered by sub-key.
	KindMap
	// KindList is a list of values in append order.
	KindList
	// KindCounter is a 64-bit signed counter the daemon adds to.
	KindCounter
)

// String returns "any", "value", "map", "list" or "counter".
func (k Kind) String() string {
	switch k {
	case KindAny:
		return "any"
	case KindValue:
		return "value"
	case KindMap:
		return "map"
	case KindList:
		return "list"
	case KindCounter:
		return "counter"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Item is a value read with Get or MapGet.
type Item struct {
	// Value is the stored value. It belongs to the caller.
	Value []byte
	// ExpiresAt is when the entry expires; zero if it does not.
	ExpiresAt time.Time
	// AppliedIndex is the daemon's applied Raft index when it read.
	AppliedIndex uint64
}

// unixMillis converts the wire's expiry time; 0 means never.
func unixMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// get runs one Get RPC.
func (c *Client) get(ctx context.Context, op string, req *statedv1.GetRequest, opts []ReadOption) (*statedv1.GetResponse, error) {
	if err := c.checkOpen(op); err != nil {
		return nil, err
	}
	req.Read = c.readOptions(opts)
	var resp *statedv1.GetResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.Get(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr(op, err)
	}
	return resp, nil
}

// Get reads the value at key in ns. found is false if there is none, or it
// has expired.
func (c *Client) Get(ctx context.Context, ns string, key []byte, opts ...ReadOption) (item Item, found bool, err error) {
	resp, err := c.get(ctx, "get", &statedv1.GetRequest{Namespace: ns, Key: key, Kind: statedv1.Kind_KIND_VALUE}, opts)
	if err != nil || !resp.GetFound() {
		return Item{}, false, err
	}
	return itemOf(resp), true, nil
}

// GetCounter reads the counter at key in ns. A counter that was never added
// to, was reset or has expired reads as 0.
func (c *Client) GetCounter(ctx context.Context, ns string, key []byte, opts ...ReadOption) (int64, error) {
	resp, err := c.get(ctx, "get counter", &statedv1.GetRequest{Namespace: ns, Key: key, Kind: statedv1.Kind_KIND_COUNTER}, opts)
	if err != nil {
		return 0, err
	}
	return resp.GetCounter(), nil
}

// MapGet reads subKey of the map at key in ns. found is false if there is
// no such entry, or it has expired.
func (c *Client) MapGet(ctx context.Context, ns string, key, subKey []byte, opts ...ReadOption) (item Item, found bool, err error) {
	resp, err := c.get(ctx, "map get", &statedv1.GetRequest{Namespace: ns, Key: key, Kind: statedv1.Kind_KIND_MAP, SubKey: subKey}, opts)
	if err != nil || !resp.GetFound() {
		return Item{}, false, err
	}
	return itemOf(resp), true, nil
}

func itemOf(resp *statedv1.GetResponse) Item {
	return Item{
		Value:        resp.GetValue(),
		ExpiresAt:    unixMillis(resp.GetExpiresAtUnixMillis()),
		AppliedIndex: resp.GetAppliedIndex(),
	}
}

// ScanQuery selects the entries a Scan streams.
//
// With Kind KindAny, KindValue or KindCounter it scans the keys of
// Namespace (every kind, or only that one). With KindMap or KindList it
// scans the one map or list at Key, and the bounds apply to sub-keys.
type ScanQuery struct {
	Namespace string
	Kind      Kind
	// Key names the map or list to scan; unused for other kinds.
	Key []byte
	// Prefix, Start (inclusive) and End (exclusive) bound the keys, or a
	// map's sub-keys. An empty bound is open.
	Prefix, Start, End []byte
	// Limit caps the number of entries; zero means no limit.
	Limit int
}

// Entry is one entry of a Scan.
type Entry struct {
	Kind Kind
	Key  []byte
	// SubKey is a map entry's sub-key, or a list element's position as 8
	// bytes big-endian.
	SubKey []byte
	// Value is the value of a value, map entry or list element.
	Value []byte
	// Counter is a counter's value.
	Counter int64
	// ExpiresAt is when the entry expires; zero if it does not.
	ExpiresAt time.Time
}

func entryOf(e *statedv1.Entry) Entry {
	return Entry{
		Kind:      Kind(e.GetKind()),
		Key:       e.GetKey(),
		SubKey:    e.GetSubKey(),
		Value:     e.GetValue(),
		Counter:   e.GetCounter(),
		ExpiresAt: unixMillis(e.GetExpiresAtUnixMillis()),
	}
}

// Scan streams the entries q selects, in key order (sub-key order for a map,
// append order for a list). The daemon sends them in batches; Scan yields
// them one at a time. An error is yielded once, as the second value, and
// ends the scan. Breaking out of the loop ends the stream on the daemon.
//
// A long scan is not one snapshot: it may see commits made while it runs.
//
//	for e, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "orders"}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(e.Kind, string(e.Key))
//	}
func (c *Client) Scan(ctx context.Context, q ScanQuery, opts ...ReadOption) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		if err := c.checkOpen("scan"); err != nil {
			yield(Entry{}, err)
			return
		}
		if q.Limit < 0 {
			yield(Entry{}, localError("scan", codes.InvalidArgument, "limit: negative (%d)", q.Limit))
			return
		}
		// Cancelling the stream's context is what tells the daemon to stop
		// when the consumer breaks out early.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req := &statedv1.ScanRequest{
			Namespace: q.Namespace,
			Kind:      statedv1.Kind(q.Kind),
			Key:       q.Key,
			Prefix:    q.Prefix,
			Start:     q.Start,
			End:       q.End,
			Limit:     uint64(q.Limit),
			Read:      c.readOptions(opts),
		}
		stream, first, stop, err := c.openScan(ctx, req)
		defer stop()
		if err != nil {
			yield(Entry{}, c.rpcErr("scan", err))
			return
		}
		for resp := first; ; {
			for _, e := range resp.GetEntries() {
				if !yield(entryOf(e), nil) {
					return
				}
			}
			resp, err = stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(Entry{}, c.rpcErr("scan", err))
				return
			}
		}
	}
}

// openScan starts a scan stream and reads its first response, retrying
// both like a unary call: until the first response nothing was yielded, so
// a retry is invisible. A failure after that ends the scan. An attempt
// that has no first response within the attempt timeout is ended and
// retried (a silent connection); the stream that answered is bound by
// the caller's ctx only. stop releases the stream's context.
func (c *Client) openScan(ctx context.Context, req *statedv1.ScanRequest) (stream grpc.ServerStreamingClient[statedv1.ScanResponse], first *statedv1.ScanResponse, stop func(), err error) {
	stop = func() {}
	err = c.retryLoop(ctx, 0, func(context.Context) error {
		sctx, cancel := context.WithCancel(ctx)
		var timer *time.Timer
		var timedOut atomic.Bool
		if d := c.retry.attemptTimeout; c.retry.enabled && d > 0 {
			timer = time.AfterFunc(d, func() { timedOut.Store(true); cancel() })
		}
		s, err := c.rpc.Scan(sctx, req)
		var resp *statedv1.ScanResponse
		if err == nil {
			resp, err = s.Recv()
			if errors.Is(err, io.EOF) {
				resp, err = &statedv1.ScanResponse{}, nil
			}
		}
		if timer != nil && !timer.Stop() && timedOut.Load() {
			cancel()
			return status.Errorf(codes.DeadlineExceeded, "no first batch of the scan within the attempt timeout (%v)", c.retry.attemptTimeout)
		}
		if err != nil {
			cancel()
			return err
		}
		stream, first, stop = s, resp, cancel
		return nil
	})
	return stream, first, stop, err
}

// Offset is the next offset to consume for one partition of a topic: the
// offset of the last processed record plus one, as Kafka commits it.
type Offset struct {
	Group     string
	Topic     string
	Partition int32
	Offset    int64
	// Epoch is the partition's newest claim epoch, zero when it was never
	// claimed (see Client.Claim).
	Epoch uint64
}

// GetOffsets returns the offsets stored for a consumer group, sorted by
// topic and partition. It returns an empty slice for an unknown group.
func (c *Client) GetOffsets(ctx context.Context, group string, opts ...ReadOption) ([]Offset, error) {
	resp, err := c.getOffsets(ctx, group, opts)
	if err != nil {
		return nil, err
	}
	return toOffsets(resp), nil
}

func toOffsets(resp *statedv1.GetOffsetsResponse) []Offset {
	out := make([]Offset, 0, len(resp.GetOffsets()))
	for _, o := range resp.GetOffsets() {
		out = append(out, Offset{Group: o.GetGroup(), Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Epoch: o.GetEpoch()})
	}
	return out
}

func (c *Client) getOffsets(ctx context.Context, group string, opts []ReadOption) (*statedv1.GetOffsetsResponse, error) {
	if err := c.checkOpen("get offsets"); err != nil {
		return nil, err
	}
	req := &statedv1.GetOffsetsRequest{Group: group, Read: c.readOptions(opts)}
	var resp *statedv1.GetOffsetsResponse
	err := c.withRetries(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.rpc.GetOffsets(ctx, req)
		return err
	})
	if err != nil {
		return nil, c.rpcErr("get offsets", err)
	}
	return resp, nil
}
