package stated_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// BenchmarkScanSmall is one Scan of 10 keys through the SDK against an
// in-process daemon on its unix socket: the opening attempt (bounded by
// the attempt timeout) and one batch.
func BenchmarkScanSmall(b *testing.B) {
	d := daemontest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	txn := c.Txn()
	for i := range 10 {
		txn.Put("ns", fmt.Appendf(nil, "k%02d", i), []byte("v"))
	}
	if _, err := txn.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		for _, err := range c.Scan(ctx, stated.ScanQuery{Namespace: "ns"}) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 10 {
			b.Fatalf("scanned %d keys", n)
		}
	}
}
