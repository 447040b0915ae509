package main

import "fmt"

// raftSnapshotBytesHelp is the help of --raft-snapshot-bytes.
const raftSnapshotBytesHelp = `also take a Raft snapshot once the log since the last one holds this many bytes, or the size of the state at the last snapshot if larger: ` +
	`bounds what a restart replays and the log's disk with large commits, which --raft-snapshot-threshold counts as entries. ` +
	`A size such as 256MiB, 1GiB, 500MB or bytes; 0 snapshots by entries only`

// snapshotBytesValue is the value of --raft-snapshot-bytes: a size, 0 for
// none. A bad value is refused when it is set, from the command line, the
// environment or a config file.
type snapshotBytesValue struct{ p *int64 }

func (v snapshotBytesValue) String() string {
	if v.p == nil {
		return ""
	}
	return formatByteSize(*v.p)
}

func (v snapshotBytesValue) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return fmt.Errorf("%w (0 turns the size trigger off)", err)
	}
	*v.p = n
	return nil
}

func (v snapshotBytesValue) Type() string { return "size" }
