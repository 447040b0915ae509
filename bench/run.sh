#!/usr/bin/env bash
# bench/run.sh: stated's benchmarks and their references in one run, one
# markdown table. bench/README.md explains every row; --help the knobs.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: bash bench/run.sh [--growth] [--help]

Runs, in one go and on one machine, stated's benchmarks and the references
they are compared with, and prints one markdown table (medians over
BENCH_COUNT runs, each row with its reference from the same run and the
ratio) to stdout and to bench/out/<UTC time>.md; the raw `go test -bench`
output goes to bench/out/<UTC time>.txt (benchstat reads it).

What runs (bench/README.md describes each row):
  the machine   fsync of 4 KiB (p50/p99); 4 KiB written in place and
                fdatasynced, as the Raft log syncs, back to back and after
                300 µs idle; sequential write of 256 MB; all in the data
                dir's filesystem
  raw Pebble    synced batches of 1, 100, 1000 puts, 1 and 64 writers
  Redis         redis-server on a unix socket, AOF appendfsync always and
                everysec: SET (1, 64 clients), pipelines and MULTI/EXEC of
                100 and 1000 SETs, GET. Installed with apt-get when missing,
                if root and online; otherwise its rows are skipped and the
                output says why.
  stated        `stated run` processes built from this tree, 1 and 3 nodes,
                through the Go SDK: single commits (1, 64 clients), 100 x 8
                and 1000 x 4 commits, Gets at local/session/linearizable,
                the processes' RSS
  test/         the Kafka processor vs plain franz-go, the checkpoint
                barrier and completion pauses, a full and an incremental
                checkpoint vs cp -r, restore vs cp -r, restart after SIGKILL
  rejoin        three `stated run` processes: a wiped follower's catch-up
                from a Raft snapshot vs cp -r of the leader's state
  leader stop   three `stated run` processes: how long commits through a
                follower wait when the leader gets SIGTERM, vs SIGKILL
  follower back three `stated run` processes: a follower SIGKILLed, back
                after 25 s down, until it holds all the leader had, vs
                after 1 s down

Environment:
  BENCH_COUNT=N         runs of every benchmark, medians taken (default 3)
  BENCH_QUICK=1         a smoke run of about 3 minutes: 1 run, short
                        benchtimes (figures too rough to quote)
  BENCH_DIR=DIR         where data dirs, Redis's AOF and the temp files go
                        (default: a new directory in ${TMPDIR:-/tmp});
                        its filesystem is the one measured
  BENCH_CKPT_STATE=S    state size of the checkpoint, restore and rejoin rows:
                        100MB (default) or 1GB (adds ~10 minutes)
  BENCH_STATED_FLAGS=.. extra `stated run` flags for the stated rows,
                        e.g. "--raft-log-store boltdb" to measure the
                        other Raft log store, "--checkpoint-interval 1s"
  BENCH_KEEP=1          keep BENCH_DIR's contents afterwards

The default run takes about 15 minutes on 2 cores. Figures are only
comparable within one run: the ratios are the point.

--growth runs the growth study instead (issue 15, "cost as state grows"):
for each size, a `stated run` process is filled through the SDK (setup,
not measured), then: single and 100-mutation commits, a full checkpoint
to a file:// bucket, incremental ones after changing 1% of the keys,
`stated restore` of it, SIGKILL and restart until the first commit, and
the process's VmHWM/VmRSS. One table per kind of state, a column per
size, the ratio of the largest to the smallest and the targets' verdicts
(bench/README.md). One run of each size (BENCH_COUNT is ignored).
  BENCH_GROWTH=S,S..          keyed state sizes (KB, MB, GB), default
                              1GB,10GB; empty: none
  BENCH_GROWTH_WINDOWS=N,N..  open windows (digits or 10^k), default
                              100000,1000000; empty: none
  BENCH_GROWTH_COMMIT_TIME=D  how long each commit row runs (default 5s)
  BENCH_GROWTH_BUCKET_DIR=DIR where the file:// bucket goes (default: in
                              BENCH_DIR), e.g. /dev/shm for a bucket that
                              does not share the data's disk, as S3 does not
