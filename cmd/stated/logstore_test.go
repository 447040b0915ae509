package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaftLogStoreRefusesAnUnknownStoreNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	checkRefusedNamingSource(t, []sourceCase{
		{"flag", nil, []string{"--raft-log-store", "bolt"}, `invalid argument "bolt" for "--raft-log-store"`},
		{"env", map[string]string{"STATED_RAFT_LOG_STORE": "bolt"}, nil, `STATED_RAFT_LOG_STORE: value "bolt"`},
		{"file", nil, []string{"--config", writeConfig(t, "raft-log-store: bolt\n")}, `key "raft-log-store": value "bolt"`},
	}, "want wal or boltdb")
}

func TestPrintConfigShowsTheRaftLogStoreAndItsSource(t *testing.T) {
	t.Parallel()
	checkPrintedWithSource(t, "raft-log-store", []sourceCase{
		{"default", nil, nil, `raft-log-store: ""  # default`},
		{"env", map[string]string{"STATED_RAFT_LOG_STORE": "wal"}, nil, `raft-log-store: "wal"  # env STATED_RAFT_LOG_STORE`},
		{"file", nil, []string{"--config", writeConfig(t, "raft-log-store: boltdb\n")}, `raft-log-store: "boltdb"  # file`},
		{"flag over env", map[string]string{"STATED_RAFT_LOG_STORE": "wal"}, []string{"--raft-log-store", "boltdb"}, `raft-log-store: "boltdb"  # flag`},
	})
}

// TestRunRefusesADataDirOfTheOtherRaftLogStoreAndOpensItsOwnWithoutTheFlag:
// a node whose data dir was created with wal stops, naming the flag and
// the store it found, when run with boltdb; without the flag it runs on
// its own store.
func TestRunRefusesADataDirOfTheOtherRaftLogStoreAndOpensItsOwnWithoutTheFlag(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--node-id", "n1", "--raft-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--socket", shortSocket(t)}
	_, _, stop := startRun(t, nil, append(args, "--raft-log-store", "wal")...)
	if code := stop(); code != exitOK {
		t.Fatalf("run --raft-log-store wal exited %d", code)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft", "wal")); err != nil {
		t.Fatalf("no raft/wal after run --raft-log-store wal: %v", err)
	}

	r := cliRun(t, nil, append([]string{"run"}, append(args, "--raft-log-store", "boltdb")...)...)
	for _, want := range []string{"Raft log is wal (raft/wal/)", "--raft-log-store boltdb cannot open it", "start with --raft-log-store wal"} {
		if r.code == exitOK || !strings.Contains(r.stderr, want) {
			t.Errorf("run --raft-log-store boltdb on a wal data dir: exit %d, stderr %q; want a failure saying %q", r.code, r.stderr, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft", "raft.db")); !os.IsNotExist(err) {
		t.Fatalf("the refused run created raft/raft.db (%v)", err)
	}

	_, stderr, stop := startRun(t, nil, args...)
	if code := stop(); code != exitOK {
		t.Fatalf("run without --raft-log-store on the wal data dir exited %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "store=wal") {
		t.Errorf("run without the flag did not open the data dir's wal log; logs:\n%s", stderr.String())
	}
}
