package stated

import (
	"context"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Counter is a handle on the counters of one namespace: each string key
// holds an int64 that the daemon adds to, so concurrent adds from any
// number of clients never lose an update. It is safe for concurrent use.
type Counter struct {
	c  *Client
	ns string
}

// NewCounter returns a handle on the counters of namespace.
func NewCounter(c *Client, namespace string) *Counter {
	return &Counter{c: c, ns: namespace}
}

// Add adds delta (which may be negative) to the counter at key, in a
// commit of its own.
func (n *Counter) Add(ctx context.Context, key string, delta int64, opts ...WriteOption) error {
	_, err := n.c.Txn().CounterAdd(n.ns, []byte(key), delta, opts...).Commit(ctx)
	return err
}

// Get reads the counter at key; 0 if it was never added to, was reset or
// has expired.
func (n *Counter) Get(ctx context.Context, key string, opts ...ReadOption) (int64, error) {
	return n.c.GetCounter(ctx, n.ns, []byte(key), opts...)
}

// Reset sets the counter at key back to 0, in a commit of its own. The wire
// contract has no per-kind delete, so Reset removes everything stored under
// key in the namespace, of every kind; give each handle its own namespace.
func (n *Counter) Reset(ctx context.Context, key string) error {
	_, err := n.c.Txn().Delete(n.ns, []byte(key)).Commit(ctx)
	return err
}

// In returns the handle's operations as part of txn.
func (n *Counter) In(txn *Txn) CounterTx { return CounterTx{n: n, t: txn} }

// CounterTx adds a Counter's writes to a Txn.
type CounterTx struct {
	n *Counter
	t *Txn
}

// Add adds delta to the counter at key when the Txn commits.
func (x CounterTx) Add(key string, delta int64, opts ...WriteOption) CounterTx {
	// An add that merges into its key's run allocates nothing. A new
	// run's add converts key, which is the mutation's own copy.
	ttl := ttlMillis(opts)
	if !mergeAdd(x.t, x.n.ns, key, delta, ttl) {
		x.t.add(&statedv1.Mutation{
			Kind: statedv1.MutationKind_MUTATION_KIND_COUNTER_ADD, Namespace: x.n.ns,
			Key: []byte(key), Delta: delta, TtlMillis: ttl,
		})
	}
	return x
}

// Reset sets the counter at key back to 0 when the Txn commits; like
// Counter.Reset, it removes everything under key, of every kind.
func (x CounterTx) Reset(key string) CounterTx {
	x.t.Delete(x.n.ns, []byte(key))
	return x
}
