package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
)

// README.md, "Restore, and the extent of recovery": "stated restore checks
// everything it can before writing anything"; cmd/stated/doc.go: exit 64
// when "the command line itself was wrong (... wrong arguments or flags)";
// project rule: bad input gets a clear error that names the field and
// changes nothing.
//
// A malformed --raft-addr or --advertise-raft-addr (no port, a port above
// 65535) was only found when the restore bootstrapped the cluster, after it
// downloaded the checkpoint and wrote the state into the data dir: the
// command exited 1 with "recovery: bootstrap the restored state: raftstore:
// config: RaftBind ..." (naming no flag), and left a data dir holding
// state/ but no raft/, which the corrected command then refused ("the data
// dir is not empty ... --force replaces them").
func TestRestoreRefusesABadRaftAddrBeforeWritingTheDataDir(t *testing.T) {
	t.Parallel()
	bucket := (&url.URL{Scheme: "file", Path: t.TempDir()}).String()
	d := daemontest.Start(t, func(c *daemon.Config) { c.CheckpointURL = bucket; c.CheckpointInterval = 0 })
	mustSucceed(t, client(t, d, "kv", "add", "ns", "clicks", "7"))
	mustSucceed(t, client(t, d, "checkpoint", "trigger", "--wait"))

	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"raft addr without a port", []string{"--raft-addr", "nope"}, "--raft-addr"},
		{"raft addr port above 65535", []string{"--raft-addr", "127.0.0.1:70000"}, "--raft-addr"},
		{"advertised raft addr without a port", []string{"--raft-addr", freeAddr(t), "--advertise-raft-addr", "nope"}, "--advertise-raft-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new")
			args := append([]string{"restore", "--from", bucket, "--data-dir", dir, "--node-id", "r1"}, tc.args...)
			r := cliRun(t, nil, args...)
			if r.code != 64 {
				t.Errorf("exit %d, want 64 (a wrong flag); stderr %q", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.flag) {
				t.Errorf("stderr %q does not name %s", r.stderr, tc.flag)
			}
			if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("the refused restore wrote the data dir: it holds %v", names)
			}
		})
	}
}
