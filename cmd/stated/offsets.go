package main

import (
	"context"
	"encoding/json"
	"fmt"

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
		Short: "Print the offsets stored for a consumer group, by topic and partition",
		Args:  cobra.ExactArgs(1),
	}
	get.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			offs, err := client.GetOffsets(ctx, args[0])
			if err != nil {
				return err
			}
			if len(offs) == 0 && !asJSON {
				fmt.Fprintf(c.stderr, "no offsets stored for group %q\n", args[0])
			}
			for _, o := range offs {
				if asJSON {
					b, err := json.Marshal(offsetOutput{Group: args[0], Topic: o.Topic, Partition: o.Partition, Offset: o.Offset})
					if err != nil {
						return err
					}
					fmt.Fprintf(c.stdout, "%s\n", b)
					continue
				}
				fmt.Fprintf(c.stdout, "%s\t%d\t%d\n", o.Topic, o.Partition, o.Offset)
			}
			return nil
		})
	})
	get.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per offset")
	offsets.AddCommand(get)
	return offsets
}

type offsetOutput struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}
