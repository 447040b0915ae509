package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaftLogStoreRefusesAnUnknownStoreNamingWhereItCameFrom(t *testing.T) {
	t.Parallel()
	file := writeConfig(t, "raft-log-store: bolt\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		msg  string
	}{
		{"flag", nil, []string{"--raft-log-store", "bolt"}, `invalid argument "bolt" for "--raft-log-store"`},
		{"env", map[string]string{"STATED_RAFT_LOG_STORE": "bolt"}, nil, `STATED_RAFT_LOG_STORE: value "bolt"`},
		{"file", nil, []string{"--config", file}, `key "raft-log-store": value "bolt"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			r := cliRun(t, tc.env, append([]string{"run", "--data-dir", dataDir}, tc.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) || !strings.Contains(r.stderr, "want wal or boltdb") {
				t.Errorf("exit %d, stderr %q; want 64, %q and the stores", r.code, r.stderr, tc.msg)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data dir was created: %v", err)
			}
		})
	}
}

func TestPrintConfigShowsTheRaftLogStoreAndItsSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, nil, `raft-log-store: ""  # default`},
		{map[string]string{"STATED_RAFT_LOG_STORE": "wal"}, nil, `raft-log-store: "wal"  # env STATED_RAFT_LOG_STORE`},
		{nil, []string{"--config", writeConfig(t, "raft-log-store: boltdb\n")}, `raft-log-store: "boltdb"  # file`},
		{map[string]string{"STATED_RAFT_LOG_STORE": "wal"}, []string{"--raft-log-store", "boltdb"}, `raft-log-store: "boltdb"  # flag`},
	} {
		r := cliRun(t, tc.env, append([]string{"run", "--print-config"}, tc.args...)...)
		if r.code != exitOK {
			t.Fatalf("%v %v: exit %d, stderr %q", tc.env, tc.args, r.code, r.stderr)
		}
		if got := printedLine(t, r.stdout, "raft-log-store"); got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.env, tc.args, got, tc.want)
		}
	}
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
