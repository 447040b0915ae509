package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/statedhq/stated/daemon"
)

// cacheSizeHelp is the help of --cache-size.
const cacheSizeHelp = `size of the block cache of the state's Pebble: decoded blocks of the state, sharing the space with the memtables (64 MiB each, reserved in it), ` +
	`e.g. 64MiB, 512MB, 1GiB (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024, a bare number is bytes); at least 1MiB. ` +
	`Larger state with reads spread over it wants a larger cache; size the container's memory limit with it (docs/OPERATIONS.md, Memory)`

// windowCacheSizeHelp is the help of --window-cache-size.
const windowCacheSizeHelp = `memory for the cache of window aggregates the state machine keeps, so that adding a record to a window does not read its aggregate through the state store: ` +
	`about 110 bytes a window, taken only as windows are added (the default holds about 1.2 million). ` +
	`A size such as 64MiB, 1GiB or bytes; 0 turns the cache off (docs/OPERATIONS.md, Memory)`

// maxInflightRequestHelp is the help of --max-inflight-request-bytes.
const maxInflightRequestHelp = `bytes of commit requests of 1 MiB or more this node works on at once (each costs several times its size until applied); ` +
	`a large request beyond it waits, bounded by its deadline, and one larger than it is worked on alone; smaller requests never wait for it. ` +
	`A size such as 128MiB, 512MB or bytes; at least 1MiB (docs/OPERATIONS.md, Memory)`

// minFreeDiskHelp is the help of --min-free-disk.
const minFreeDiskHelp = `as leader, refuse commits (RESOURCE_EXHAUSTED, nothing applied) while the data dir's disk has less free space than this, ` +
	`so that stated's writes never fill it (a full disk stops the state store's flushes and can crash the process); reads and checkpoints go on. ` +
	`A size such as 128MiB, 1GiB or bytes; 0 turns the check off (docs/OPERATIONS.md, A full data disk)`

// raftSnapshotBytesHelp is the help of --raft-snapshot-bytes.
const raftSnapshotBytesHelp = `also take a Raft snapshot once the log since the last one holds this many bytes (a snapshot refers to the state instead of copying it, so it is cheap): ` +
	`bounds what a restart replays and the log's disk with large commits, which --raft-snapshot-threshold counts as entries. ` +
	`A size such as 256MiB, 1GiB, 500MB or bytes; 0 snapshots by entries only`

// changelogMemoryHelp is the help of --checkpoint-changelog-memory.
const changelogMemoryHelp = `with --checkpoint-materialize-interval: the leader keeps up to this many bytes of the Raft log entries it applied since the last checkpoint in memory, ` +
	`and makes the next changelog segment from them rather than reading them back from the Raft log; past it, the segment is read from the log. ` +
	`A size such as 64MiB, 256MB or bytes; 0 keeps none`

// byteUnits are the suffixes a size may carry, longest first so that
// "MiB" is not read as "B" after a number "12Mi".
var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// parseByteSize parses a whole number of bytes with an optional unit
// (case-insensitive): 64MiB, 512MB, 1GiB, 1048576.
func parseByteSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: want a whole number with an optional unit, e.g. 64MiB, 512MB, 1GiB", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// formatByteSize is n in the largest unit that divides it exactly, as
// parseByteSize reads it back: 128MiB, 512MB, 1000.
func formatByteSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// sizeValue is the value of a size flag (--cache-size,
// --raft-snapshot-bytes). A bad value is refused when it is set, from the
// command line, the environment or a config file.
type sizeValue struct {
	p *int64
	// hint follows an error parsing the size, if set.
	hint string
	// check, if set, refuses a size out of the flag's range; its error
	// follows "<value> is ".
	check func(int64) error
}

// cacheSizeValue is the value of --cache-size: at least
// daemon.CheckCacheSize's minimum.
func cacheSizeValue(p *int64) sizeValue { return sizeValue{p: p, check: daemon.CheckCacheSize} }

// snapshotBytesValue is the value of --raft-snapshot-bytes: a size, 0 for
// none.
func snapshotBytesValue(p *int64) sizeValue {
	return sizeValue{p: p, hint: "0 turns the size trigger off"}
}

func (v sizeValue) String() string {
	if v.p == nil {
		return ""
	}
	return formatByteSize(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		if v.hint != "" {
			return fmt.Errorf("%w (%s)", err, v.hint)
		}
		return err
	}
	if v.check != nil {
		if err := v.check(n); err != nil {
			return fmt.Errorf("%s is %w", s, err)
		}
	}
	*v.p = n
	return nil
}

func (v sizeValue) Type() string { return "size" }
