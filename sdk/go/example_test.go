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

// Clicks per user per minute: define the window namespace once (at every
// start: an identical definition is a no-op), add records in the Txn that
// commits their offsets, and hand each closed window on exactly once by
// acknowledging it in the Txn that writes the result.
func ExampleClient_DefineWindows() {
	ctx := context.Background()
	c, err := stated.Dial(ctx, "./stated-data/stated.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	err = c.DefineWindows(ctx, stated.WindowSpec{
		Namespace:     "clicks-per-minute",
		Shape:         stated.Tumbling,
		Size:          time.Minute,
		Grace:         10 * time.Second, // records up to 10 s after a window's end still count
		MaxOutOfOrder: 5 * time.Second,
		Aggregate:     stated.Count,
		Emit:          stated.EmitFinal,
		Late:          stated.LateReturn,
	})
	if err != nil {
		log.Fatal(err) // ErrInvalidArgument names the field, e.g. spec.retention_ms
	}

	now := time.Now()
	res, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks-per-minute", []byte("ann"), now, stated.NoValue(), stated.FromSource("clicks/0"))
		t.CommitOffset("click-counter", "clicks", 0, 42)
		return nil
	})
	if errors.Is(err, stated.ErrOutboxFull) {
		log.Fatal("acknowledge pending emissions first")
	}
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range res.Adds {
		if a.Returned {
			fmt.Println("late:", string(a.Key), a.EventTime) // send it to a side output
		}
	}

	// Closed windows come back in the commit that closed them; after a
	// crash, read the ones still pending from the outbox.
	pending, err := c.Emissions(ctx, "clicks-per-minute", 0, 1000)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Update(ctx, func(t *stated.Txn) error {
		for _, e := range pending {
			key := fmt.Sprintf("%s/%d", e.Key, e.Start.Unix())
			t.Put("clicks-report", []byte(key), []byte(fmt.Sprint(e.Count)))
		}
		t.Ack(pending...) // atomically with the report
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
