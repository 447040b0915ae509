package test

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stated "github.com/statedhq/stated/sdk/go"
)

// TestSDKClaimFencesTheEarlierOwner: two SDK clients believe they own one
// partition; only the newest claim's commits apply, and the zombie gets a
// *FencedError that says who holds the partition now.
func TestSDKClaimFencesTheEarlierOwner(t *testing.T) {
	t.Parallel()
	ctx, a, d := sdkSetup(t, stated.WithClientID("proc-a"))
	b := sdkDial(ctx, t, "unix://"+d.SocketPath(), stated.WithClientID("proc-b"))
	parts := []stated.TopicPartition{{Topic: "orders", Partition: 0}}
	counts := stated.NewCounter(a, "counts")

	ca, err := a.Claim(ctx, "g", parts)
	must(t, err)
	if ca[0].Epoch != 1 || ca[0].HasOffset {
		t.Fatalf("first claim = %+v, want epoch 1 and no offset", ca[0])
	}
	_, err = a.Update(ctx, func(txn *stated.Txn) error {
		counts.In(txn).Add("k", 1)
		txn.CommitClaimedOffset("g", ca[0], 10)
		return nil
	})
	must(t, err)

	cb, err := b.Claim(ctx, "g", parts)
	must(t, err)
	if cb[0].Epoch != 2 || !cb[0].HasOffset || cb[0].Offset != 10 {
		t.Fatalf("second claim = %+v, want epoch 2 resuming at 10", cb[0])
	}
	_, err = a.Update(ctx, func(txn *stated.Txn) error {
		counts.In(txn).Add("k", 1)
		txn.CommitClaimedOffset("g", ca[0], 11)
		return nil
	})
	var fe *stated.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, stated.ErrFailedPrecondition) || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("zombie commit: err = %v, want a *FencedError matching ErrFailedPrecondition", err)
	}
	if fe.Group != "g" || fe.Topic != "orders" || fe.Partition != 0 || fe.Epoch != 1 || fe.CurrentEpoch != 2 || fe.Owner != "proc-b" {
		t.Fatalf("FencedError = %+v", fe)
	}
	_, err = b.Update(ctx, func(txn *stated.Txn) error {
		stated.NewCounter(b, "counts").In(txn).Add("k", 1)
		txn.CommitClaimedOffset("g", cb[0], 11)
		return nil
	})
	must(t, err)
	if n, err := counts.Get(ctx, "k", stated.WithConsistency(stated.ConsistencyLinearizable)); err != nil || n != 2 {
		t.Fatalf("counter = %d, %v; want 2: the zombie's add must not apply", n, err)
	}

	g, err := a.GetGroup(ctx, "g", stated.WithConsistency(stated.ConsistencyLinearizable))
	must(t, err)
	if len(g.Offsets) != 1 || g.Offsets[0].Offset != 11 || g.Offsets[0].Epoch != 2 ||
		len(g.Claims) != 1 || g.Claims[0].Owner != "proc-b" || g.Claims[0].Released || g.Claims[0].ClaimedAt.IsZero() {
		t.Fatalf("group = %+v", g)
	}
	must(t, b.Release(ctx, "g", cb))
	g, err = a.GetGroup(ctx, "g")
	must(t, err)
	if !g.Claims[0].Released {
		t.Fatalf("claim after release = %+v, want released", g.Claims[0])
	}
}
