package main

import (
	"context"
	"fmt"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	stated "github.com/statedhq/stated/sdk/go"
)

func (c *cli) clusterCommand() *cobra.Command {
	cl := &cobra.Command{
		Use:   "cluster",
		Short: "List and remove the members of a stated cluster",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cl.AddCommand(c.clusterMembers(), c.clusterRemove())
	return cl
}

// memberOutput is one member in `cluster members --json`.
type memberOutput struct {
	NodeID   string `json:"node_id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
}

type membersOutput struct {
	ClusterID string         `json:"cluster_id"`
	LeaderID  string         `json:"leader_id"`
	Members   []memberOutput `json:"members"`
}

func (c *cli) clusterMembers() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the members as the --addr node knows them",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			ms, err := client.Members(ctx)
			if err != nil {
				return err
			}
			out := membersOutput{ClusterID: ms.ClusterID, LeaderID: ms.LeaderID, Members: []memberOutput{}}
			for _, m := range ms.Members {
				out.Members = append(out.Members, memberOutput(m))
			}
			if asJSON {
				return c.printJSON(out)
			}
			w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tRAFT ADDR\tGRPC ADDR\tVOTER\tLEADER")
			for _, m := range out.Members {
				fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%t\n", m.NodeID, m.RaftAddr, orDash(m.GRPCAddr), m.Voter, m.Leader)
			}
			return w.Flush()
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (c *cli) clusterRemove() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a member from the cluster (the --addr node forwards it to the leader)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			if err := client.RemoveMember(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "removed %s\n", args[0])
			return nil
		})
	})
	return cmd
}

// nodeStatusOutput is one member in `status --json`. Reachable is false,
// with Error saying why, for a member whose status could not be read.
type nodeStatusOutput struct {
	NodeID       string `json:"node_id"`
	GRPCAddr     string `json:"grpc_addr"`
	IsLeader     bool   `json:"is_leader"`
	Reachable    bool   `json:"reachable"`
	Role         string `json:"role,omitempty"`
	Term         uint64 `json:"term,omitempty"`
	LastLogIndex uint64 `json:"last_log_index,omitempty"`
	CommitIndex  uint64 `json:"commit_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Error        string `json:"error,omitempty"`
}

type statusOutput struct {
	ClusterID string             `json:"cluster_id"`
	LeaderID  string             `json:"leader_id"`
	Members   []nodeStatusOutput `json:"members"`
}

func (c *cli) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member's Raft state: role, term, log, commit and applied index",
		Long: `Ask the --addr node for the members, then each member for its Raft state
over its gRPC address. A member that does not answer within --timeout is
shown as unreachable.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			ms, err := client.Members(ctx)
			if err != nil {
				return err
			}
			out := statusOutput{ClusterID: ms.ClusterID, LeaderID: ms.LeaderID, Members: make([]nodeStatusOutput, len(ms.Members))}
			var wg sync.WaitGroup
			for i, m := range ms.Members {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out.Members[i] = memberStatus(ctx, m)
				}()
			}
			wg.Wait()
			if asJSON {
				return c.printJSON(out)
			}
			return c.printStatus(out)
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// memberStatus reads m's status over its advertised gRPC address.
func memberStatus(ctx context.Context, m stated.Member) nodeStatusOutput {
	o := nodeStatusOutput{NodeID: m.NodeID, GRPCAddr: m.GRPCAddr, IsLeader: m.Leader}
	if m.GRPCAddr == "" {
		o.Error = "no gRPC address recorded for this member"
		return o
	}
	mc, err := stated.Dial(ctx, m.GRPCAddr, stated.WithoutRetries())
	if err != nil {
		o.Error = err.Error()
		return o
	}
	defer mc.Close()
	st, err := mc.NodeStatus(ctx)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Reachable = true
	o.Role, o.Term = st.Role, st.Term
	o.LastLogIndex, o.CommitIndex, o.AppliedIndex = st.LastLogIndex, st.CommitIndex, st.AppliedIndex
	if st.NodeID != m.NodeID {
		o.Error = fmt.Sprintf("the node at %s is %q, not %q", m.GRPCAddr, st.NodeID, m.NodeID)
	}
	return o
}

func (c *cli) printStatus(out statusOutput) error {
	fmt.Fprintf(c.stdout, "cluster %s, leader %s\n", orDash(out.ClusterID), orDash(out.LeaderID))
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tGRPC ADDR\tROLE\tTERM\tLAST LOG\tCOMMIT\tAPPLIED\tIS LEADER\tERROR")
	for _, m := range out.Members {
		if !m.Reachable {
			fmt.Fprintf(w, "%s\t%s\tunreachable\t-\t-\t-\t-\t%t\t%s\n", m.NodeID, orDash(m.GRPCAddr), m.IsLeader, m.Error)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%t\t%s\n", m.NodeID, m.GRPCAddr, m.Role, m.Term,
			m.LastLogIndex, m.CommitIndex, m.AppliedIndex, m.IsLeader, m.Error)
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
