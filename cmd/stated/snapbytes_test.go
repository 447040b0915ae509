package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaftSnapshotBytesRefusesABadSizeNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		msg  string
	}{
		{"flag not a size", nil, []string{"--raft-snapshot-bytes", "lots"}, `invalid argument "lots" for "--raft-snapshot-bytes"`},
		{"flag negative", nil, []string{"--raft-snapshot-bytes", "-1MiB"}, `invalid argument "-1MiB" for "--raft-snapshot-bytes"`},
		{"env", map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "1.5GiB"}, nil, `STATED_RAFT_SNAPSHOT_BYTES: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "raft-snapshot-bytes: 12x\n")}, `key "raft-snapshot-bytes": value "12x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			r := cliRun(t, tc.env, append([]string{"run", "--data-dir", dataDir}, tc.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitUsage, tc.msg)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created: %v", err)
			}
		})
	}
}

func TestPrintConfigShowsTheRaftSnapshotBytesAndItsSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, nil, `raft-snapshot-bytes: "256MiB"  # default`},
		{map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "0"}, nil, `raft-snapshot-bytes: "0"  # env STATED_RAFT_SNAPSHOT_BYTES`},
		{nil, []string{"--config", writeConfig(t, "raft-snapshot-bytes: 1GiB\n")}, `raft-snapshot-bytes: "1GiB"  # file`},
		{map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "64MiB"}, []string{"--raft-snapshot-bytes", "500MB"}, `raft-snapshot-bytes: "500MB"  # flag`},
		{nil, []string{"--raft-snapshot-bytes", "1048576"}, `raft-snapshot-bytes: "1MiB"  # flag`},
	} {
		r := cliRun(t, tc.env, append([]string{"run", "--print-config"}, tc.args...)...)
		if r.code != exitOK {
			t.Fatalf("%v %v: exit %d, stderr %q", tc.env, tc.args, r.code, r.stderr)
		}
		if got := printedLine(t, r.stdout, "raft-snapshot-bytes"); got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.env, tc.args, got, tc.want)
		}
	}
	// What --print-config prints is a config file run accepts.
	r := cliRun(t, nil, "run", "--print-config", "--raft-snapshot-bytes", "0")
	file := writeConfig(t, r.stdout)
	r = cliRun(t, nil, "run", "--print-config", "--config", file)
	if got := printedLine(t, r.stdout, "raft-snapshot-bytes"); r.code != exitOK || got != `raft-snapshot-bytes: "0"  # file` {
		t.Errorf("read back: exit %d, %q, stderr %q", r.code, got, r.stderr)
	}
}
