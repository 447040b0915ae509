package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/recovery"
	"github.com/statedhq/stated/internal/redact"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
	"github.com/statedhq/stated/uploader"
)

// selector parses --checkpoint: an epoch, "latest" or a savepoint name.
// An empty one is refused (an unset shell variable would otherwise
// select the latest checkpoint), as is a name no savepoint can have.
func selector(s string) (recovery.Selector, error) {
	if s == "" {
		return recovery.Selector{}, errors.New("--checkpoint is empty: give an epoch, latest or a savepoint name")
	}
	if s == "latest" {
		return recovery.Selector{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n == 0 {
			return recovery.Selector{}, errors.New("--checkpoint 0: epochs start at 1")
		}
		return recovery.Selector{Epoch: n}, nil
	}
	if err := uploader.CheckSavepointName(s); err != nil {
		return recovery.Selector{}, fmt.Errorf("--checkpoint %q is neither an epoch, latest nor a savepoint name: %w", s, err)
	}
	return recovery.Selector{Savepoint: s}, nil
}

// openUploader opens the bucket of --from.
func openUploader(ctx context.Context, from, keyURL string) (*uploader.Uploader, func(), error) {
	if from == "" {
		return nil, nil, &exitError{code: exitUsage, err: errors.New("--from URL is required: the bucket the checkpoints are in")}
	}
	cfg := uploader.Config{Workers: 8}
	if keyURL != "" {
		k, scheme, err := uploader.OpenKeeper(ctx, keyURL)
		if err != nil {
			return nil, nil, &exitError{code: exitUsage, err: fmt.Errorf("--checkpoint-key-url: %w", err)}
		}
		cfg.Keeper, cfg.KeeperScheme = k, scheme
	}
	closeKeeper := func() {
		if cfg.Keeper != nil {
			cfg.Keeper.Close()
		}
	}
	b, err := uploader.OpenBucket(ctx, from)
	if err != nil {
		closeKeeper()
		return nil, nil, &exitError{code: exitFailed, err: err}
	}
	cfg.Bucket = b
	up, err := uploader.New(cfg)
	if err != nil {
		b.Close()
		closeKeeper()
		return nil, nil, err
	}
	return up, func() { b.Close(); closeKeeper() }, nil
}

// keyError says what to do about a checkpoint that the key given (or
// none) does not decrypt.
func keyError(err error, epoch uint64) error {
	switch {
	case errors.Is(err, uploader.ErrKeyNeeded):
		return fmt.Errorf("checkpoint %d is encrypted; give --checkpoint-key-url (the key it was written with). Nothing was written: %w", epoch, err)
	case errors.Is(err, uploader.ErrWrongKey):
		return fmt.Errorf("the key does not decrypt checkpoint %d: wrong key? Give the --checkpoint-key-url it was written with. Nothing was written: %w", epoch, err)
	}
	return err
}

// kafkaAdmin returns an admin client for --kafka-brokers, or nil.
func kafkaAdmin(brokers []string) (*kadm.Client, func(), error) {
	if len(brokers) == 0 {
		return nil, func() {}, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, nil, &exitError{code: exitUsage, err: fmt.Errorf("--kafka-brokers: %w", err)}
	}
	return kadm.NewClient(cl), cl.Close, nil
}

// checkBootstrapFlags checks, before the restore writes anything, the
// flags the node is bootstrapped with after it (--node-id given) as
// `stated run` checks them, naming the flags.
func checkBootstrapFlags(dataDir, nodeID, raftAddr, advertiseRaft, logStore string) error {
	if nodeID == "" {
		return nil
	}
	cfg := daemon.DefaultConfig()
	cfg.DataDir, cfg.NodeID, cfg.RaftAddr, cfg.AdvertiseRaftAddr, cfg.RaftLogStore = dataDir, nodeID, raftAddr, advertiseRaft, logStore
	cfg.GRPCAddr = "" // not a flag of restore
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("restore: %w", namingFlags(err))
	}
	return nil
}

