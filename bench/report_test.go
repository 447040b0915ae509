package bench

import (
	"strings"
	"testing"
)

// canned is `go test -bench` output as run.sh collects it: two runs
// (-count 2) of a few rows, the GOMAXPROCS suffix, and lines that are not
// results.
const canned = `goos: linux
goarch: amd64
pkg: github.com/statedhq/stated/bench
BenchmarkMachine/fsync-4KiB-2         	    5000	    200000 ns/op	      5000 ops/s	       200.0 p50-µs	       900.0 p99-µs
BenchmarkMachine/fsync-4KiB-2         	    5000	    200000 ns/op	      5000 ops/s	       250.0 p50-µs	       950.0 p99-µs
BenchmarkMachine/fsync-4KiB-2         	    5000	    200000 ns/op	      5000 ops/s	       150.0 p50-µs	       850.0 p99-µs
BenchmarkMachine/fdatasync-4KiB-in-place-2         	    5000	    150000 ns/op	       120.0 p50-µs	       300.0 p99-µs
BenchmarkMachine/fdatasync-4KiB-in-place-after-idle-2         	    5000	    150000 ns/op	       150.0 p50-µs	       600.0 p99-µs
BenchmarkRawPebble/batch=1000/writers=1-2      	     500	   2000000 ns/op	    800000 mutations/s	      1250 p50-µs	      3000 p99-µs
BenchmarkRedis/aof=always/set/clients=1-2         	    4000	    250000 ns/op	      4000 mutations/s	       240.0 p50-µs	       400.0 p99-µs	       900.0 p999-µs
BenchmarkRedis/aof=always/set/clients=64-2        	   50000	     20000 ns/op	     50000 mutations/s	      1200 p50-µs	      2500 p99-µs	      3000 p999-µs
BenchmarkStated/nodes=1/commit=1/clients=1-2         	    2000	    500000 ns/op	      2000 mutations/s	       500.0 p50-µs	      1400 p99-µs	      2000 p999-µs
BenchmarkStated/nodes=1/commit=1/clients=64-2        	   25000	     40000 ns/op	     25000 mutations/s	      2600 p50-µs	      5000 p99-µs	      6000 p999-µs
BenchmarkStated/nodes=1/commit=1000/clients=4-2      	     400	   2500000 ns/op	    400000 mutations/s	      5000 p50-µs	     20000 p99-µs	     21000 p999-µs
BenchmarkStated/nodes=3/commit=1000/clients=4-2      	     200	   5000000 ns/op	    200000 mutations/s	     10000 p50-µs	     40000 p99-µs	     41000 p999-µs
BenchmarkStated/nodes=1/grpc-roundtrip-2            	   10000	    100000 ns/op	     10000 calls/s	       100.0 p50-µs	       300.0 p99-µs
BenchmarkStated/nodes=1/stream-roundtrip-2          	   10000	     60000 ns/op	     16000 calls/s	        60.0 p50-µs	       200.0 p99-µs
BenchmarkStated/nodes=1/rss-2                        	  100000	     10000 ns/op	       143.5 VmHWM-MB	       142.2 VmRSS-MB	       143.5 n1-VmHWM-MB	       142.2 n1-VmRSS-MB
BenchmarkStated/nodes=3/rss-2                        	  100000	     10000 ns/op	       150 VmHWM-MB	       140 VmRSS-MB	       150 n1-VmHWM-MB	       140 n1-VmRSS-MB	       120 n2-VmHWM-MB	       110 n2-VmRSS-MB	       110 n3-VmHWM-MB	       100 n3-VmRSS-MB
BenchmarkCheckpointUpload/state=100MB-2         	       1	12269990748 ns/op	       108.0 ckpt-MB	         0.2 cp+sync-s	      1350 cp-MB/s	         0.08 cp-s	         0.6 full-ckpt-s	       290 full-upload-MB/s
--- BENCH: BenchmarkCheckpointUpload/state=100MB-2
    bench_checkpoint_test.go:546: full {...}
--- SKIP: BenchmarkKafkaProcessor
PASS
ok  	github.com/statedhq/stated/bench	58.825s
`

