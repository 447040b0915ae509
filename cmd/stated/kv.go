package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	stated "github.com/statedhq/stated/sdk/go"
)

func (c *cli) kvCommand() *cobra.Command {
	kv := &cobra.Command{
		Use:   "kv",
		Short: "Read and write keyed state in a running daemon",
		// A group command: alone it prints its help; an unknown
		// subcommand is a usage error rather than silent help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	kv.AddCommand(c.kvPut(), c.kvGet(), c.kvDel(), c.kvDelPrefix(), c.kvScan(), c.kvAdd())
	return kv
}

func (c *cli) kvPut() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "put NS KEY VALUE",
		Short: "Set the value of a key",
		Args:  cobra.ExactArgs(3),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		if ttl < 0 {
			return &exitError{code: exitUsage, err: fmt.Errorf("--ttl %s is negative", ttl)}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			var opts []stated.WriteOption
			if ttl > 0 {
				opts = append(opts, stated.WithTTL(ttl))
			}
			_, err := client.Txn().Put(args[0], []byte(args[1]), []byte(args[2]), opts...).Commit(ctx)
			return err
		})
	})
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "expire the value after this long (0 never)")
	return cmd
}

func (c *cli) kvGet() *cobra.Command {
	var kind, subKey, consistency string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get NS KEY",
		Short: "Read a value, a counter or a map entry",
		Args:  cobra.ExactArgs(2),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		ns, key := args[0], args[1]
		readOpts, err := consistencyOption(consistency)
		if err != nil {
			return err
		}
		switch kind {
		case "value", "counter":
			if subKey != "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--sub-key is only for --kind map")}
			}
		case "map":
			if subKey == "" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--kind map needs --sub-key")}
			}
		default:
			return &exitError{code: exitUsage, err: fmt.Errorf("--kind %q: want value, counter or map", kind)}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			out := getOutput{Namespace: ns, Key: key, Kind: kind}
			switch kind {
			case "counter":
				// The SDK reads a counter that was never added to as 0.
				n, err := client.GetCounter(ctx, ns, []byte(key), readOpts...)
				if err != nil {
					return err
				}
				out.Counter = &n
			default:
				var item stated.Item
				var found bool
				var err error
				if kind == "map" {
					item, found, err = client.MapGet(ctx, ns, []byte(key), []byte(subKey), readOpts...)
				} else {
					item, found, err = client.Get(ctx, ns, []byte(key), readOpts...)
				}
				if err != nil {
					return err
				}
				if !found {
					if kind == "map" {
						return &notFoundError{ns: ns, key: key, what: fmt.Sprintf("map entry %q", subKey)}
					}
					holds, err := otherKinds(ctx, client, ns, key, readOpts)
					if err != nil {
						return err
					}
					return &notFoundError{ns: ns, key: key, holds: holds}
				}
				out.setValue(item.Value)
				out.setExpiry(item.ExpiresAt)
				out.AppliedIndex = item.AppliedIndex
				if kind == "map" {
					out.SubKey = subKey
				}
			}
			return c.printGet(out, asJSON)
		})
	})
	f := cmd.Flags()
	f.StringVar(&kind, "kind", "value", "what to read: value, counter or map")
	f.StringVar(&subKey, "sub-key", "", "the map entry to read (with --kind map)")
	f.StringVar(&consistency, "consistency", "", "local, session or linearizable (default: the SDK's)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// consistencyOption turns --consistency into SDK read options.
func consistencyOption(s string) ([]stated.ReadOption, error) {
	switch s {
	case "":
		return nil, nil
	case "local":
		return []stated.ReadOption{stated.WithConsistency(stated.ConsistencyLocal)}, nil
	case "session":
		return []stated.ReadOption{stated.WithConsistency(stated.ConsistencySession)}, nil
	case "linearizable":
		return []stated.ReadOption{stated.WithConsistency(stated.ConsistencyLinearizable)}, nil
	}
	return nil, &exitError{code: exitUsage, err: fmt.Errorf("--consistency %q: want local, session or linearizable", s)}
}

func (c *cli) kvDel() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "del NS KEY",
		Short: "Delete everything stored under a key, of every kind",
		Args:  cobra.ExactArgs(2),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			_, err := client.Txn().Delete(args[0], []byte(args[1])).Commit(ctx)
			return err
		})
	})
	return cmd
}

func (c *cli) kvDelPrefix() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "del-prefix NS PREFIX",
		Short: `Delete every key that starts with PREFIX ("" clears the namespace)`,
		Args:  cobra.ExactArgs(2),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			_, err := client.Txn().DeletePrefix(args[0], []byte(args[1])).Commit(ctx)
			return err
		})
	})
	return cmd
}

func (c *cli) kvAdd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add NS KEY DELTA",
		Short: "Add DELTA (a signed integer) to a counter",
		Args:  cobra.ExactArgs(3),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		delta, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("DELTA %q is not a 64-bit integer", args[2])}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			_, err := client.Txn().CounterAdd(args[0], []byte(args[1]), delta).Commit(ctx)
			return err
		})
	})
	return cmd
}

func (c *cli) kvScan() *cobra.Command {
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "scan NS [PREFIX]",
		Short: "List the entries of a namespace in key order",
		Args:  cobra.RangeArgs(1, 2),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		if limit < 0 {
			return &exitError{code: exitUsage, err: fmt.Errorf("--limit %d is negative", limit)}
		}
		q := stated.ScanQuery{Namespace: args[0], Limit: limit}
		if len(args) == 2 {
			q.Prefix = []byte(args[1])
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			for e, err := range client.Scan(ctx, q) {
				if err != nil {
					return err
				}
				if err := c.printEntry(args[0], e, asJSON); err != nil {
					return err
				}
			}
			return nil
		})
	})
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "stop after N entries (0 for all)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per entry")
	return cmd
}

// kindHints says how the command line reads each kind of state.
var kindHints = map[stated.Kind]string{
	stated.KindCounter: "a counter (--kind counter reads it)",
	stated.KindMap:     "a map (--kind map --sub-key S reads an entry, stated kv scan lists it)",
	stated.KindList:    "a list (stated kv scan lists it)",
}

// otherKinds describes the kinds of state other than a value that key
// holds in ns (counter, map, list), with a scan of at most one entry of
// each.
func otherKinds(ctx context.Context, client *stated.Client, ns, key string, opts []stated.ReadOption) ([]string, error) {
	var holds []string
	for _, q := range []stated.ScanQuery{
		{Namespace: ns, Kind: stated.KindCounter, Start: []byte(key), End: []byte(key + "\x00"), Limit: 1},
		{Namespace: ns, Kind: stated.KindMap, Key: []byte(key), Limit: 1},
		{Namespace: ns, Kind: stated.KindList, Key: []byte(key), Limit: 1},
	} {
		for _, err := range client.Scan(ctx, q, opts...) {
			if err != nil {
				return nil, err
			}
			holds = append(holds, kindHints[q.Kind])
		}
	}
	return holds, nil
}
