package main

import "testing"

func TestRaftSnapshotBytesRefusesABadSizeNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	checkRefusedNamingSource(t, []sourceCase{
		{"flag not a size", nil, []string{"--raft-snapshot-bytes", "lots"}, `invalid argument "lots" for "--raft-snapshot-bytes"`},
		{"flag negative", nil, []string{"--raft-snapshot-bytes", "-1MiB"}, `invalid argument "-1MiB" for "--raft-snapshot-bytes"`},
		{"env", map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "1.5GiB"}, nil, `STATED_RAFT_SNAPSHOT_BYTES: value "1.5GiB"`},
		{"file", nil, []string{"--config", writeConfig(t, "raft-snapshot-bytes: 12x\n")}, `key "raft-snapshot-bytes": value "12x"`},
	})
}

func TestPrintConfigShowsTheRaftSnapshotBytesAndItsSource(t *testing.T) {
	t.Parallel()
	checkPrintedWithSource(t, "raft-snapshot-bytes", []sourceCase{
		{"default", nil, nil, `raft-snapshot-bytes: "256MiB"  # default`},
		{"env", map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "0"}, nil, `raft-snapshot-bytes: "0"  # env STATED_RAFT_SNAPSHOT_BYTES`},
		{"file", nil, []string{"--config", writeConfig(t, "raft-snapshot-bytes: 1GiB\n")}, `raft-snapshot-bytes: "1GiB"  # file`},
		{"flag over env", map[string]string{"STATED_RAFT_SNAPSHOT_BYTES": "64MiB"}, []string{"--raft-snapshot-bytes", "500MB"}, `raft-snapshot-bytes: "500MB"  # flag`},
		{"flag in bytes", nil, []string{"--raft-snapshot-bytes", "1048576"}, `raft-snapshot-bytes: "1MiB"  # flag`},
	})
	checkPrintedConfigReadsBack(t, "raft-snapshot-bytes", "0", `raft-snapshot-bytes: "0"  # file`)
}
