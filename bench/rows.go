package bench

import "fmt"

// The benchmarks the table reads, without "Benchmark".
const (
	fsync   = "Machine/fsync-4KiB"
	inPlace = "Machine/fdatasync-4KiB-in-place"
	idle    = "Machine/fdatasync-4KiB-in-place-after-idle"
	seq     = "Machine/seqwrite-256MB"
	kafkaPR = "KafkaProcessor/per-record"
	kafkaPK = "KafkaProcessor/per-key"
	kafkaFG = "KafkaPlainFranzGo"
)

func pebbleB(batch, writers int) string {
	return fmt.Sprintf("RawPebble/batch=%d/writers=%d", batch, writers)
}
func redisB(aof, shape string) string        { return "Redis/aof=" + aof + "/" + shape }
func statedB(nodes int, shape string) string { return fmt.Sprintf("Stated/nodes=%d/%s", nodes, shape) }

// latency units shown after a rate.
func lat(bench string, p999 bool) []metric {
	ms := []metric{m(bench, "p50-µs"), m(bench, "p99-µs")}
	if p999 {
		ms = append(ms, m(bench, "p999-µs"))
	}
	return ms
}

func rate(bench, unit string, p999 bool) []metric {
	return append([]metric{m(bench, unit)}, lat(bench, p999)...)
}

// vs compares the same unit of two benchmarks.
func vs(label, bench, den, unit, note string) reference {
	return reference{label: label, show: []metric{m(den, unit)}, num: m(bench, unit), den: m(den, unit), note: note}
}

// fsyncs compares a latency of bench with the fsync p50.
func fsyncs(bench, unit, note string) reference {
	return reference{label: "fsync", show: []metric{m(fsync, "p50-µs")}, num: m(bench, unit), den: m(fsync, "p50-µs"), note: note}
}

