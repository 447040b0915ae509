package test

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// TestTheSessionizerDemoSummaryDescribesItsOwnRun runs the
// sessionizer demo twice into one --namespace (examples/sessionizer/README.md:
// "Each demo run uses a fresh group and namespace ...; `--group` and
// `--namespace` choose them"). The second run's clicks are all behind the
// watermark the first run moved past the demo's end, so all of them are
// dropped as late and it closes no session; its summary must not claim
// sessions and "N of N clicks in sessions" it did not make. The summary
// printed the namespace's cumulative `sessions` and `clicks` counters (the first
// run's) next to this run's click count and late drops:
//
//	summary: 53 sessions of 40 users, 300 of 300 clicks in sessions, 300 late clicks dropped
func TestTheSessionizerDemoSummaryDescribesItsOwnRun(t *testing.T) {
	t.Parallel()
	skipLong(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := sessionizerBinary(t)
	n := newNode(t)
	n.start(ctx)
	demo := func() (demoOutput, string) {
		out, err := exec.CommandContext(ctx, bin, "--stated", "unix://"+n.socket,
			"--demo-records", "300", "--seed", "1", "--namespace", "sessions-reused").CombinedOutput()
		if err != nil {
			t.Fatalf("sessionizer: %v\n%s", err, out)
		}
		return parseDemo(t, string(out)), string(out)
	}
	first, _ := demo()
	if first.summary[0] != int64(len(first.sessions)) || first.summary[2] != 300 || first.summary[4] != 0 {
		t.Fatalf("first run: summary %v with %d printed sessions", first.summary, len(first.sessions))
	}
	second, out := demo()
	sum := second.summary // sessions, users, clicks in sessions, clicks, late
	if sum[0] != int64(len(second.sessions)) {
		t.Errorf("second run printed %d sessions but its summary says %d sessions", len(second.sessions), sum[0])
	}
	if sum[2]+sum[4] > sum[3] {
		t.Errorf("second run's summary says %d of %d clicks in sessions and %d late clicks dropped: more than the run's clicks", sum[2], sum[3], sum[4])
	}
	if t.Failed() {
		t.Logf("second run's output:\n%s", out)
	}
}
