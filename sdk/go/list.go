package stated

import (
	"context"
	"fmt"
)

// List is a typed handle on the lists of one namespace: each string key
// holds a list of values of type T in append order. It is safe for
// concurrent use.
type List[T any] struct {
	c     *Client
	ns    string
	codec Codec[T]
}

// NewList returns a handle on the lists of namespace, with values encoded
// with codec.
func NewList[T any](c *Client, namespace string, codec Codec[T]) *List[T] {
	return &List[T]{c: c, ns: namespace, codec: codec}
}

// Append appends val to the list at key, in a commit of its own.
func (l *List[T]) Append(ctx context.Context, key string, val T, opts ...WriteOption) error {
	t := l.c.Txn()
	l.In(t).Append(key, val, opts...)
	_, err := t.Commit(ctx)
	return err
}

// Read returns the list at key in append order, without expired elements;
// an empty list if there is none.
func (l *List[T]) Read(ctx context.Context, key string, opts ...ReadOption) ([]T, error) {
	var out []T
	for e, err := range l.c.Scan(ctx, ScanQuery{Namespace: l.ns, Kind: KindList, Key: []byte(key)}, opts...) {
		if err != nil {
			return nil, err
		}
		v, err := l.codec.Decode(e.Value)
		if err != nil {
			return nil, codecError(fmt.Sprintf("decode element %d of list %q in %q", len(out), key, l.ns), err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Clear empties the list at key, in a commit of its own. The wire contract
// has no per-kind delete, so Clear removes everything stored under key in
// the namespace, of every kind; give each handle its own namespace.
func (l *List[T]) Clear(ctx context.Context, key string) error {
	_, err := l.c.Txn().Delete(l.ns, []byte(key)).Commit(ctx)
	return err
}

// In returns the handle's operations as part of txn.
func (l *List[T]) In(txn *Txn) ListTx[T] { return ListTx[T]{l: l, t: txn} }

// ListTx adds a List's writes to a Txn. An encoding error is kept by the
// Txn and returned by its Commit, which then sends nothing.
type ListTx[T any] struct {
	l *List[T]
	t *Txn
}

// Append appends val to the list at key when the Txn commits.
func (x ListTx[T]) Append(key string, val T, opts ...WriteOption) ListTx[T] {
	b, err := x.l.codec.Encode(val)
	if err != nil {
		x.t.setErr(codecError(fmt.Sprintf("encode element of list %q in %q", key, x.l.ns), err))
		return x
	}
	x.t.ListAppend(x.l.ns, []byte(key), b, opts...)
	return x
}

// Clear empties the list at key when the Txn commits; like List.Clear, it
// removes everything under key, of every kind.
func (x ListTx[T]) Clear(key string) ListTx[T] {
	x.t.Delete(x.l.ns, []byte(key))
	return x
}