A size needs about 5 times its bytes free in BENCH_DIR's filesystem
(state, Raft log and snapshot, bucket, the restored copy) and is refused
otherwise. On the loaded 2-core dev VM, BENCH_GROWTH=1GB,4GB with the
default windows took 5 to 7 minutes; 10GB needs about 51 GB free.
EOF
}

growth=0
for arg in "$@"; do
	case $arg in
	-h | --help)
		usage
		exit 0
		;;
	--growth)
		growth=1
		;;
	*)
		echo "bench/run.sh: unknown argument $arg (see --help)" >&2
		exit 2
		;;
	esac
done

cd "$(dirname "$0")/.."
root=$(pwd)

count=${BENCH_COUNT:-3}
quick=${BENCH_QUICK:-0}
ckpt_state=${BENCH_CKPT_STATE:-100MB}
case $count in '' | *[!0-9]* | 0)
	echo "bench/run.sh: BENCH_COUNT must be a positive integer, not '$count'" >&2
	exit 2
	;;
esac
case $quick in 0 | 1) ;; *)
	echo "bench/run.sh: BENCH_QUICK must be 0 or 1, not '$quick'" >&2
	exit 2
	;;
esac
case $ckpt_state in 100MB | 1GB) ;; *)
	echo "bench/run.sh: BENCH_CKPT_STATE must be 100MB or 1GB, not '$ckpt_state'" >&2
	exit 2
	;;