func TestReportTableHasRatiosToReferencesOfTheSameRun(t *testing.T) {
	res, err := Parse(strings.NewReader(canned))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := res.Median("BenchmarkMachine/fsync-4KiB", "p50-µs"); got != 200 {
		t.Errorf("median fsync p50 of 150, 200, 250 = %v, want 200", got)
	}
	if n := res.Runs("BenchmarkMachine/fsync-4KiB", "p50-µs"); n != 3 {
		t.Errorf("fsync runs = %d, want 3", n)
	}
	var out strings.Builder
	if err := Table(&out, res); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, line := range []string{
		// p50 500 µs over the fsync p50 of 200 µs, and 2000/s over Redis's 4000/s.
		// and 500 µs over the floor of fsync plus the commit stream's
		// round trip, 200 + 60 µs, and over the log's sync after idle plus
		// that round trip, 150 + 60 µs.
		"| stated, 1 node | single commit, 1 client (mutations/s = commits/s) | 2,000/s, p50 500 µs, p99 1.40 ms, p999 2.00 ms | fsync p50 200 µs; commit stream round trip p50 60.0 µs; log sync after idle p50 150 µs; Redis always 4,000/s; own p50 | 2.50× fsyncs (p50); 1.92× fsync + stream round trip (p50); 2.38× log sync after idle + stream round trip (p50); 0.50×; 2.80× p99/p50 |",
		// A message on the open stream against a unary call's round trip.
		"| stated, 1 node | commit stream round trip, 1 client: an empty request on an open CommitStream, the message each SDK commit rides, before stated does anything | p50 60.0 µs, p99 200 µs, 16,000/s | gRPC round trip p50 100 µs; Redis GET not measured | 0.60× (p50); — |",
		// The Raft log's kind of sync, back to back and after idle.
		"| machine | 4 KiB written in place + fdatasync, as the Raft log syncs | p50 120 µs, p99 300 µs | fsync p50 200 µs | 0.60× fsyncs (p50) |",
		"| machine | the same after 300 µs idle, as one client's commits meet it | p50 150 µs, p99 600 µs | back to back p50 120 µs; fsync p50 200 µs | 1.25× (p50); 0.75× fsyncs (p50) |",
		"| stated, 1 node | gRPC round trip, 1 client: a health check on the same socket, what any call costs before stated does anything | p50 100 µs, p99 300 µs, 10,000/s | Redis GET not measured | — |",
		"| stated, 1 node | single commits, 64 clients | 25,000/s, p50 2.60 ms, p99 5.00 ms, p999 6.00 ms | Redis always 50,000/s; own p50 | 0.50×; 1.92× p99/p50 |",
		"| stated, 1 node | 1000-mutation commits, 4 clients | 400,000/s, p50 5.00 ms, p99 20.0 ms, p999 21.0 ms | raw Pebble 1000-batches 800,000/s; Redis always MULTI 1000 × 4 not measured; own p50 | 0.50×; —; 4.00× p99/p50 |",
		"| stated, 3 nodes | 1000-mutation commits, 4 clients | 200,000/s, p50 10.0 ms, p99 40.0 ms, p999 41.0 ms | 1 node 400,000/s; raw Pebble 1000-batches 800,000/s; Redis always MULTI 1000 × 4 not measured; own p50 | 0.50×; 0.25×; —; 4.00× p99/p50 |",
		"| Redis AOF always | SET, 64 clients | 50,000/s, p50 1.20 ms, p99 2.50 ms, p999 3.00 ms | raw Pebble not measured | — |",
		"| stated, 1 node | RSS after the rows above: the largest process (peak, now), then each node's peak | VmHWM 144 MB, VmRSS 142 MB | — | — |",
		"| stated, 3 nodes | RSS after the rows above: the largest process (peak, now), then each node's peak | VmHWM 150 MB, VmRSS 140 MB, n1-VmHWM 150 MB, n2-VmHWM 120 MB, n3-VmHWM 110 MB | 1 node VmHWM 144 MB | 1.05× |",
		// Rows per state size found in the input; two references, two ratios.
		"| checkpoint | full checkpoint to file://, state 100MB | full-ckpt 0.60 s, ckpt 108 MB, 290 MB/s | `cp -r`: cp 0.080 s, 1,350 MB/s; `cp -r` + `sync`: cp+sync 0.20 s | 7.50× time of cp -r; 3.00× time of cp -r + sync |",
	} {
		if !strings.Contains(table, line+"\n") {
			t.Errorf("table lacks\n%s\ntable:\n%s", line, table)
		}
	}
	// A row whose benchmark did not run is named below the table, not
	// shown with a made-up figure.
	if strings.Contains(table, "| Kafka |") || !strings.Contains(table, "Kafka: processor, one counter add per record;") {
		t.Errorf("the Kafka rows did not run and must be listed as not measured, not shown:\n%s", table)
	}
}

func TestParseRefusesAMalformedValue(t *testing.T) {
	_, err := Parse(strings.NewReader("BenchmarkX-2 10 1x ns/op\n"))
	if err == nil || !strings.Contains(err.Error(), `"1x"`) {
		t.Fatalf("err = %v, want one naming the value 1x", err)
	}
}
