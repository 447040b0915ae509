package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func (c *cli) checkpointCommand() *cobra.Command {
	cp := &cobra.Command{
		Use:   "checkpoint",
		Short: "Trigger, list, show, pin and delete checkpoints",
		Long: `A checkpoint is a consistent snapshot of all state together with the Kafka
offsets of exactly that state, uploaded to the bucket of --checkpoint-url.
The leader takes one every --checkpoint-interval; these commands ask any
node, which forwards to the leader.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cp.AddCommand(c.checkpointTrigger(), c.checkpointList(), c.checkpointShow(), c.checkpointSavepoint(), c.checkpointDelete())
	return cp
}

// withCheckpoints runs fn with a client of the daemon's Checkpoints service.
func (c *cli) withCheckpoints(cmd *cobra.Command, fn func(ctx context.Context, cp statedv1.CheckpointsClient) error) error {
	return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
		return fn(ctx, statedv1.NewCheckpointsClient(client.Conn()))
	})
}

func (c *cli) checkpointTrigger() *cobra.Command {
	var wait, asJSON bool
	cmd := &cobra.Command{
		Use:   "trigger",
		Short: "Take a checkpoint now; with --wait, until it is uploaded",
		Long: `Take a checkpoint now: the leader proposes its barrier and the command
prints its epoch once the barrier applied.

With --wait it returns once the checkpoint is uploaded and its manifest
written, drawing a progress bar of the upload on a terminal. That takes as
long as the upload takes (minutes for a large first checkpoint): --wait is
not bounded by the default --timeout, only by a --timeout you give. When
that bound is reached the command exits 2 saying what is still running;
the checkpoint goes on in the daemon (see stated checkpoint list).`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		if !wait {
			return c.withCheckpoints(cmd, func(ctx context.Context, cp statedv1.CheckpointsClient) error {
				resp, err := cp.Trigger(ctx, &statedv1.TriggerCheckpointRequest{})
				if err != nil {
					return err
				}
				if asJSON {
					return c.printJSON(map[string]uint64{"epoch": resp.GetEpoch()})
				}
				fmt.Fprintf(c.stdout, "checkpoint %d started\n", resp.GetEpoch())
				return nil
			})
		}
		cps := func(client *stated.Client) statedv1.CheckpointsClient {
			return statedv1.NewCheckpointsClient(client.Conn())
		}
		return c.withLongClient(cmd, func(ctx context.Context, client *stated.Client) error {
			_, err := cps(client).Status(ctx, &statedv1.CheckpointStatusRequest{})
			return err
		}, func(ctx context.Context, client *stated.Client) error {
			cp := cps(client)
			stop := c.showProgress(ctx, cp)
			resp, err := cp.Trigger(ctx, &statedv1.TriggerCheckpointRequest{Wait: true})
			stop()
			if err != nil {
				return err
			}
			if asJSON {
				return c.printJSON(summaryOutput(resp.GetSummary()))
			}
			s := resp.GetSummary()
			if s.GetChangelog() {
				fmt.Fprintf(c.stdout, "checkpoint %d completed: a changelog checkpoint on the tables of checkpoint %d, %d segments; %d files, %s\n",
					s.GetEpoch(), s.GetChangelogBaseEpoch(), s.GetChangelogSegments(), s.GetFiles(), humanBytes(s.GetBytes()))
				return nil
			}
			fmt.Fprintf(c.stdout, "checkpoint %d completed: %d files, %s, %s\n", s.GetEpoch(), s.GetFiles(), humanBytes(s.GetBytes()), keysOrWhyNot(s.GetKeys(), s.GetKeysNotCounted()))
			return nil
		}, func(ctx context.Context, client *stated.Client) string {
			return c.checkpointStill(ctx, cps(client))
		})
	})
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the checkpoint is uploaded (a progress bar on a terminal); bounded only by an explicit --timeout")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// checkpointStill says what a checkpoint --wait gave up on is doing.
func (c *cli) checkpointStill(ctx context.Context, cp statedv1.CheckpointsClient) string {
	st, err := cp.Status(ctx, &statedv1.CheckpointStatusRequest{})
	if err == nil && st.GetInProgressEpoch() != 0 {
		progress := ""
		if total := st.GetInProgressBytesTotal(); total > 0 {
			progress = fmt.Sprintf(" (%s of %s sent)", humanBytes(st.GetInProgressBytesDone()), humanBytes(total))
		}
		return fmt.Sprintf("checkpoint %d is still uploading%s after %s (--timeout); it goes on in the daemon: see `stated checkpoint list` and `stated status`",
			st.GetInProgressEpoch(), progress, c.timeout)
	}
	return fmt.Sprintf("the checkpoint did not complete within %s (--timeout); it may still be starting, or have finished since: see `stated checkpoint list` and `stated status`", c.timeout)
}

// showProgress draws a progress bar of the upload in progress while the
// output is a terminal; the returned func stops it.
func (c *cli) showProgress(ctx context.Context, cp statedv1.CheckpointsClient) func() {
	f, ok := c.stderr.(*os.File)
	if !ok || !isTerminal(f) {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var bar *progressbar.ProgressBar
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				if bar != nil {
					bar.Finish()
					fmt.Fprintln(f)
				}
				return
			case <-t.C:
			}
			st, err := cp.Status(ctx, &statedv1.CheckpointStatusRequest{})
			if err != nil || st.GetInProgressEpoch() == 0 || st.GetInProgressBytesTotal() == 0 {
				continue
			}
			if bar == nil {
				bar = progressbar.NewOptions64(int64(st.GetInProgressBytesTotal()),
					progressbar.OptionSetWriter(f), progressbar.OptionShowBytes(true),
					progressbar.OptionSetDescription(fmt.Sprintf("checkpoint %d", st.GetInProgressEpoch())),
					progressbar.OptionThrottle(100*time.Millisecond))
			}
			bar.Set64(int64(st.GetInProgressBytesDone()))
		}
	}()
	return func() { cancel(); <-done }
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// checkpointOutput is one checkpoint in `checkpoint list --json`.
type checkpointOutput struct {
	Epoch      uint64    `json:"epoch"`
	RaftIndex  uint64    `json:"raft_index"`
	RaftTerm   uint64    `json:"raft_term"`
	CreatedAt  time.Time `json:"created_at"`
	ClusterID  string    `json:"cluster_id"`
	Files      uint64    `json:"files"`
	Bytes      uint64    `json:"bytes"`
	Keys       uint64    `json:"keys"`
	StateBytes uint64    `json:"state_bytes"`
	// KeysNotCounted, set for a table checkpoint whose Keys and
	// StateBytes were not counted (zero), says why.
	KeysNotCounted string `json:"keys_not_counted,omitempty"`
	Offsets        uint64 `json:"partitions_with_offsets"`
	Savepoint      string `json:"savepoint,omitempty"`
	// Kind is "tables" or "changelog"; a changelog checkpoint's state is
	// the tables of ChangelogBaseEpoch plus ChangelogSegments segments of
	// Raft log entries, and its keys are not counted.
	Kind               string `json:"kind"`
	ChangelogBaseEpoch uint64 `json:"changelog_base_epoch,omitempty"`
	ChangelogSegments  uint64 `json:"changelog_segments,omitempty"`
	// Encrypted says a restore needs --checkpoint-key-url; the keeper
	// is the kind of key (base64key, awskms, ...), never the key.
	Encrypted        bool   `json:"encrypted"`
	EncryptionKeeper string `json:"encryption_keeper,omitempty"`
}

// checkpointKind names a checkpoint's kind.
func checkpointKind(s *statedv1.CheckpointSummary) string {
	if s.GetChangelog() {
		return "changelog"
	}
	return "tables"
}

// keysOf is a checkpoint's key count for a table, or "-" when it has
// none (the table's notes below it say why).
func keysOf(s *statedv1.CheckpointSummary) string {
	if s.GetChangelog() || s.GetKeysNotCounted() != "" {
		return "-"
	}
	return strconv.FormatUint(s.GetKeys(), 10)
}

// keysOrWhyNot is a table checkpoint's "N keys", or "keys not counted
// (why)" when its manifest says they were not.
func keysOrWhyNot(keys uint64, notCounted string) string {
	if notCounted != "" {
		return "keys not counted (" + notCounted + ")"
	}
	return fmt.Sprintf("%d keys", keys)
}

func summaryOutput(s *statedv1.CheckpointSummary) checkpointOutput {
	return checkpointOutput{
		Epoch: s.GetEpoch(), RaftIndex: s.GetRaftIndex(), RaftTerm: s.GetRaftTerm(),
		CreatedAt: time.UnixMilli(s.GetCreatedAtUnixMillis()).UTC(), ClusterID: s.GetClusterId(),
		Files: s.GetFiles(), Bytes: s.GetBytes(), Keys: s.GetKeys(), StateBytes: s.GetStateBytes(), KeysNotCounted: s.GetKeysNotCounted(),
		Offsets: s.GetOffsets(), Savepoint: s.GetSavepoint(),
		Kind: checkpointKind(s), ChangelogBaseEpoch: s.GetChangelogBaseEpoch(), ChangelogSegments: s.GetChangelogSegments(),
		Encrypted: s.GetEncrypted(), EncryptionKeeper: s.GetEncryptionKeeper(),
	}
}

func (c *cli) checkpointList() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the completed checkpoints in the bucket, oldest first",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		return c.withCheckpoints(cmd, func(ctx context.Context, cp statedv1.CheckpointsClient) error {
			resp, err := cp.List(ctx, &statedv1.ListCheckpointsRequest{})
			if err != nil {
				return err
			}
			for _, un := range resp.GetUnreadable() {
				fmt.Fprintf(c.stderr, "warning: %s does not read, and is left out (retention deletes nothing while it is in the bucket): %s\n", un.GetKey(), un.GetError())
			}
			if asJSON {
				out := []checkpointOutput{}
				for _, s := range resp.GetCheckpoints() {
					out = append(out, summaryOutput(s))
				}
				return c.printJSON(out)
			}
			if len(resp.GetCheckpoints()) == 0 {
				fmt.Fprintln(c.stderr, "no completed checkpoints in the bucket")
				return nil
			}
			w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "EPOCH\tCREATED\tAGE\tRAFT INDEX\tFILES\tSIZE\tKEYS\tSAVEPOINT")
			var changelog []string // "EPOCH on BASE" of the changelog checkpoints
			var encrypted []string // epochs of the encrypted checkpoints
			var uncounted []string // epochs of the table checkpoints whose keys were not counted
			for _, s := range resp.GetCheckpoints() {
				at := time.UnixMilli(s.GetCreatedAtUnixMillis())
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.GetEpoch(), at.UTC().Format(time.RFC3339), time.Since(at).Round(time.Second),
					s.GetRaftIndex(), s.GetFiles(), humanBytes(s.GetBytes()), keysOf(s), orDash(s.GetSavepoint()))
				if s.GetChangelog() {
					changelog = append(changelog, fmt.Sprintf("%d on %d", s.GetEpoch(), s.GetChangelogBaseEpoch()))
				}
				if s.GetEncrypted() {
					encrypted = append(encrypted, strconv.FormatUint(s.GetEpoch(), 10))
				}
				if s.GetKeysNotCounted() != "" {
					uncounted = append(uncounted, strconv.FormatUint(s.GetEpoch(), 10))
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(changelog) > 0 {
				// Below the table, so that its columns stay as they were.
				fmt.Fprintf(c.stdout, "changelog checkpoints (the tables of an earlier checkpoint plus Raft log entries; keys not counted): %s\n", strings.Join(changelog, ", "))
			}
			if len(uncounted) > 0 {
				fmt.Fprintf(c.stdout, "keys not counted (stated checkpoint show EPOCH says why): %s\n", strings.Join(uncounted, ", "))
			}
			if len(encrypted) > 0 {
				fmt.Fprintf(c.stdout, "encrypted checkpoints (a restore needs --checkpoint-key-url): %s\n", strings.Join(encrypted, ", "))
			}
			return nil
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func (c *cli) checkpointShow() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show EPOCH|latest|SAVEPOINT",
		Short: "Show a checkpoint's manifest: offsets and files",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		req, err := checkpointSelector(args[0])
		if err != nil {
			return err
		}
		return c.withCheckpoints(cmd, func(ctx context.Context, cp statedv1.CheckpointsClient) error {
			m, err := cp.Get(ctx, req)
			if err != nil {
				return err
			}
			if asJSON {
				return c.printJSON(manifestOutput(m))
			}
			s := m.GetSummary()
			w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "epoch:\t%d\n", s.GetEpoch())
			if s.GetSavepoint() != "" {
				fmt.Fprintf(w, "savepoint:\t%s\n", s.GetSavepoint())
			}
			at := time.UnixMilli(s.GetCreatedAtUnixMillis())
			fmt.Fprintf(w, "created:\t%s (%s ago)\n", at.UTC().Format(time.RFC3339), time.Since(at).Round(time.Second))
			fmt.Fprintf(w, "raft index, term:\t%d, %d\n", s.GetRaftIndex(), s.GetRaftTerm())
			fmt.Fprintf(w, "cluster id:\t%s\n", s.GetClusterId())
			if s.GetChangelog() {
				fmt.Fprintf(w, "kind:\tchangelog: the tables of checkpoint %d and %d segments of Raft log entries, replayed at restore\n", s.GetChangelogBaseEpoch(), s.GetChangelogSegments())
				fmt.Fprintf(w, "state:\tnot counted (a changelog checkpoint)\n")
			} else if why := s.GetKeysNotCounted(); why != "" {
				fmt.Fprintf(w, "state:\tnot counted (%s)\n", why)
			} else {
				fmt.Fprintf(w, "state:\t%d keys, %s\n", s.GetKeys(), humanBytes(s.GetStateBytes()))
			}
			fmt.Fprintf(w, "files:\t%d, %s\n", s.GetFiles(), humanBytes(s.GetBytes()))
			if s.GetEncrypted() {
				fmt.Fprintf(w, "encrypted:\tyes, key kind %s (a restore needs --checkpoint-key-url)\n", orDash(s.GetEncryptionKeeper()))
			} else {
				fmt.Fprintf(w, "encrypted:\tno\n")
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if len(m.GetOffsets()) > 0 {
				fmt.Fprintln(c.stdout, "\noffsets:")
				w = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "GROUP\tTOPIC\tPARTITION\tOFFSET")
				for _, o := range m.GetOffsets() {
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", o.GetGroup(), o.GetTopic(), o.GetPartition(), o.GetOffset())
				}
				return w.Flush()
			}
			return nil
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifest as JSON, files included")
	return cmd
}

func checkpointSelector(arg string) (*statedv1.GetCheckpointRequest, error) {
	if arg == "" {
		return nil, &exitError{code: exitUsage, err: errors.New("checkpoint: give an epoch, latest or a savepoint name")}
	}
	if arg == "latest" {
		return &statedv1.GetCheckpointRequest{Latest: true}, nil
	}
	if n, err := strconv.ParseUint(arg, 10, 64); err == nil {
		if n == 0 {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("checkpoint: epoch 0 does not exist; epochs start at 1")}
		}
		return &statedv1.GetCheckpointRequest{Epoch: n}, nil
	}
	return &statedv1.GetCheckpointRequest{Savepoint: arg}, nil
}

type offsetRow struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

type fileRow struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type manifestJSON struct {
	checkpointOutput
	FormatVersion int32       `json:"format_version"`
	OffsetList    []offsetRow `json:"offsets"`
	FileList      []fileRow   `json:"files"`
}

func manifestOutput(m *statedv1.CheckpointManifest) manifestJSON {
	out := manifestJSON{checkpointOutput: summaryOutput(m.GetSummary()), FormatVersion: m.GetFormatVersion(), OffsetList: []offsetRow{}, FileList: []fileRow{}}
	for _, o := range m.GetOffsets() {
		out.OffsetList = append(out.OffsetList, offsetRow{o.GetGroup(), o.GetTopic(), o.GetPartition(), o.GetOffset()})
	}
	for _, f := range m.GetFiles() {
		out.FileList = append(out.FileList, fileRow{f.GetPath(), f.GetSize(), f.GetSha256()})
	}
	return out
}

func (c *cli) checkpointSavepoint() *cobra.Command {
	var epoch uint64
	cmd := &cobra.Command{
		Use:   "savepoint NAME",
		Short: "Pin a completed checkpoint (the latest, or --epoch) under NAME; retention keeps it",
		Long: `Pin a completed checkpoint (the latest, or --epoch) under NAME, 1 to 128 of
[A-Za-z0-9._-]; retention keeps it and its files until
stated checkpoint delete --savepoint NAME.

The command returns once the pin is written and every file of the
checkpoint is confirmed in the bucket; if retention on another node is
deleting files at that moment, it waits for it to end (up to a minute). It
is not bounded by the default --timeout, only by a --timeout you give.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		return c.withLongClient(cmd, nil, func(ctx context.Context, client *stated.Client) error {
			resp, err := statedv1.NewCheckpointsClient(client.Conn()).Savepoint(ctx, &statedv1.SavepointRequest{Epoch: epoch, Name: args[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "checkpoint %d pinned as savepoint %q\n", resp.GetEpoch(), args[0])
			return nil
		}, func(context.Context, *stated.Client) string {
			return fmt.Sprintf("savepoint %q was not confirmed within %s (--timeout) and was abandoned; see `stated checkpoint list` for whether it is pinned", args[0], c.timeout)
		})
	})
	cmd.Flags().Uint64Var(&epoch, "epoch", 0, "the checkpoint to pin (default: the latest)")
	return cmd
}

func (c *cli) checkpointDelete() *cobra.Command {
	var savepoint, force bool
	cmd := &cobra.Command{
		Use:   "delete EPOCH | delete --savepoint NAME",
		Short: "Delete a checkpoint's manifest (its files go at the next GC), or with --savepoint a savepoint's pin",
		Long: `Delete a checkpoint's manifest; its files go at the next garbage collection
unless another kept checkpoint uses them. A checkpoint pinned as a
savepoint is refused until its savepoint is deleted (--savepoint NAME).

The newest completed checkpoint is refused unless --force: Kafka's
committed offsets and the offsets stated reports as checkpointed are that
checkpoint's. Without it they point past every checkpoint a restore could
use, so a restore before the next checkpoint completes would skip the
records in between. Take a new checkpoint first (checkpoint trigger
--wait), or pass --force if that is what you want.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		req := &statedv1.DeleteCheckpointRequest{Force: force}
		what := ""
		if savepoint && force {
			return &exitError{code: exitUsage, err: errors.New("checkpoint delete: --force is for a checkpoint's epoch; a savepoint is deleted without it")}
		}
		if savepoint {
			req.Savepoint, what = args[0], fmt.Sprintf("savepoint %q", args[0])
		} else {
			n, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || n == 0 {
				return &exitError{code: exitUsage, err: fmt.Errorf("checkpoint delete: %q is not an epoch (a number from 1); --savepoint deletes a savepoint", args[0])}
			}
			req.Epoch, what = n, fmt.Sprintf("checkpoint %d", n)
		}
		return c.withCheckpoints(cmd, func(ctx context.Context, cp statedv1.CheckpointsClient) error {
			if _, err := cp.Delete(ctx, req); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s deleted\n", what)
			return nil
		})
	})
	cmd.Flags().BoolVar(&savepoint, "savepoint", false, "delete the savepoint NAME (the pin), not a checkpoint")
	cmd.Flags().BoolVar(&force, "force", false, "delete the newest completed checkpoint too, leaving Kafka's committed offsets ahead of every restorable checkpoint until the next one")
	return cmd
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