func (c *cli) restoreCommand() *cobra.Command {
	var from, which, dataDir, nodeID, raftAddr, advertiseRaft, keyURL, logStore string
	var force, fallback bool
	var brokers []string
	cmd := &cobra.Command{
		Use:   "restore --from URL --data-dir DIR [--checkpoint N|latest|NAME] [--node-id ID]",
		Short: "Restore a checkpoint from a bucket into a new data dir",
		Long: `Restore reads a checkpoint's manifest from the bucket, downloads every file
in parallel, verifies the size and SHA-256 of each, and materialises the
state in --data-dir. With --node-id it then bootstraps a new single-node
cluster from it right away (a new cluster id, with the restored checkpoint
recorded) and prints the cluster id; run the node with the same --node-id
and --raft-addr. Without --node-id, ` + "`stated run --data-dir DIR`" + ` bootstraps
it on first start. Other nodes join it as usual.

Files already in the data dir with the right checksum are not downloaded
again. A non-empty data dir is refused unless --force. With
--kafka-brokers, each group's committed offsets are reset to the
checkpoint's, so that consumers that ignore stated resume at the right
place too (stop the consumers first). A missing or corrupt file fails the
restore naming the file; --fallback restores the newest intact older
checkpoint instead, and says so (only for a missing or corrupt file: a
bucket that does not answer, a key or a local disk problem fails the
restore).

The new state is staged whole beside the old one and swapped in
crash-safely: if the restore is killed at any point, the data dir holds
the old node or the restored one, whole, and the next run (or restore)
finishes the swap.

A restore takes as long as the download takes: the default --timeout,
meant for quick calls to a daemon, does not apply; a --timeout you give
bounds it, and when it is reached the restore stops, says how far it got,
and leaves the data dir as it was; past the swap only --kafka-brokers'
reset is left, and a failure there says that the data dir holds the
restored checkpoint.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		sel, err := selector(which)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		if dataDir == "" {
			return &exitError{code: exitUsage, err: errors.New("--data-dir is required")}
		}
		if err := checkBootstrapFlags(dataDir, nodeID, raftAddr, advertiseRaft, logStore); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		ctx, cancel := c.opContext(cmd)
		defer cancel()
		up, closeBucket, err := openUploader(ctx, from, keyURL)
		if err != nil {
			return err
		}
		defer closeBucket()
		adm, closeKafka, err := kafkaAdmin(brokers)
		if err != nil {
			return err
		}
		defer closeKafka()
		bar := c.downloadBar()
		res, err := recovery.Restore(ctx, recovery.RestoreOptions{
			Uploader: up, Select: sel, DataDir: dataDir, Force: force, Fallback: fallback, Kafka: adm, Progress: bar.progress,
		})
		bar.finish()
		if err != nil && res != nil {
			// Only Kafka's reset fails once the restored state is swapped
			// in: the data dir is not as it was, whatever the bound.
			return &exitError{code: exitFailed, err: fmt.Errorf("%s holds the restored checkpoint %d, but its Kafka offsets were not all reset (run the restore again with --force, or commit the checkpoint's offsets yourself): %w",
				dataDir, res.Manifest.Epoch, err)}
		}
		if boundReached(ctx, err) {
			done, total := bar.state()
			return c.stillRunning(fmt.Sprintf("restore stopped after %s (--timeout) with %s of %s downloaded; %s is left as it was; run it again with a larger --timeout, or none",
				c.timeout, humanBytes(uint64(done)), humanBytes(uint64(total)), dataDir))
		}
		if err != nil {
			// The checkpoint that failed, which with --fallback may be
			// older than the one selected.
			var epoch uint64
			var skipped []string
			if ce := (*recovery.CheckpointError)(nil); errors.As(err, &ce) {
				epoch, skipped = ce.Epoch, ce.Skipped
			} else if m, serr := recovery.Select(ctx, up, sel); serr == nil {
				epoch = m.Epoch
			}
			for _, s := range skipped {
				fmt.Fprintf(c.stderr, "skipped %s\n", s)
			}
			return &exitError{code: exitFailed, err: keyError(err, epoch)}
		}
		for _, s := range res.Skipped {
			fmt.Fprintf(c.stdout, "skipped %s\n", s)
		}
		m := res.Manifest
		if len(res.Skipped) > 0 {
			fmt.Fprintf(c.stdout, "fell back to checkpoint %d, the newest intact one before %s\n", m.Epoch, sel)
		}
		keys := keysOrWhyNot(m.Stats.Keys, m.Stats.KeysNotCounted)
		if m.Changelog != nil {
			keys = keysOrWhyNot(0, "a changelog checkpoint")
		}
		fmt.Fprintf(c.stdout, "restored checkpoint %d (%s, %s old) into %s: %s, %d files, downloaded %d (%s), kept %d already present\n",
			m.Epoch, m.CreatedAt.UTC().Format(time.RFC3339), time.Since(m.CreatedAt).Round(time.Second), dataDir,
			keys, len(m.Files), res.Download.FilesDownloaded, humanBytes(uint64(res.Download.BytesDownloaded)),
			res.Download.Files-res.Download.FilesDownloaded)
		if m.Changelog != nil {
			fmt.Fprintf(c.stdout, "replayed %d Raft log entries (%d segments, %s) onto the tables of checkpoint %d in %v\n",
				res.Replay.Entries, res.Replay.Segments, humanBytes(uint64(res.Replay.Bytes)), m.Changelog.BaseEpoch, res.Replay.Took.Round(time.Millisecond))
		}
		switch {
		case len(m.Stats.Windows) > 0:
			printWindowsRecovery(c.stdout, m.Stats.Windows)
		case m.Changelog != nil && len(res.Replay.Windows) > 0:
			// Not in the manifest: read from the state the replay made.
			printWindowsRecovery(c.stdout, recovery.WindowStats(res.Replay.Windows))
		}
		if len(res.KafkaGroups) > 0 {
			fmt.Fprintf(c.stdout, "reset Kafka's committed offsets of %s to the checkpoint's\n", strings.Join(res.KafkaGroups, ", "))
		}
		storeFlag := ""
		if logStore != "" {
			storeFlag = " --raft-log-store " + logStore
		}
		if nodeID == "" {
			fmt.Fprintf(c.stdout, "next: stated run --data-dir %s%s   (bootstraps a new cluster from it; other nodes --join it)\n", dataDir, storeFlag)
			return nil
		}
		clusterID, err := recovery.Bootstrap(ctx, recovery.BootstrapOptions{
			DataDir: dataDir, NodeID: nodeID, RaftAddr: raftAddr, AdvertiseRaftAddr: advertiseRaft, RaftLogStore: logStore,
		})
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		runFlags := fmt.Sprintf("--data-dir %s --node-id %s --raft-addr %s", dataDir, nodeID, raftAddr)
		advertised := raftAddr
		if advertiseRaft != "" {
			runFlags += " --advertise-raft-addr " + advertiseRaft
			advertised = advertiseRaft
		}
		runFlags += storeFlag
		fmt.Fprintf(c.stdout, "bootstrapped cluster %s with node %s (raft %s) from checkpoint %d\n", clusterID, nodeID, advertised, m.Epoch)
		fmt.Fprintf(c.stdout, "next: stated run %s   (other nodes --join it)\n", runFlags)
		return nil
	})
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "bucket URL the checkpoints are in (as --checkpoint-url)")
	f.StringVar(&which, "checkpoint", "latest", "checkpoint epoch, latest, or a savepoint name")
	f.StringVar(&dataDir, "data-dir", "", "data dir of the new node")
	f.BoolVar(&force, "force", false, "replace what the data dir holds")
	f.StringVar(&nodeID, "node-id", "", "bootstrap the new single-node cluster now, as this node (run it with the same --node-id)")
	f.StringVar(&raftAddr, "raft-addr", daemon.DefaultConfig().RaftAddr, "with --node-id: the Raft address the node will run with")
	f.StringVar(&advertiseRaft, "advertise-raft-addr", "", "with --node-id: the Raft address the node will advertise (as stated run --advertise-raft-addr)")
	f.Var(raftLogStoreValue{&logStore}, "raft-log-store", "the new node's "+raftLogStoreHelp+"; with --node-id the Raft log is created now, otherwise by the first stated run")
	f.BoolVar(&fallback, "fallback", false, "restore the newest intact older checkpoint when the selected one is not intact")
	f.StringSliceVar(&brokers, "kafka-brokers", nil, "Kafka brokers; reset each group's committed offsets to the checkpoint's")
	f.StringVar(&keyURL, "checkpoint-key-url", "", "the key an encrypted checkpoint was written with, as stated run --checkpoint-key-url took it: base64key://, awskms://, gcpkms:// or azurekeyvault:// (see stated run --help for the forms and credentials)")
	bindEnv(f, "checkpoint-key-url", "raft-log-store")
	return cmd
}

// downloadBar draws a progress bar on a terminal, and remembers how far
// the download got.
type downloadBar struct {
	bar         *progressbar.ProgressBar
	mu          sync.Mutex
	done, total int64
}

func (c *cli) downloadBar() *downloadBar {
	f, ok := c.stderr.(*os.File)
	if !ok || !isTerminal(f) {
		return &downloadBar{}
	}
	return &downloadBar{bar: progressbar.NewOptions64(-1, progressbar.OptionSetWriter(f), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("restore"), progressbar.OptionThrottle(100*time.Millisecond))}
}

// state returns the bytes downloaded and to download.
func (d *downloadBar) state() (done, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done, d.total
}

func (d *downloadBar) progress(done, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done, d.total = done, total
	if d.bar == nil {
		return
	}
	if d.bar.GetMax64() != total {
		d.bar.ChangeMax64(total)
	}
	d.bar.Set64(done)
}

func (d *downloadBar) finish() {
	if d.bar != nil {
		d.bar.Finish()
	}
}

func (c *cli) recoveryCommand() *cobra.Command {
	var from, which, keyURL string
	var brokers []string
	var asJSON, noVerify bool
	cmd := &cobra.Command{
		Use:   "recovery --from URL [--checkpoint N|latest|NAME] [--kafka-brokers LIST]",
		Short: "Report the extent of a recovery: what comes back, what Kafka replays, what is lost",
		Long: `Report what recovering from a checkpoint gives back: the checkpoint (epoch,
time, age, Raft index, cluster id), what it holds (keys, bytes, and each
window namespace's watermark, pending emissions and open windows), whether
every file of it is present and intact, and per group, topic and
partition the checkpoint's offset, Kafka's log start and end offsets, how
many records will be replayed, and how many can no longer be replayed
because retention deleted them (lost). Without --kafka-brokers it reports
the stated side alone.

Verifying reads every file of the checkpoint, which takes as long as it
takes: the report is not bounded by the default --timeout, only by a
--timeout you give (Kafka gets 30 s to answer; --no-verify skips the
verification).`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		sel, err := selector(which)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		if from == "" {
			if len(brokers) > 0 {
				return &exitError{code: exitUsage, err: errors.New("--kafka-brokers needs --from; without --from the daemon reports with its own brokers")}
			}
			return c.withLongClient(cmd, nil, func(ctx context.Context, client *stated.Client) error {
				cp := statedv1.NewCheckpointsClient(client.Conn())
				resp, err := cp.Recovery(ctx, &statedv1.RecoveryRequest{Epoch: sel.Epoch, Savepoint: sel.Savepoint, SkipVerify: noVerify})
				if err != nil {
					return err
				}
				return c.printRecovery(reportFromProto(resp), asJSON)
			}, func(context.Context, *stated.Client) string {
				return c.recoveryStill(noVerify)
			})
		}
		ctx, cancel := c.opContext(cmd)
		defer cancel()
		up, closeBucket, err := openUploader(ctx, from, keyURL)
		if err != nil {
			return err
		}
		defer closeBucket()
		adm, closeKafka, err := kafkaAdmin(brokers)
		if err != nil {
			return err
		}
		defer closeKafka()
		m, err := recovery.Select(ctx, up, sel)
		if boundReached(ctx, err) {
			return c.stillRunning(c.recoveryStill(noVerify))
		}
		if errors.Is(err, uploader.ErrNotFound) && sel == (recovery.Selector{}) {
			err = fmt.Errorf("the bucket at %s holds no checkpoint", redact.URL(from))
		}
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		r, err := daemon.BuildRecovery(ctx, up, m, !noVerify, adm)
		if boundReached(ctx, err) {
			return c.stillRunning(c.recoveryStill(noVerify))
		}
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		return c.printRecovery(r, asJSON)
	})
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "bucket URL the checkpoints are in (as --checkpoint-url); without it, ask the daemon at --addr")
	f.StringVar(&which, "checkpoint", "latest", "checkpoint epoch, latest, or a savepoint name")
	f.StringSliceVar(&brokers, "kafka-brokers", nil, "Kafka brokers, for each partition's log start and end (with --from)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&noVerify, "no-verify", false, "do not read every file to check its checksum")
	f.StringVar(&keyURL, "checkpoint-key-url", "", "the key of an encrypted checkpoint; not needed: checksums are checked without it")
	bindEnv(f, "checkpoint-key-url")
	return cmd
}

// recoveryStill says what a recovery report stopped by --timeout was
// doing.
func (c *cli) recoveryStill(noVerify bool) string {
	if noVerify {
		return fmt.Sprintf("the recovery report did not finish within %s (--timeout)", c.timeout)
	}
	return fmt.Sprintf("the recovery report did not finish within %s (--timeout): it was still verifying every file of the checkpoint, which reads them all; it stopped. Give a larger --timeout or none, or --no-verify to skip the verification", c.timeout)
}

// printRecovery prints r, and fails with exit 2 when Kafka did not answer.
func (c *cli) printRecovery(r *recovery.Report, asJSON bool) error {
	if asJSON {
		if err := c.printJSON(r); err != nil {
			return err
		}
	} else {
		printReport(c.stdout, r)
	}
	if r.KafkaError != "" {
		return &exitError{code: exitUnreachable, err: fmt.Errorf("Kafka: %s", r.KafkaError)}
	}
	return nil
}

// reportFromProto converts the daemon's report.
func reportFromProto(p *statedv1.RecoveryReport) *recovery.Report {
	s := p.GetCheckpoint()
	r := &recovery.Report{
		Epoch: s.GetEpoch(), Savepoint: s.GetSavepoint(), CreatedAt: time.UnixMilli(s.GetCreatedAtUnixMillis()).UTC(),
		Age: time.Duration(p.GetAgeMillis()) * time.Millisecond, RaftIndex: s.GetRaftIndex(), RaftTerm: s.GetRaftTerm(),
		ClusterID: s.GetClusterId(), Keys: s.GetKeys(), Bytes: s.GetStateBytes(), KeysNotCounted: s.GetKeysNotCounted(), Files: int(s.GetFiles()), FileBytes: int64(s.GetBytes()),
		Verified: p.GetVerified(), Intact: p.GetIntact(), KafkaChecked: p.GetKafkaChecked(), KafkaError: p.GetKafkaError(),
		Replay: p.GetReplay(), Lost: p.GetLost(), Partitions: []recovery.Partition{},
		Encrypted: s.GetEncrypted(), Keeper: s.GetEncryptionKeeper(),
		Changelog: s.GetChangelog(), ChangelogBaseEpoch: s.GetChangelogBaseEpoch(), ChangelogSegments: int(s.GetChangelogSegments()),
	}
	for _, f := range p.GetProblems() {
		r.Problems = append(r.Problems, uploader.FileProblem{Path: f.GetPath(), BlobKey: f.GetBlobKey(), Problem: f.GetProblem()})
	}
	for _, q := range p.GetPartitions() {
		r.Partitions = append(r.Partitions, recovery.Partition{Group: q.GetGroup(), Topic: q.GetTopic(), Partition: q.GetPartition(),
			CheckpointOffset: q.GetCheckpointOffset(), LogStart: q.GetLogStart(), LogEnd: q.GetLogEnd(),
			Replay: q.GetReplay(), Lost: q.GetLost(), Error: q.GetError()})
	}
	if p.GetWindowsRecorded() {
		r.Windows = []uploader.WindowStats{}
		for _, w := range p.GetWindows() {
			r.Windows = append(r.Windows, uploader.WindowStats{Namespace: w.GetNamespace(), Watermark: w.GetWatermark(),
				MaxEventTime: w.GetMaxEventTime(), Pending: w.GetPendingEmissions(), OpenWindows: w.GetOpenWindows()})
		}
	}
	return r
}

func printReport(w io.Writer, r *recovery.Report) {
	name := ""
	if r.Savepoint != "" {
		name = fmt.Sprintf(" (savepoint %q)", r.Savepoint)
	}
	fmt.Fprintf(w, "checkpoint %d%s, taken %s, %s ago, Raft index %d (term %d), cluster %s\n",
		r.Epoch, name, r.CreatedAt.UTC().Format(time.RFC3339), r.Age.Round(time.Second), r.RaftIndex, r.RaftTerm, r.ClusterID)
	if r.Changelog {
		fmt.Fprintf(w, "a changelog checkpoint: the tables of checkpoint %d plus %d segments of Raft log entries, which a restore replays onto them; keys not counted; %d files (%s)\n",
			r.ChangelogBaseEpoch, r.ChangelogSegments, r.Files, humanBytes(uint64(r.FileBytes)))
	} else if r.KeysNotCounted != "" {
		fmt.Fprintf(w, "keys not counted (%s); %d files (%s)\n", r.KeysNotCounted, r.Files, humanBytes(uint64(r.FileBytes)))
	} else {
		fmt.Fprintf(w, "holds %d keys, %s of state, in %d files (%s)\n", r.Keys, humanBytes(r.Bytes), r.Files, humanBytes(uint64(r.FileBytes)))
	}
	if r.Changelog && r.Windows == nil {
		fmt.Fprintln(w, "window namespaces: not recorded in a changelog checkpoint's manifest (a restore replays them with the rest of the state)")
	} else {
		printWindowsRecovery(w, r.Windows)
	}
	if r.Encrypted {
		keeper := r.Keeper
		if keeper == "" {
			keeper = "not recorded"
		}
		fmt.Fprintf(w, "encryption: the checkpoint's files are encrypted (keeper %s); their checksums are checked without the key; restoring needs --checkpoint-key-url with the key they were written with\n", keeper)
	}
	switch {
	case !r.Verified:
		fmt.Fprintln(w, "files: not verified (--no-verify)")
	case r.Intact:
		fmt.Fprintln(w, "files: all present and intact")
	default:
		fmt.Fprintf(w, "files: NOT INTACT, %d of %d bad; a restore of this checkpoint fails (--fallback takes an older one):\n", len(r.Problems), r.Files)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s (%s): %s\n", p.Path, p.BlobKey, p.Problem)
		}
	}
	if len(r.Partitions) == 0 {
		fmt.Fprintln(w, "no Kafka offsets in this checkpoint")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tCHECKPOINT OFFSET\tLOG START\tLOG END\tREPLAY\tLOST")
	for _, p := range r.Partitions {
		// A partition the checkpoint holds no offset for is read from
		// its start.
		at := strconv.FormatInt(p.CheckpointOffset, 10)
		if p.CheckpointOffset == recovery.NoOffset {
			at = "none"
		}
		if !r.KafkaChecked || p.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t-\t-\t-\t-\t%s\n", p.Group, p.Topic, p.Partition, at, p.Error)
			continue
		}
		lost := strconv.FormatInt(p.Lost, 10)
		if p.Lost > 0 {
			lost += " LOST"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\n", p.Group, p.Topic, p.Partition, at, p.LogStart, p.LogEnd, p.Replay, lost)
	}
	tw.Flush()
	switch {
	case r.KafkaChecked:
		fmt.Fprintf(w, "Kafka will replay %d records; %d records are lost for good (deleted by retention before they were checkpointed)\n", r.Replay, r.Lost)
		unchecked := 0
		for _, p := range r.Partitions {
			if p.Error != "" {
				unchecked++
			}
		}
		if unchecked > 0 {
			parts := "partitions"
			if unchecked == 1 {
				parts = "partition"
			}
			fmt.Fprintf(w, "%d %s not counted (the errors above): what Kafka replays of them and what of them is lost is unknown\n", unchecked, parts)
		}
	case r.KafkaError != "":
		fmt.Fprintf(w, "Kafka did not answer: %s\n", r.KafkaError)
	default:
		fmt.Fprintln(w, "Kafka not asked (--kafka-brokers with --from, or the daemon's stated run --kafka-brokers): replay and loss unknown")
	}
}

// printWindowsRecovery prints the checkpoint's window namespaces: what a
// restore brings back of each (its watermark and open windows) and the
// emissions it hands to the application again (pending).
func printWindowsRecovery(w io.Writer, ws []uploader.WindowStats) {
	switch {
	case ws == nil:
		fmt.Fprintln(w, "window namespaces: unknown (the checkpoint's manifest predates window state, or the daemon that answered does not report them)")
		return
	case len(ws) == 0:
		fmt.Fprintln(w, "window namespaces: none")
		return
	}
	fmt.Fprintf(w, "window namespaces: %d; a restore keeps their watermarks and open windows, and delivers their pending emissions again\n", len(ws))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAMESPACE\tWATERMARK\tPENDING EMISSIONS\tOPEN WINDOWS")
	for _, n := range ws {
		wm := "none yet"
		if n.Watermark >= 0 {
			wm = time.UnixMilli(n.Watermark).UTC().Format("2006-01-02T15:04:05.000Z")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", n.Namespace, wm, n.Pending, n.OpenWindows)
	}
	tw.Flush()
}
