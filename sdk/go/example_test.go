package stated_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	stated "github.com/statedhq/stated/sdk/go"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// These examples need a running daemon (`stated run`), so they have no
// Output lines and are compiled, not run.

func Example() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "./stated-data/stated.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	type Order struct {
		ID    string
		Cents int64
	}
	orders := stated.NewValue(c, "orders", stated.JSON[Order]())
	if err := orders.Put(ctx, "o-17", Order{ID: "o-17", Cents: 1250}, stated.WithTTL(24*time.Hour)); err != nil {
		log.Fatal(err)
	}
	// The read waits until the daemon has applied the Put: read-your-writes.
	o, found, err := orders.Get(ctx, "o-17")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, o.Cents)
}

// A batch of Kafka records and the offset after it commit together, so that
// a restore never counts a record twice.
func ExampleClient_Update() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "127.0.0.1:7420")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	clicks := stated.NewCounter(c, "clicks")
	byUser := stated.NewMap(c, "last-click", stated.String())
	records := []struct {
		User, Page string
		Offset     int64
	}{{"ann", "/home", 41}, {"bob", "/cart", 42}}

	res, err := c.Update(ctx, func(t *stated.Txn) error {
		for _, r := range records {
			clicks.In(t).Add(r.User, 1)
			byUser.In(t).Put(r.User, "page", r.Page)
		}
		last := records[len(records)-1]
		t.CommitOffset("click-counter", "clicks", 0, last.Offset+1)
		return nil
	})
	if errors.Is(err, stated.ErrInvalidArgument) {
		log.Fatalf("refused: %v", err) // the message names the bad field
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("committed at index", res.Index)

	// On restart or partition assignment: where to resume consuming.
	offsets, err := c.GetOffsets(ctx, "click-counter")
	if err != nil {
		log.Fatal(err)
	}
	for _, o := range offsets {
		fmt.Println(o.Topic, o.Partition, o.Offset)
	}
}

func ExampleClient_Scan() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "unix:///var/run/stated/stated.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	q := stated.ScanQuery{Namespace: "sessions", Prefix: []byte("user/"), Limit: 100}
	for e, err := range c.Scan(ctx, q, stated.WithConsistency(stated.ConsistencyLinearizable)) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Kind, string(e.Key), len(e.Value), e.Counter)
	}
}

func ExampleMap_Scan() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "127.0.0.1:7420")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	carts := stated.NewMap(c, "carts", stated.Int64())
	for e, err := range carts.Scan(ctx, "user-7", stated.Range{Prefix: "sku-"}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.SubKey, e.Value)
	}
}

func ExampleProto() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "127.0.0.1:7420")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Name the message type; the handle holds pointers to it.
	saved := stated.NewValue(c, "saved-offsets", stated.Proto[statedv1.Offset]())
	if err := saved.Put(ctx, "k", &statedv1.Offset{Topic: "clicks", Offset: 42}); err != nil {
		log.Fatal(err)
	}
	off, _, err := saved.Get(ctx, "k")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(off.GetOffset())
}
