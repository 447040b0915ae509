package stated

import (
	"context"
	"fmt"
	"iter"
	"time"
)

// Map is a typed handle on the maps of one namespace: each string key holds
// a map of string sub-keys to values of type V, ordered by sub-key. It is
// safe for concurrent use.
type Map[V any] struct {
	c     *Client
	ns    string
	codec Codec[V]
}

// NewMap returns a handle on the maps of namespace, with values encoded
// with codec.
func NewMap[V any](c *Client, namespace string, codec Codec[V]) *Map[V] {
	return &Map[V]{c: c, ns: namespace, codec: codec}
}

// Range bounds the sub-keys of a map scan. Prefix, Start (inclusive) and
// End (exclusive) are each open when empty; Limit caps the number of entries,
// zero meaning no limit.
type Range struct {
	Prefix, Start, End string
	Limit              int
}

// MapEntry is one entry of a map scan.
type MapEntry[V any] struct {
	SubKey string
	Value  V
	// ExpiresAt is when the entry expires; zero if it does not.
	ExpiresAt time.Time
}

// Get reads subKey of the map at key. found is false if there is no such
// entry, or it has expired.
func (m *Map[V]) Get(ctx context.Context, key, subKey string, opts ...ReadOption) (val V, found bool, err error) {
	item, found, err := m.c.MapGet(ctx, m.ns, []byte(key), []byte(subKey), opts...)
	if err != nil || !found {
		return val, false, err
	}
	if val, err = m.codec.Decode(item.Value); err != nil {
		var zero V
		return zero, false, codecError(m.what("decode", key, subKey), err)
	}
	return val, true, nil
}

// Put sets subKey of the map at key, in a commit of its own.
func (m *Map[V]) Put(ctx context.Context, key, subKey string, val V, opts ...WriteOption) error {
	t := m.c.Txn()
	m.In(t).Put(key, subKey, val, opts...)
	_, err := t.Commit(ctx)
	return err
}

// Delete removes subKey of the map at key, in a commit of its own.
func (m *Map[V]) Delete(ctx context.Context, key, subKey string) error {
	_, err := m.c.Txn().MapDelete(m.ns, []byte(key), []byte(subKey)).Commit(ctx)
	return err
}

// Clear removes the whole map at key, in a commit of its own. The wire
// contract has no per-kind delete, so Clear removes everything stored under
// key in the namespace, of every kind; give each handle its own namespace.
func (m *Map[V]) Clear(ctx context.Context, key string) error {
	_, err := m.c.Txn().Delete(m.ns, []byte(key)).Commit(ctx)
	return err
}

// Scan streams the entries of the map at key whose sub-keys are in r, in
// sub-key order. It behaves like Client.Scan: an error is yielded once and
// ends the scan, and breaking out of the loop ends the stream.
func (m *Map[V]) Scan(ctx context.Context, key string, r Range, opts ...ReadOption) iter.Seq2[MapEntry[V], error] {
	return func(yield func(MapEntry[V], error) bool) {
		q := ScanQuery{
			Namespace: m.ns, Kind: KindMap, Key: []byte(key),
			Prefix: []byte(r.Prefix), Start: []byte(r.Start), End: []byte(r.End), Limit: r.Limit,
		}
		for e, err := range m.c.Scan(ctx, q, opts...) {
			if err != nil {
				yield(MapEntry[V]{}, err)
				return
			}
			val, err := m.codec.Decode(e.Value)
			if err != nil {
				yield(MapEntry[V]{}, codecError(m.what("decode", key, string(e.SubKey)), err))
				return
			}
			if !yield(MapEntry[V]{SubKey: string(e.SubKey), Value: val, ExpiresAt: e.ExpiresAt}, nil) {
				return
			}
		}
	}
}

func (m *Map[V]) what(verb, key, subKey string) string {
	return fmt.Sprintf("%s map entry %q of key %q in %q", verb, subKey, key, m.ns)
}

// In returns the handle's operations as part of txn.
func (m *Map[V]) In(txn *Txn) MapTx[V] { return MapTx[V]{m: m, t: txn} }

// MapTx adds a Map's writes to a Txn. An encoding error is kept by the Txn
// and returned by its Commit, which then sends nothing.
type MapTx[V any] struct {
	m *Map[V]
	t *Txn
}

// Put sets subKey of the map at key when the Txn commits.
func (x MapTx[V]) Put(key, subKey string, val V, opts ...WriteOption) MapTx[V] {
	b, err := x.m.codec.Encode(val)
	if err != nil {
		x.t.setErr(codecError(x.m.what("encode", key, subKey), err))
		return x
	}
	x.t.MapPut(x.m.ns, []byte(key), []byte(subKey), b, opts...)
	return x
}

// Delete removes subKey of the map at key when the Txn commits.
func (x MapTx[V]) Delete(key, subKey string) MapTx[V] {
	x.t.MapDelete(x.m.ns, []byte(key), []byte(subKey))
	return x
}

// Clear removes the map at key when the Txn commits; like Map.Clear, it
// removes everything under key, of every kind.
func (x MapTx[V]) Clear(key string) MapTx[V] {
	x.t.Delete(x.m.ns, []byte(key))
	return x
}
