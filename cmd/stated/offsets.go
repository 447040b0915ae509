package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	stated "github.com/statedhq/stated/sdk/go"
)

func (c *cli) offsetsCommand() *cobra.Command {
	offsets := &cobra.Command{
		Use:   "offsets",
		Short: "Read the Kafka offsets stored in a running daemon",
		// A group command: alone it prints its help; an unknown
		// subcommand is a usage error rather than silent help.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var asJSON bool
	get := &cobra.Command{
		Use:   "get GROUP",
		Short: "Print a consumer group's stored offsets and partition claims, by topic and partition",
		Long: `Print a consumer group's stored offsets and partition claims, one line per
partition: topic, partition, the next offset to consume ("-" when none is
stored), and the partition's claim: epoch, owner (the claimant's client id)
and state ("claimed", "released", or "-" for a partition never claimed).`,
		Args: cobra.ExactArgs(1),
	}
	get.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			g, err := client.GetGroup(ctx, args[0])
			if err != nil {
				return err
			}
			rows := groupRows(args[0], g)
			if len(rows) == 0 && !asJSON {
				fmt.Fprintf(c.stderr, "no offsets or claims stored for group %q\n", args[0])
			}
			for _, r := range rows {
				if asJSON {
					b, err := json.Marshal(r)
					if err != nil {
						return err
					}
					fmt.Fprintf(c.stdout, "%s\n", b)
					continue
				}
				offset, epoch := "", ""
				if r.Offset != nil {
					offset = strconv.FormatInt(*r.Offset, 10)
				}
				if r.Epoch != 0 {
					epoch = strconv.FormatUint(r.Epoch, 10)
				}
				fmt.Fprintf(c.stdout, "%s\t%d\t%s\t%s\t%s\t%s\n", r.Topic, r.Partition, orDash(offset), orDash(epoch), orDash(r.Owner), orDash(r.State))
			}
			return nil
		})
	})
	get.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per partition")
	offsets.AddCommand(get)
	return offsets
}

// offsetOutput is one partition of a group: its offset, its claim, or both.
type offsetOutput struct {
	Group     string     `json:"group"`
	Topic     string     `json:"topic"`
	Partition int32      `json:"partition"`
	Offset    *int64     `json:"offset,omitempty"`
	Epoch     uint64     `json:"epoch,omitempty"`
	Owner     string     `json:"owner,omitempty"`
	State     string     `json:"claim,omitempty"`
	ClaimedAt *time.Time `json:"claimed_at,omitempty"`
}

// groupRows merges a group's offsets and claims, both sorted by topic and
// partition, into one row per partition in that order.
func groupRows(group string, g stated.GroupState) []offsetOutput {
	type tp struct {
		topic     string
		partition int32
	}
	rows := map[tp]*offsetOutput{}
	var order []tp
	row := func(topic string, p int32) *offsetOutput {
		k := tp{topic, p}
		if r, ok := rows[k]; ok {
			return r
		}
		r := &offsetOutput{Group: group, Topic: topic, Partition: p}
		rows[k] = r
		order = append(order, k)
		return r
	}
	for _, o := range g.Offsets {
		off := o.Offset
		row(o.Topic, o.Partition).Offset = &off
	}
	for _, c := range g.Claims {
		r := row(c.Topic, c.Partition)
		r.Epoch, r.Owner, r.State = c.Epoch, c.Owner, "claimed"
		if c.Released {
			r.State = "released"
		}
		at := c.ClaimedAt.UTC()
		r.ClaimedAt = &at
	}
	slices.SortFunc(order, func(a, b tp) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	out := make([]offsetOutput, len(order))
	for i, k := range order {
		out[i] = *rows[k]
	}
	return out
}
