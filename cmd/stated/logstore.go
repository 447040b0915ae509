package main

import "github.com/statedhq/stated/daemon"

// raftLogStoreHelp is the help of --raft-log-store, for run and restore.
const raftLogStoreHelp = `store of the Raft log: wal (raft-wal: segment files, one fsync per append) or boltdb (raft-boltdb: one bbolt file, two fsyncs per append); ` +
	`default: the data dir's own store, wal for a new data dir (a data dir created when boltdb was the default stays on boltdb). ` +
	`The store of an existing data dir cannot be switched in place: to move a node, start it with a new data dir and --join (docs/OPERATIONS.md)`

// raftLogStoreValue is the value of --raft-log-store: "wal", "boltdb",
// or empty for the data dir's own store. A bad value is refused when it
// is set, from the command line, the environment or a config file.
type raftLogStoreValue struct{ p *string }

func (v raftLogStoreValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v raftLogStoreValue) Set(s string) error {
	if err := daemon.CheckRaftLogStore(s); err != nil {
		return err
	}
	*v.p = s
	return nil
}

func (v raftLogStoreValue) Type() string { return "string" }