// rows lists the table: the machine, raw Pebble, Redis, stated on 1 and 3
// nodes, then the Kafka, checkpoint and restore benchmarks of test/.
func rows(res Results) []row {
	var out []row
	add := func(r row) { out = append(out, r) }
	add(row{"machine", "fsync of 4 KiB", append(lat(fsync, false), m(fsync, "ops/s")), nil})
	add(row{"machine", "4 KiB written in place + fdatasync, as the Raft log syncs", lat(inPlace, false),
		[]reference{fsyncs(inPlace, "p50-µs", "fsyncs (p50)")}})
	add(row{"machine", "the same after 300 µs idle, as one client's commits meet it", lat(idle, false),
		[]reference{vs("back to back", idle, inPlace, "p50-µs", "(p50)"), fsyncs(idle, "p50-µs", "fsyncs (p50)")}})
	add(row{"machine", "sequential write 256 MB + fsync", []metric{m(seq, "MB/s")}, nil})

	for _, batch := range []int{1, 100, 1000} {
		for _, w := range []int{1, 64} {
			b := pebbleB(batch, w)
			writers := "1 writer"
			if w > 1 {
				writers = fmt.Sprintf("%d writers", w)
			}
			// One writer's batch is measured in fsyncs; 64 writers' (which
			// queue behind each other) against one writer's throughput.
			ref := fsyncs(b, "p50-µs", "fsyncs per batch (p50)")
			if w > 1 {
				ref = vs("1 writer", b, pebbleB(batch, 1), "mutations/s", "")
			}
			add(row{"raw Pebble", fmt.Sprintf("synced batches of %d puts, %s", batch, writers), rate(b, "mutations/s", false),
				[]reference{ref}})
		}
	}

	for _, aof := range []string{"always", "everysec"} {
		group := "Redis AOF " + aof
		// everysec is compared with always; always with the disk and Pebble.
		ref := func(shape, unit, pebble string) []reference {
			if aof == "everysec" {
				return []reference{vs("AOF always", redisB(aof, shape), redisB("always", shape), unit, "")}
			}
			if pebble != "" {
				return []reference{vs("raw Pebble", redisB(aof, shape), pebble, unit, "")}
			}
			return []reference{fsyncs(redisB(aof, shape), "p50-µs", "fsyncs (p50)")}
		}
		add(row{group, "SET, 1 client", rate(redisB(aof, "set/clients=1"), "mutations/s", true), ref("set/clients=1", "mutations/s", "")})
		add(row{group, "SET, 64 clients", rate(redisB(aof, "set/clients=64"), "mutations/s", true), ref("set/clients=64", "mutations/s", pebbleB(1, 64))})
		for _, s := range []struct {
			n, c int
		}{{100, 8}, {1000, 4}} {
			for _, kind := range []string{"pipeline", "multi"} {
				shape := fmt.Sprintf("%s=%d/clients=%d", kind, s.n, s.c)
				what := "pipeline of"
				if kind == "multi" {
					what = "MULTI/EXEC of"
				}
				add(row{group, fmt.Sprintf("%s %d SETs, %d clients", what, s.n, s.c), rate(redisB(aof, shape), "mutations/s", false),
					ref(shape, "mutations/s", pebbleB(s.n, 1))})
			}
		}
		get := []reference{}
		if aof == "everysec" {
			get = []reference{vs("AOF always", redisB(aof, "get/clients=1"), redisB("always", "get/clients=1"), "p50-µs", "(p50)")}
		}
		add(row{group, "GET, 1 client", append(lat(redisB(aof, "get/clients=1"), false), m(redisB(aof, "get/clients=1"), "reads/s")), get})
	}

	for _, nodes := range []int{1, 3} {
		group := fmt.Sprintf("stated, %d node", nodes)
		if nodes > 1 {
			group += "s"
		}
		one := func(shape, unit string) []reference {
			if nodes == 1 {
				return nil
			}
			return []reference{vs("1 node", statedB(nodes, shape), statedB(1, shape), unit, "")}
		}
		tail := func(shape string) reference {
			b := statedB(nodes, shape)
			return reference{label: "own p50", num: m(b, "p99-µs"), den: m(b, "p50-µs"), note: "p99/p50"}
		}
		commit := func(shape, workload string, refs ...reference) {
			b := statedB(nodes, shape)
			refs = append(append(one(shape, "mutations/s"), refs...), tail(shape))
			add(row{group, workload, rate(b, "mutations/s", true), refs})
		}
		single := statedB(nodes, "commit=1/clients=1")
		roundTrip := statedB(nodes, "grpc-roundtrip")
		// The SDK's single commit rides a request of its CommitStream:
		// the floor is that message's round trip, not a unary call's.
		streamTrip := statedB(nodes, "stream-roundtrip")
		commit("commit=1/clients=1", "single commit, 1 client (mutations/s = commits/s)",
			fsyncs(single, "p50-µs", "fsyncs (p50)"),
			reference{label: "commit stream round trip", show: []metric{m(streamTrip, "p50-µs")}, num: m(single, "p50-µs"),
				den: m(fsync, "p50-µs"), plus: m(streamTrip, "p50-µs"), note: "fsync + stream round trip (p50)"},
			reference{label: "log sync after idle", show: []metric{m(idle, "p50-µs")}, num: m(single, "p50-µs"),
				den: m(idle, "p50-µs"), plus: m(streamTrip, "p50-µs"), note: "log sync after idle + stream round trip (p50)"},
			vs("Redis always", single, redisB("always", "set/clients=1"), "mutations/s", ""))
		batch30 := statedB(nodes, "commit=30/clients=1")
		commit("commit=30/clients=1", "30-mutation commits, 1 client (a consumer committing each poll's records)",
			fsyncs(batch30, "p50-µs", "fsyncs (p50)"),
			vs("single commit, 1 client", batch30, single, "mutations/s", ""))
		commit("commit=1/clients=64", "single commits, 64 clients",
			vs("Redis always", statedB(nodes, "commit=1/clients=64"), redisB("always", "set/clients=64"), "mutations/s", ""))
		commit("commit=100/clients=8", "100-mutation commits, 8 clients",
			vs("Redis always pipeline 100 × 8", statedB(nodes, "commit=100/clients=8"), redisB("always", "pipeline=100/clients=8"), "mutations/s", ""),
			vs("raw Pebble 100-batches", statedB(nodes, "commit=100/clients=8"), pebbleB(100, 1), "mutations/s", ""))
		commit("commit=1000/clients=4", "1000-mutation commits, 4 clients",
			vs("raw Pebble 1000-batches", statedB(nodes, "commit=1000/clients=4"), pebbleB(1000, 1), "mutations/s", ""),
			vs("Redis always MULTI 1000 × 4", statedB(nodes, "commit=1000/clients=4"), redisB("always", "multi=1000/clients=4"), "mutations/s", ""))
		for _, cons := range []string{"local", "session", "linearizable"} {
			b := statedB(nodes, "read="+cons)
			refs := one("read="+cons, "p50-µs")
			if cons == "local" {
				refs = append(refs, vs("Redis GET", b, redisB("always", "get/clients=1"), "p50-µs", "(p50)"))
			} else {
				refs = append(refs, vs("local", b, statedB(nodes, "read=local"), "p50-µs", "(p50)"))
			}
			add(row{group, "Get, " + cons + ", 1 client", append(lat(b, false), m(b, "reads/s")), refs})
		}
		add(row{group, "gRPC round trip, 1 client: a health check on the same socket, what any call costs before stated does anything",
			append(lat(roundTrip, false), m(roundTrip, "calls/s")),
			append(one("grpc-roundtrip", "p50-µs"), vs("Redis GET", roundTrip, redisB("always", "get/clients=1"), "p50-µs", "(p50)"))})
		add(row{group, "commit stream round trip, 1 client: an empty request on an open CommitStream, the message each SDK commit rides, before stated does anything",
			append(lat(streamTrip, false), m(streamTrip, "calls/s")),
			append(one("stream-roundtrip", "p50-µs"), vs("gRPC round trip", streamTrip, roundTrip, "p50-µs", "(p50)"), vs("Redis GET", streamTrip, redisB("always", "get/clients=1"), "p50-µs", "(p50)"))})
		rss := statedB(nodes, "rss")
		mem := []metric{m(rss, "VmHWM-MB"), m(rss, "VmRSS-MB")}
		for i := 1; i <= nodes && nodes > 1; i++ {
			mem = append(mem, m(rss, fmt.Sprintf("n%d-VmHWM-MB", i)))
		}
		add(row{group, "RSS after the rows above: the largest process (peak, now), then each node's peak", mem, one("rss", "VmHWM-MB")})
	}

	add(row{"Kafka", "processor, one counter add per record", []metric{m(kafkaPR, "records/s")},
		[]reference{vs("plain franz-go", kafkaPR, kafkaFG, "records/s", "")}})
	add(row{"Kafka", "processor, per-key sums per poll", []metric{m(kafkaPK, "records/s")},
		[]reference{vs("plain franz-go", kafkaPK, kafkaFG, "records/s", "")}})

	for _, st := range res.subNames("CheckpointBarrierPause/state=") {
		b := "CheckpointBarrierPause/state=" + st
		add(row{"checkpoint", "barrier pause of the apply loop, state " + st, []metric{m(b, "barrier-p50-µs"), m(b, "barrier-p99-µs")},
			[]reference{fsyncs(b, "barrier-p99-µs", "fsyncs (p99)")}})
		add(row{"checkpoint", "completion-entry pause, state " + st, []metric{m(b, "done-p50-µs"), m(b, "done-p99-µs")},
			[]reference{fsyncs(b, "done-p99-µs", "fsyncs (p99)")}})
	}
	for _, st := range res.subNames("CheckpointUpload/state=") {
		b := "CheckpointUpload/state=" + st
		add(row{"checkpoint", "full checkpoint to file://, state " + st, []metric{m(b, "full-ckpt-s"), m(b, "ckpt-MB"), m(b, "full-upload-MB/s")},
			[]reference{
				{label: "`cp -r`:", show: []metric{m(b, "cp-s"), m(b, "cp-MB/s")}, num: m(b, "full-ckpt-s"), den: m(b, "cp-s"), note: "time of cp -r"},
				{label: "`cp -r` + `sync`:", show: []metric{m(b, "cp+sync-s")}, num: m(b, "full-ckpt-s"), den: m(b, "cp+sync-s"), note: "time of cp -r + sync"},
			}})
		add(row{"checkpoint", "incremental checkpoint after overwrites, state " + st, []metric{m(b, "incr-ckpt-s"), m(b, "incr-uploaded-MB"), m(b, "incr-%")},
			[]reference{{label: "full checkpoint:", show: []metric{m(b, "full-ckpt-s")}, num: m(b, "incr-ckpt-s"), den: m(b, "full-ckpt-s"), note: "time of full"}}})
	}
	for _, st := range res.subNames("Restore/state=") {
		b := "Restore/state=" + st
		add(row{"restore", "restore from file:// (download, verify, materialise), state " + st, []metric{m(b, "restore-s"), m(b, "restore-MB/s")},
			[]reference{{label: "`cp -r` + `sync`:", show: []metric{m(b, "cp-s")}, num: m(b, "restore-s"), den: m(b, "cp-s"), note: "time of cp -r"}}})
	}
	if _, ok := res.val(m("RestartAfterSIGKILL", "p50-s")); ok {
		add(row{"restore", "restart after SIGKILL to a linearizable read, 100 MB", []metric{m("RestartAfterSIGKILL", "p50-s"), m("RestartAfterSIGKILL", "max-s")},
			[]reference{{label: "own p50", num: m("RestartAfterSIGKILL", "max-s"), den: m("RestartAfterSIGKILL", "p50-s"), note: "max/p50"}}})
	}
	if _, ok := res.val(m("LeaderStop/signal=TERM", "gap-ms")); ok {
		term, kill := "LeaderStop/signal=TERM", "LeaderStop/signal=KILL"
		add(row{"restore", "leader of 3 stopped with SIGTERM: longest wait of commits through a follower", []metric{m(term, "gap-ms"), m(term, "exit-ms")},
			[]reference{vs("leader SIGKILLed (an election)", term, kill, "gap-ms", "of the crash's wait")}})
	}
	if _, ok := res.val(m("FollowerBackAfterDowntime/down=25s", "back-s")); ok {
		long, short := "FollowerBackAfterDowntime/down=25s", "FollowerBackAfterDowntime/down=1s"
		add(row{"restore", "a follower of 3 back after 25 s down (SIGKILL): from its start to all the leader had", []metric{m(long, "back-s")},
			[]reference{vs("the same after 1 s down", long, short, "back-s", "of the short downtime's")}})
	}
	for _, st := range res.subNames("Rejoin/state=") {
		b := "Rejoin/state=" + st
		add(row{"restore", "a wiped follower of 3 rejoins, sent the state as a Raft snapshot, state " + st, []metric{m(b, "rejoin-s"), m(b, "rejoin-MB/s")},
			[]reference{{label: "`cp -r` + `sync`:", show: []metric{m(b, "cp-s")}, num: m(b, "rejoin-s"), den: m(b, "cp-s"), note: "time of cp -r of the state"}}})
	}
	return out
}
