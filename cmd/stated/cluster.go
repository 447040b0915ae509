package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	statedv1 "github.com/statedhq/stated/proto/statedv1"

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
	// Counts is the node's bookkeeping, when it answered.
	Counts *stated.StateCounts `json:"counts,omitempty"`
	// clusterID and lineageID are the node's, when it answered.
	clusterID, lineageID string
}

type statusOutput struct {
	ClusterID string `json:"cluster_id"`
	// LineageID is the cluster's lineage as its members report it:
	// ClusterID unless the cluster was restored from a checkpoint.
	LineageID        string             `json:"lineage_id,omitempty"`
	LeaderID         string             `json:"leader_id"`
	Members          []nodeStatusOutput `json:"members"`
	Checkpoints      *checkpointsOutput `json:"checkpoints,omitempty"`
	CheckpointsError string             `json:"checkpoints_error,omitempty"`
	// WindowNamespaces are the --addr node's window namespaces, as
	// `windows list` shows them.
	WindowNamespaces []namespaceOutput `json:"window_namespaces"`
	WindowsError     string            `json:"windows_error,omitempty"`
	windows          []stated.WindowStatus
}

func (c *cli) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member's Raft state, bookkeeping counts and the checkpoints",
		Long: `Ask the --addr node for the members, then each member for its Raft state
(role, term, log, commit and applied index) and its bookkeeping (open client
sessions and their lanes, entries with a TTL not yet deleted, the keyed
state's keys and bytes, and window state: namespaces, open windows and
pending emissions) over its gRPC address; then, as ` + "`windows list`" + ` does, each
window namespace's watermark, lag, open windows, pending emissions and late
records. A member that does not answer
within --timeout is shown as unreachable. Counting scans the node's state.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			ms, err := client.Members(ctx)
			if err != nil {
				return err
			}
			out := statusOutput{ClusterID: ms.ClusterID, LeaderID: ms.LeaderID, Members: make([]nodeStatusOutput, len(ms.Members))}
			tlsOpts, err := c.tlsOptions() // withClient checked it already
			if err != nil {
				return err
			}
			// The members, the checkpoints and the window namespaces at
			// once: a member that hangs until --timeout must cost only
			// its own row, not the --addr node's sections.
			var wg sync.WaitGroup
			for i, m := range ms.Members {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out.Members[i] = memberStatus(ctx, m, tlsOpts...)
				}()
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				if st, err := statedv1.NewCheckpointsClient(client.Conn()).Status(ctx, &statedv1.CheckpointStatusRequest{}); err == nil {
					out.Checkpoints = checkpointStatusOutput(st)
				} else {
					out.CheckpointsError = err.Error()
				}
			}()
			go func() {
				defer wg.Done()
				if ws, err := client.WindowStatus(ctx); err == nil {
					out.windows = ws
					out.WindowNamespaces = make([]namespaceOutput, 0, len(ws))
					for _, st := range ws {
						out.WindowNamespaces = append(out.WindowNamespaces, namespaceOutputOf(st))
					}
				} else {
					out.WindowsError = err.Error()
				}
			}()
			wg.Wait()
			for i, m := range out.Members {
				if m.clusterID != "" && m.clusterID != ms.ClusterID && m.Error == "" {
					out.Members[i].Error = fmt.Sprintf("the node at %s belongs to cluster %s, not %s", m.GRPCAddr, m.clusterID, ms.ClusterID)
				}
				if m.clusterID == ms.ClusterID && out.LineageID == "" {
					out.LineageID = m.lineageID
				}
			}
			if asJSON {
				return c.printJSON(out)
			}
			return c.printStatus(out)
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// memberStatus reads m's status over its advertised gRPC address; opts
// carry the client's TLS settings.
func memberStatus(ctx context.Context, m stated.Member, opts ...stated.Option) nodeStatusOutput {
	o := nodeStatusOutput{NodeID: m.NodeID, GRPCAddr: m.GRPCAddr, IsLeader: m.Leader}
	if m.GRPCAddr == "" {
		o.Error = "no gRPC address recorded for this member"
		return o
	}
	mc, err := stated.Dial(ctx, m.GRPCAddr, append(opts, stated.WithoutRetries(), stated.WithLazySession())...)
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
	o.Counts = &st.Counts
	o.clusterID, o.lineageID = st.ClusterID, st.LineageID
	if st.NodeID != m.NodeID {
		o.Error = fmt.Sprintf("the node at %s is %q, not %q", m.GRPCAddr, st.NodeID, m.NodeID)
	}
	return o
}

func (c *cli) printStatus(out statusOutput) error {
	restored := ""
	if out.LineageID != "" && out.LineageID != out.ClusterID {
		restored = fmt.Sprintf(" (restored; lineage %s)", out.LineageID)
	}
	fmt.Fprintf(c.stdout, "cluster %s%s, leader %s\n", orDash(out.ClusterID), restored, orDash(out.LeaderID))
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
	if err := w.Flush(); err != nil {
		return err
	}
	if err := c.printCounts(out); err != nil {
		return err
	}
	switch {
	case out.WindowsError != "":
		fmt.Fprintf(c.stdout, "\nwindow namespaces: unknown (%s)\n", out.WindowsError)
	case len(out.windows) > 0:
		fmt.Fprintln(c.stdout)
		if err := c.printWindowNamespaces(out.windows); err != nil {
			return err
		}
	}
	return c.printCheckpointStatus(out)
}

// printCounts prints each reachable member's bookkeeping.
func (c *cli) printCounts(out statusOutput) error {
	fmt.Fprintln(c.stdout)
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSESSIONS\tSESSION LANES\tTTL PENDING\tSTATE KEYS\tSTATE BYTES\tWINDOW NAMESPACES\tOPEN WINDOWS\tPENDING EMISSIONS")
	for _, m := range out.Members {
		if k := m.Counts; k != nil {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", m.NodeID, k.Sessions, k.SessionLanes, k.TTLPending, k.StateKeys, k.StateBytes,
				k.WindowNamespaces, k.OpenWindows, k.PendingEmissions)
		}
	}
	return w.Flush()
}

// checkpointsOutput is the checkpoint part of `status`.
type checkpointsOutput struct {
	Bucket             string            `json:"bucket"`
	IntervalSeconds    float64           `json:"interval_seconds"`
	Retain             int32             `json:"retain"`
	SharesDiskWithData bool              `json:"shares_disk_with_data"`
	LastCompleted      *checkpointOutput `json:"last_completed,omitempty"`
	LastAgeSeconds     float64           `json:"last_age_seconds,omitempty"`
	LastDurationMillis int64             `json:"last_duration_millis,omitempty"`
	LastBytesUploaded  uint64            `json:"last_bytes_uploaded"`
	LastFilesUploaded  uint64            `json:"last_files_uploaded"`
	Completed          uint64            `json:"completed"`
	Failures           uint64            `json:"failures"`
	LastError          string            `json:"last_error,omitempty"`
	KafkaError         string            `json:"kafka_error,omitempty"`
	KafkaMemberGroups  []string          `json:"kafka_member_groups,omitempty"`
	InProgressEpoch    uint64            `json:"in_progress_epoch,omitempty"`
	Coordinator        string            `json:"coordinator"`
	LastCount          *countOutput      `json:"last_count,omitempty"`
	// CountingEpoch is the checkpoint whose keys are being counted.
	CountingEpoch uint64 `json:"counting_epoch,omitempty"`
	// MaterializeIntervalSeconds is --checkpoint-materialize-interval
	// (0: every checkpoint uploads its tables); the changelog fields are
	// the changelog checkpoints' (see CheckpointStatus in the proto).
	MaterializeIntervalSeconds float64 `json:"materialize_interval_seconds"`
	ChangelogBaseEpoch         uint64  `json:"changelog_base_epoch,omitempty"`
	ChangelogBytes             uint64  `json:"changelog_bytes,omitempty"`
	ChangelogCheckpoints       uint64  `json:"changelog_checkpoints"`
}

// countOutput is how the last count of a checkpoint's state that ended
// was made, and of which checkpoint (epoch): from the checkpoint at
// base_epoch (whole_reason empty) or whole.
type countOutput struct {
	Epoch          uint64 `json:"epoch"`
	WholeReason    string `json:"whole_reason,omitempty"`
	BaseEpoch      uint64 `json:"base_epoch,omitempty"`
	TablesRead     uint64 `json:"tables_read"`
	TableBytesRead uint64 `json:"table_bytes_read"`
	KeysCompared   uint64 `json:"keys_compared"`
	RangesCompared uint64 `json:"ranges_compared"`
	DurationMillis int64  `json:"duration_millis"`
	// TablesFromProperties and KeysFromProperties: in a whole count, the
	// tables counted from their properties and the keys they hold.
	TablesFromProperties uint64 `json:"tables_from_properties"`
	KeysFromProperties   uint64 `json:"keys_from_properties"`
}

// String is the count as `stated status` prints it.
func (n *countOutput) String() string {
	if n.WholeReason != "" {
		return fmt.Sprintf("whole in %dms (%s): %d keys from %d tables' properties, the rest read",
			n.DurationMillis, n.WholeReason, n.KeysFromProperties, n.TablesFromProperties)
	}
	return fmt.Sprintf("from epoch %d in %dms: read %d changed tables (%s), compared %d keys and %d deleted ranges",
		n.BaseEpoch, n.DurationMillis, n.TablesRead, humanBytes(n.TableBytesRead), n.KeysCompared, n.RangesCompared)
}

// countLine is the status's line on the last count, given the last
// completed checkpoint lc: "its keys ..." when the count is lc's.
func countLine(n *countOutput, lc *checkpointOutput) string {
	switch {
	case lc != nil && n.Epoch == lc.Epoch:
		return "its keys and bytes counted " + n.String()
	case lc != nil && lc.KeysNotCounted != "":
		return fmt.Sprintf("its keys not counted (%s); the last count, of epoch %d, %s", lc.KeysNotCounted, n.Epoch, n.String())
	default:
		return fmt.Sprintf("the last count, of epoch %d, %s", n.Epoch, n.String())
	}
}

func checkpointStatusOutput(st *statedv1.CheckpointStatus) *checkpointsOutput {
	out := &checkpointsOutput{
		Bucket: st.GetBucket(), IntervalSeconds: float64(st.GetIntervalMillis()) / 1000, Retain: st.GetRetain(),
		SharesDiskWithData: st.GetSharesDiskWithData(), LastDurationMillis: st.GetLastDurationMillis(),
		LastBytesUploaded: st.GetLastBytesUploaded(), LastFilesUploaded: st.GetLastFilesUploaded(),
		Completed: st.GetCompleted(), Failures: st.GetFailures(), LastError: st.GetLastError(),
		KafkaError: st.GetKafkaError(), KafkaMemberGroups: st.GetKafkaMemberGroups(), InProgressEpoch: st.GetInProgressEpoch(), Coordinator: st.GetNodeId(),
		MaterializeIntervalSeconds: float64(st.GetMaterializeIntervalMillis()) / 1000, ChangelogBaseEpoch: st.GetChangelogBaseEpoch(),
		ChangelogBytes: st.GetChangelogBytes(), ChangelogCheckpoints: st.GetChangelogCheckpoints(), CountingEpoch: st.GetCountingEpoch(),
	}
	if s := st.GetLastCompleted(); s != nil {
		o := summaryOutput(s)
		out.LastCompleted = &o
		out.LastAgeSeconds = time.Since(o.CreatedAt).Seconds()
	}
	if n := st.GetLastCount(); n != nil {
		out.LastCount = &countOutput{
			Epoch: n.GetEpoch(), WholeReason: n.GetWholeReason(), BaseEpoch: n.GetBaseEpoch(), TablesRead: n.GetTablesRead(), TableBytesRead: n.GetTableBytesRead(),
			KeysCompared: n.GetKeysCompared(), RangesCompared: n.GetRangesCompared(), DurationMillis: n.GetDurationMillis(),
			TablesFromProperties: n.GetTablesFromProperties(), KeysFromProperties: n.GetKeysFromProperties(),
		}
	}
	return out
}

func (c *cli) printCheckpointStatus(out statusOutput) error {
	if out.Checkpoints == nil {
		fmt.Fprintf(c.stdout, "\ncheckpoints: unknown (%s)\n", out.CheckpointsError)
		return nil
	}
	st := out.Checkpoints
	fmt.Fprintf(c.stdout, "\ncheckpoints to %s every %gs, keeping %d (coordinator %s)\n", st.Bucket, st.IntervalSeconds, st.Retain, st.Coordinator)
	if st.SharesDiskWithData {
		fmt.Fprintln(c.stdout, "  warning: the bucket is on the data dir's disk; losing that disk loses both")
	}
	if st.MaterializeIntervalSeconds > 0 {
		fmt.Fprintf(c.stdout, "  changelog checkpoints: the tables at most every %gs; %d completed", st.MaterializeIntervalSeconds, st.ChangelogCheckpoints)
		if st.ChangelogBaseEpoch != 0 {
			fmt.Fprintf(c.stdout, ", %s of changelog on the tables of epoch %d", humanBytes(st.ChangelogBytes), st.ChangelogBaseEpoch)
		}
		fmt.Fprintln(c.stdout)
	}
	if lc := st.LastCompleted; lc != nil {
		kind := ""
		if lc.Kind == "changelog" {
			kind = fmt.Sprintf(" (changelog on epoch %d, %d segments)", lc.ChangelogBaseEpoch, lc.ChangelogSegments)
		}
		fmt.Fprintf(c.stdout, "  last completed: epoch %d%s, %s ago, took %dms, uploaded %d files (%s) of %d\n", lc.Epoch, kind,
			time.Duration(st.LastAgeSeconds*float64(time.Second)).Round(time.Second), st.LastDurationMillis,
			st.LastFilesUploaded, humanBytes(st.LastBytesUploaded), lc.Files)
		switch {
		case st.LastCount != nil:
			fmt.Fprintf(c.stdout, "  %s\n", countLine(st.LastCount, lc))
		case lc.KeysNotCounted != "":
			fmt.Fprintf(c.stdout, "  its keys not counted (%s)\n", lc.KeysNotCounted)
		}
	} else {
		fmt.Fprintln(c.stdout, "  last completed: none since the coordinator started")
	}
	fmt.Fprintf(c.stdout, "  completed %d, failed %d\n", st.Completed, st.Failures)
	if st.InProgressEpoch != 0 {
		fmt.Fprintf(c.stdout, "  in progress: epoch %d\n", st.InProgressEpoch)
	}
	if st.CountingEpoch != 0 {
		fmt.Fprintf(c.stdout, "  counting the keys of epoch %d\n", st.CountingEpoch)
	}
	if st.LastError != "" {
		fmt.Fprintf(c.stdout, "  last error: %s\n", st.LastError)
	}
	if st.KafkaError != "" {
		fmt.Fprintf(c.stdout, "  kafka: %s\n", st.KafkaError)
	}
	if len(st.KafkaMemberGroups) > 0 {
		fmt.Fprintf(c.stdout, "  kafka: groups with live members commit their own checkpointed offsets: %s\n", strings.Join(st.KafkaMemberGroups, ", "))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