esac
growth_sizes=${BENCH_GROWTH-1GB,10GB}
growth_windows=${BENCH_GROWTH_WINDOWS-100000,1000000}
if [ "$growth" = 1 ]; then
	for s in ${growth_sizes//,/ }; do
		[[ $s =~ ^[1-9][0-9]*(KB|MB|GB)$ ]] || {
			echo "bench/run.sh: BENCH_GROWTH: '$s' is not a size such as 100MB or 10GB" >&2
			exit 2
		}
	done
	for n in ${growth_windows//,/ }; do
		[[ $n =~ ^([1-9][0-9]*|10\^[0-8])$ ]] || {
			echo "bench/run.sh: BENCH_GROWTH_WINDOWS: '$n' is not a window count such as 100000 or 10^6" >&2
			exit 2
		}
	done
	if [ -n "${BENCH_GROWTH_COMMIT_TIME:-}" ] && ! [[ $BENCH_GROWTH_COMMIT_TIME =~ ^[0-9]+(\.[0-9]+)?(ms|s|m)$ ]]; then
		echo "bench/run.sh: BENCH_GROWTH_COMMIT_TIME must be a duration such as 5s or 500ms, not '$BENCH_GROWTH_COMMIT_TIME'" >&2
		exit 2
	fi
	if [ -z "${growth_sizes//[, ]/}${growth_windows//[, ]/}" ]; then
		echo "bench/run.sh: --growth with BENCH_GROWTH and BENCH_GROWTH_WINDOWS both empty measures nothing" >&2
		exit 2
	fi
	count=1
fi
command -v go >/dev/null || {
	echo "bench/run.sh: go is not on PATH" >&2
	exit 2
}

# benchtimes: per-sub-benchmark time for the rate rows, iterations for the
# test/ benchmarks that build state first.
if [ "$quick" = 1 ]; then
	count=1
	bt=200ms
	kafka_n=20000x
	restarts=1x
else
	bt=1s
	kafka_n=200000x
	restarts=3x
fi

timeout=60m
[ "$growth" = 1 ] && timeout=300m

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/out
out_md=bench/out/$stamp.md
out_raw=bench/out/$stamp.txt
out_log=bench/out/$stamp.log
: >"$out_raw"
: >"$out_log"

if [ -n "${BENCH_DIR:-}" ]; then
	mkdir -p "$BENCH_DIR"
	work=$(mktemp -d "$BENCH_DIR/stated-bench.XXXXXX")
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/stated-bench.XXXXXX")
fi
# Unix socket paths are limited to 107 bytes: Redis's go in a short
# directory of their own.
sockdir=$(mktemp -d /tmp/sb.XXXXXX)
redis_pids=()

cleanup() {
	local pid
	for pid in "${redis_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$sockdir"
	if [ "${BENCH_KEEP:-0}" != 1 ]; then
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
say() { echo "bench/run.sh: [$(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s] $*" >&2; }
notes=()
note() {
	notes+=("$*")
	say "$*"
}

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)

# bench PKG REGEX BENCHTIME [ENV...]: one `go test -bench` invocation, its
# output appended to the raw file; a failure is noted, not fatal.
bench() {
	local pkg=$1 regex=$2 benchtime=$3
	shift 3
	say "go test $pkg -bench '$regex' -benchtime $benchtime -count $count"
	if ! env TMPDIR="$work" BENCH_STATED_BIN="$work/bin/stated" "$@" \
		go test "$pkg" -run '^$' -bench "$regex" -benchtime "$benchtime" -count "$count" -timeout "$timeout" \
		>>"$out_raw" 2>>"$out_log"; then
		note "\`go test $pkg -bench '$regex'\` failed; its rows are not measured (output in $out_raw and $out_log)."
	fi
}

say "data dir $work; raw output $out_raw"
mkdir -p "$work/bin"
go build -o "$work/bin/stated" ./cmd/stated

# --- Redis -------------------------------------------------------------
redis_sockets=""
start_redis() {
	if [ "$growth" = 1 ]; then
		return # the growth study has no Redis rows
	fi
	if ! command -v redis-server >/dev/null; then
		if [ "$(id -u)" != 0 ]; then
			note "Redis rows skipped: redis-server is not installed and installing it needs root (apt-get install -y redis-server)."
			return
		fi
		if ! command -v apt-get >/dev/null; then
			note "Redis rows skipped: redis-server is not installed and there is no apt-get to install it."
			return
		fi
		say "installing redis-server with apt-get"
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server >>"$out_log" 2>&1; then
			DEBIAN_FRONTEND=noninteractive apt-get update >>"$out_log" 2>&1 || true
			if ! DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server >>"$out_log" 2>&1; then
				note "Redis rows skipped: apt-get install -y redis-server failed (offline?); see $out_log."
				return
			fi
		fi
		# Debian's package starts a service of its own where it can: stop
		# it, so only the harness's servers run.
		if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
			systemctl stop redis-server || true
		elif command -v service >/dev/null; then
			service redis-server stop >>"$out_log" 2>&1 || true
		elif [ -x /etc/init.d/redis-server ]; then
			/etc/init.d/redis-server stop >>"$out_log" 2>&1 || true
		fi
	fi
	local mode dir sock i
	for mode in always everysec; do
		dir=$work/redis-$mode
		sock=$sockdir/$mode.sock
		mkdir -p "$dir"
		redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" \
			--appendonly yes --appendfsync "$mode" --save '' --daemonize no \
			--logfile "$dir/redis.log" &
		redis_pids+=("$!")
		for ((i = 0; i < 200; i++)); do
			[ -S "$sock" ] && break
			sleep 0.05
		done
		if [ ! -S "$sock" ]; then
			note "Redis rows skipped: redis-server (appendfsync $mode) did not open $sock within 10 s: $(tail -3 "$dir/redis.log" 2>/dev/null)"
			redis_sockets=""
			return
		fi
		redis_sockets+="${redis_sockets:+,}$mode=$sock"
	done
}
start_redis
redis_version=""
if [ -n "$redis_sockets" ]; then
	redis_version=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
fi

# --- the runs --------------------------------------------------------
if [ "$growth" = 1 ]; then
	bench ./bench '^BenchmarkGrowth$' 1x BENCH_GROWTH="$growth_sizes" BENCH_GROWTH_WINDOWS="$growth_windows"
else
	bench ./bench '^BenchmarkMachine$' "$bt"
	bench ./bench '^BenchmarkRawPebble$' "$bt"
	if [ -n "$redis_sockets" ]; then
		bench ./bench '^BenchmarkRedis$' "$bt" BENCH_REDIS_SOCKETS="$redis_sockets"
	fi
	bench ./bench '^BenchmarkStated$' "$bt"
	bench ./test '^Benchmark(KafkaProcessor|KafkaPlainFranzGo)$' "$kafka_n"
	bench ./test "^BenchmarkCheckpointBarrierPause\$/^state=$ckpt_state\$" 1x
	bench ./test "^BenchmarkCheckpointUpload\$/^state=$ckpt_state\$" 1x
	bench ./test "^BenchmarkRestore\$/^state=$ckpt_state\$" 1x
	bench ./test '^BenchmarkRestartAfterSIGKILL$' "$restarts"
	bench ./bench "^BenchmarkRejoin\$/^state=$ckpt_state\$" 1x
	bench ./bench '^BenchmarkLeaderStop$' 1x
	bench ./bench '^BenchmarkFollowerBackAfterDowntime$' 1x
fi
load_after=$(load)

# --- the table -------------------------------------------------------
fs=$(df -PT "$work" | awk 'NR == 2 { print $2 " on " $1 ", mounted at " $7 }')
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit+=" (with uncommitted changes)"
fi
cmd="bash bench/run.sh"
[ "$quick" = 1 ] && cmd="BENCH_QUICK=1 $cmd"
[ -n "${BENCH_COUNT:-}" ] && [ "$quick" != 1 ] && cmd="BENCH_COUNT=$count $cmd"
[ "$ckpt_state" != 100MB ] && cmd="BENCH_CKPT_STATE=$ckpt_state $cmd"
if [ "$growth" = 1 ]; then
	cmd="BENCH_GROWTH=$growth_sizes BENCH_GROWTH_WINDOWS=$growth_windows${BENCH_GROWTH_COMMIT_TIME:+ BENCH_GROWTH_COMMIT_TIME=$BENCH_GROWTH_COMMIT_TIME}${BENCH_GROWTH_BUCKET_DIR:+ BENCH_GROWTH_BUCKET_DIR=$BENCH_GROWTH_BUCKET_DIR} bash bench/run.sh --growth"
fi
[ -n "${BENCH_STATED_FLAGS:-}" ] && cmd="BENCH_STATED_FLAGS='$BENCH_STATED_FLAGS' $cmd"

table=$(go run ./bench/report "$out_raw" 2>>"$out_log") || {
	note "bench/report failed: see $out_log"
	table=""
}

{
	if [ "$growth" = 1 ]; then
		echo "## stated growth study, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo
		echo "**Command:** \`$cmd\` (one run of each size; 1 KiB random values, in the commit rows too; raw output \`$out_raw\`)"
	else
		echo "## stated benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo
		echo "**Command:** \`$cmd\` (medians of $count run(s); 100-byte values; raw output \`$out_raw\`)"
	fi
	echo
	echo "**Machine:** $cpu, $(nproc) cores, $mem; \`$(uname -a)\`"
	echo
	echo "**Software:** commit $commit; $(go version | sed 's/^go version //')${redis_version:+; Redis $redis_version}"
	echo
	echo "**Data dir:** $fs (stated's data dirs, Pebble, Redis's AOF and the checkpoint files all in it)"
	echo
	echo "**Load average** (1, 5, 15 min): before $load_before, after $load_after"
	echo
	echo "$table"
	if [ "${#notes[@]}" -gt 0 ]; then
		echo
		echo "**Notes:**"
		echo
		for n in "${notes[@]}"; do echo "- $n"; done
	fi
} | tee "$out_md"
say "written to $out_md"
