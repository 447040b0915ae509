package stated

import (
	"context"
	"fmt"
)

// Value is a typed handle on the plain values of one namespace: each string
// key holds one T, encoded with a Codec. It is safe for concurrent use.
type Value[T any] struct {
	c     *Client
	ns    string
	codec Codec[T]
}

// NewValue returns a handle on the values of namespace, encoded with codec.
func NewValue[T any](c *Client, namespace string, codec Codec[T]) *Value[T] {
	return &Value[T]{c: c, ns: namespace, codec: codec}
}

// Get reads the value at key. found is false if there is none, or it has
// expired. A value the codec cannot decode is an error matching ErrCodec.
func (v *Value[T]) Get(ctx context.Context, key string, opts ...ReadOption) (val T, found bool, err error) {
	item, found, err := v.c.Get(ctx, v.ns, []byte(key), opts...)
	if err != nil || !found {
		return val, false, err
	}
	if val, err = v.codec.Decode(item.Value); err != nil {
		var zero T
		return zero, false, codecError(fmt.Sprintf("decode value of key %q in %q", key, v.ns), err)
	}
	return val, true, nil
}

// Put sets the value at key, in a commit of its own.
func (v *Value[T]) Put(ctx context.Context, key string, val T, opts ...WriteOption) error {
	t := v.c.Txn()
	v.In(t).Put(key, val, opts...)
	_, err := t.Commit(ctx)
	return err
}

// Delete removes key, in a commit of its own. Like Txn.Delete, it removes
// everything stored under key in the namespace, of every kind.
func (v *Value[T]) Delete(ctx context.Context, key string) error {
	_, err := v.c.Txn().Delete(v.ns, []byte(key)).Commit(ctx)
	return err
}

// In returns the handle's operations as part of txn.
func (v *Value[T]) In(txn *Txn) ValueTx[T] { return ValueTx[T]{v: v, t: txn} }

// ValueTx adds a Value's writes to a Txn. An encoding error is kept by the
// Txn and returned by its Commit, which then sends nothing.
type ValueTx[T any] struct {
	v *Value[T]
	t *Txn
}

// Put sets the value at key when the Txn commits.
func (x ValueTx[T]) Put(key string, val T, opts ...WriteOption) ValueTx[T] {
	b, err := x.v.codec.Encode(val)
	if err != nil {
		x.t.setErr(codecError(fmt.Sprintf("encode value of key %q in %q", key, x.v.ns), err))
		return x
	}
	x.t.Put(x.v.ns, []byte(key), b, opts...)
	return x
}

// Delete removes key, of every kind, when the Txn commits.
func (x ValueTx[T]) Delete(key string) ValueTx[T] {
	x.t.Delete(x.v.ns, []byte(key))
	return x
}
