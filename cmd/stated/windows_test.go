package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/statedhq/stated/daemon"
	"github.com/statedhq/stated/daemon/daemontest"
	stated "github.com/statedhq/stated/sdk/go"
)

// sdkClient dials d with the SDK, to add records the CLI then reads.
func sdkClient(t *testing.T, d *daemon.Daemon) *stated.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := stated.Dial(ctx, d.SocketPath(), stated.WithBlock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func fields(line string) string { return strings.Join(strings.Fields(line), " ") }

func TestWindowsDefineListGetOpenAndEmissions(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	out := mustSucceed(t, client(t, d, "windows", "define", "clicks", "--tumbling", "1m", "--grace", "10s",
		"--max-out-of-order", "30s", "--aggregate", "sum-int"))
	if want := `window namespace "clicks": tumbling 1m0s grace 10s out-of-order 30s sum-int emit final late drop, retention 1m10s, idle timeout 1m0s, max pending 100000` + "\n"; out != want {
		t.Errorf("define printed %q, want %q", out, want)
	}
	// Defining it again the same way is a no-op; differently, a refusal
	// naming the field.
	mustSucceed(t, client(t, d, "windows", "define", "clicks", "--tumbling", "1m", "--grace", "10s", "--max-out-of-order", "30s", "--aggregate", "sum-int"))
	r := client(t, d, "windows", "define", "clicks", "--tumbling", "30s", "--grace", "10s", "--max-out-of-order", "30s", "--aggregate", "sum-int")
	if r.code != 1 || !strings.Contains(r.stderr, `spec.size_ms: redefining window namespace "clicks": size_ms is 60000, not 30000`) {
		t.Errorf("redefinition: exit %d, stderr %q", r.code, r.stderr)
	}
	out = mustSucceed(t, client(t, d, "windows", "define", "sessions", "--session", "30m", "--grace", "0s",
		"--max-out-of-order", "5s", "--aggregate", "list", "--max-list-values", "10", "--emit", "updates", "--late", "return", "--json"))
	var spec specOutput
	if err := json.Unmarshal([]byte(out), &spec); err != nil {
		t.Fatalf("define --json printed %q: %v", out, err)
	}
	if want := (specOutput{Namespace: "sessions", Shape: "session", GapMs: 1_800_000, MaxOutOfOrderMs: 5000, RetentionMs: 1_800_000,
		IdleTimeoutMs: 60_000, Aggregate: "list", MaxListValues: 10, Emit: "updates", Late: "return", MaxPendingEmissions: 100_000}); spec != want {
		t.Errorf("define --json = %+v, want %+v", spec, want)
	}

	c := sdkClient(t, d)
	ctx := context.Background()
	if _, err := c.Update(ctx, func(t *stated.Txn) error {
		t.AddWindow("clicks", []byte("ann"), time.UnixMilli(1_000), stated.Int(3))
		t.AddWindow("clicks", []byte("ann"), time.UnixMilli(2_000), stated.Int(4))
		t.AddWindow("clicks", []byte("bob"), time.UnixMilli(90_000), stated.Int(5))
		t.AdvanceWatermark("clicks", "", time.UnixMilli(70_000))
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	out = mustSucceed(t, client(t, d, "windows", "list"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || fields(lines[0]) != "NAMESPACE SPEC WATERMARK LAG OPEN PENDING LATE DROPPED LATE RETURNED ADDS SOURCES" {
		t.Fatalf("list:\n%s", out)
	}
	if !strings.HasPrefix(fields(lines[1]), "clicks tumbling 1m0s") || !strings.HasSuffix(fields(lines[1]), "1970-01-01T00:01:10.000Z 20s 1 1 0 0 3 1") {
		t.Errorf("clicks row = %q", lines[1])
	}
	if !strings.HasPrefix(fields(lines[2]), "sessions session gap 30m0s") || !strings.HasSuffix(fields(lines[2]), " - - 0 0 0 0 0 0") {
		t.Errorf("sessions row = %q", lines[2])
	}
	out = mustSucceed(t, client(t, d, "windows", "list", "--json"))
	var ns namespaceOutput
	if err := json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &ns); err != nil || ns.Spec.Namespace != "clicks" ||
		ns.Watermark != 70_000 || ns.MaxEventTime != 90_000 || ns.LagMs != 20_000 || ns.Pending != 1 || ns.OpenWindows != 1 || ns.Adds != 3 {
		t.Errorf("list --json = %q (%v)", out, err)
	}

	out = mustSucceed(t, client(t, d, "windows", "get", "clicks", "ann"))
	if want := "START END CLOSES STATE COUNT SUM-INT\n" +
		"1970-01-01T00:00:00.000Z 1970-01-01T00:01:00.000Z 1970-01-01T00:01:10.000Z closed 2 7"; fields(strings.Split(out, "\n")[0])+"\n"+fields(strings.Split(out, "\n")[1]) != want {
		t.Errorf("get:\n%s\nwant\n%s", out, want)
	}
	out = mustSucceed(t, client(t, d, "windows", "get", "clicks", "ann", "--from", "60000", "--json"))
	if out != "" {
		t.Errorf("get --from 60000 printed %q, want nothing", out)
	}
	out = mustSucceed(t, client(t, d, "windows", "get", "clicks", "ann", "--from", "1970-01-01T00:00:00Z", "--to", "60000", "--json"))
	var w windowOutput
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.Key != "ann" || w.StartMs != 0 || w.EndMs != 60_000 || !w.Closed ||
		w.Count != 2 || w.Int == nil || *w.Int != 7 {
		t.Errorf("get --json = %q (%v)", out, err)
	}

	out = mustSucceed(t, client(t, d, "windows", "open", "clicks"))
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || fields(lines[0]) != "KEY START END CLOSES STATE COUNT SUM-INT" ||
		fields(lines[1]) != "bob 1970-01-01T00:01:00.000Z 1970-01-01T00:02:00.000Z 1970-01-01T00:02:10.000Z open 1 5" {
		t.Errorf("open:\n%s", out)
	}

	out = mustSucceed(t, client(t, d, "windows", "emissions", "clicks"))
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || fields(lines[0]) != "ID KIND KEY START END COUNT SUM-INT WATERMARK" ||
		fields(lines[1]) != "1 final ann 1970-01-01T00:00:00.000Z 1970-01-01T00:01:00.000Z 2 7 1970-01-01T00:01:10.000Z" {
		t.Errorf("emissions:\n%s", out)
	}
	out = mustSucceed(t, client(t, d, "windows", "emissions", "clicks", "--json"))
	var e emissionOutput
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.ID != 1 || e.Kind != "final" || e.Key != "ann" || e.Int == nil || *e.Int != 7 || e.Watermark != 70_000 {
		t.Errorf("emissions --json = %q (%v)", out, err)
	}
	if r := client(t, d, "windows", "emissions", "clicks", "--after", "1"); r.code != 0 || r.stdout != "" ||
		r.stderr != "no pending emissions in window namespace \"clicks\"\n" {
		t.Errorf("emissions --after 1: %+v", r)
	}

	// stated status counts the window state.
	out = mustSucceed(t, client(t, d, "status", "--json"))
	var st statusOutput
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Members) != 1 || st.Members[0].Counts == nil {
		t.Fatalf("status --json = %q (%v)", out, err)
	}
	if k := st.Members[0].Counts; k.WindowNamespaces != 2 || k.OpenWindows != 1 || k.PendingEmissions != 1 {
		t.Errorf("status counts = %+v, want 2 window namespaces, 1 open window, 1 pending emission", k)
	}
	// And each namespace's watermark, lag, open windows, pending emissions
	// and late records, as windows list shows them.
	if len(st.WindowNamespaces) != 2 || st.WindowNamespaces[0].Spec.Namespace != "clicks" || st.WindowNamespaces[0].OpenWindows != 1 ||
		st.WindowNamespaces[0].Pending != 1 || st.WindowNamespaces[0].Watermark != 70_000 {
		t.Errorf("status --json window namespaces = %+v", st.WindowNamespaces)
	}
	out = mustSucceed(t, client(t, d, "status"))
	row := regexp.MustCompile(`(?m)^clicks\s+tumbling 1m0s .*\s+1970-01-01T00:01:10\.000Z\s+\S+\s+1\s+1\s+\d+\s+\d+\s+\d+\s+\d+\s*$`)
	if !strings.Contains(out, "NAMESPACE  ") || !row.MatchString(out) {
		t.Errorf("status does not list the window namespace clicks with its watermark, 1 open, 1 pending:\n%s", out)
	}
}

func TestWindowsCommandLineMistakesExit64NamingTheFlag(t *testing.T) {
	t.Parallel()
	// None of these reaches a daemon: --addr points nowhere.
	base := []string{"--addr", "/nonexistent/stated.sock", "windows"}
	def := func(args ...string) []string {
		return append(append(append([]string{}, base...), "define", "ns"), args...)
	}
	ok := []string{"--grace", "0s", "--max-out-of-order", "0s", "--aggregate", "count"}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{def(ok...), "give the shape: --tumbling SIZE, --hopping SIZE --advance A, or --session GAP"},
		{def(append([]string{"--tumbling", "1m", "--session", "1m"}, ok...)...), "--tumbling and --session: give only one shape"},
		{def(append([]string{"--hopping", "1m"}, ok...)...), "--hopping needs --advance"},
		{def(append([]string{"--tumbling", "1m", "--advance", "1s"}, ok...)...), "--advance is for --hopping windows only"},
		{def("--tumbling", "1m", "--max-out-of-order", "0s", "--aggregate", "count"), "--grace is required; 0 means no lateness"},
		{def("--tumbling", "1m", "--grace", "0s", "--aggregate", "count"), "--max-out-of-order is required; 0 means no lateness"},
		{def("--tumbling", "1m", "--grace", "0s", "--max-out-of-order", "0s"), "--aggregate is required"},
		{def(append([]string{"--tumbling", "0s"}, ok...)...), "--tumbling: must be positive, got 0"},
		{def(append([]string{"--session", "-1m"}, ok...)...), "--session: must be positive, got -60000"},
		{def("--tumbling", "1m", "--grace", "-1s", "--max-out-of-order", "0s", "--aggregate", "count"), "--grace: must not be negative, got -1000"},
		{def(append([]string{"--hopping", "1m", "--advance", "2m"}, ok...)...), "--advance: 120000 ms is larger than size_ms 60000 ms"},
		{def(append([]string{"--tumbling", "1m", "--retention", "1s"}, ok...)...), "--retention: 1000 ms is below size + grace = 60000 ms"},
		{def(append([]string{"--tumbling", "1500us"}, ok...)...), "--tumbling 1.5ms is not a whole number of milliseconds"},
		{def("--hopping", "1m", "--advance", "1s", "--grace", "0s", "--max-out-of-order", "0s", "--aggregate", "opaque"), "--aggregate: opaque works with tumbling windows only"},
		{def("--tumbling", "1m", "--grace", "0s", "--max-out-of-order", "0s", "--aggregate", "median"), `--aggregate "median": want count, sum-int`},
		{def("--tumbling", "1m", "--grace", "0s", "--max-out-of-order", "0s", "--aggregate", "list"), "--max-list-values: a list aggregate needs 1 to 10000 values, got 0"},
		{def(append([]string{"--tumbling", "1m", "--max-list-values", "3"}, ok...)...), "--max-list-values: is for the list aggregate only"},
		{def(append([]string{"--tumbling", "1m", "--emit", "sometimes"}, ok...)...), `--emit "sometimes": want final or updates`},
		{def(append([]string{"--tumbling", "1m", "--late", "keep"}, ok...)...), `--late "keep": want drop or return`},
		{append(append([]string{}, base...), "get", "ns", "k", "--from", "yesterday"), `--from "yesterday": want RFC 3339`},
		{append(append([]string{}, base...), "get", "ns", "k", "--to", "-5"), "--to -5 is outside 0 to 9007199254740991 ms"},
		{append(append([]string{}, base...), "get", "ns", "k", "--from", "100", "--to", "50"), "--to 50 is before --from 100"},
		{append(append([]string{}, base...), "define", "", "--tumbling", "1m", "--grace", "0s", "--max-out-of-order", "0s", "--aggregate", "count"), "NS: a window namespace is required"},
		{append(append([]string{}, base...), "emissions", "ns", "--limit", "20000"), "--limit 20000 is outside 0 to 10000"},
		{append(append([]string{}, base...), "open", "ns", "--limit", "-1"), "--limit -1 is negative"},
	} {
		r := cliRun(t, nil, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 64 and %q", tc.args[3:], r.code, r.stderr, tc.msg)
		}
	}
}

func TestWindowsOfAnUndefinedNamespaceExitOne(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	for _, args := range [][]string{{"get", "nope", "k"}, {"open", "nope"}, {"emissions", "nope"}} {
		r := client(t, d, append([]string{"windows"}, args...)...)
		if r.code != 1 || r.stderr != "stated: window namespace \"nope\" is not defined\n" {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if r := client(t, d, "windows", "list"); r.code != 0 || r.stdout != "" || r.stderr != "no window namespaces defined\n" {
		t.Errorf("list of none: %+v", r)
	}
}

// A count namespace's tables have one COUNT column: the aggregate's value
// is the count (they printed COUNT twice).
func TestWindowsTablesOfACountNamespaceHaveOneCountColumn(t *testing.T) {
	t.Parallel()
	d := daemontest.Start(t)
	mustSucceed(t, client(t, d, "windows", "define", "visits", "--tumbling", "1m", "--grace", "0s",
		"--max-out-of-order", "0s", "--aggregate", "count"))
	c := sdkClient(t, d)
	if _, err := c.Update(context.Background(), func(t *stated.Txn) error {
		t.AddWindow("visits", []byte("ann"), time.UnixMilli(1_000), stated.NoValue())
		t.AddWindow("visits", []byte("ann"), time.UnixMilli(2_000), stated.NoValue())
		t.AddWindow("visits", []byte("bob"), time.UnixMilli(61_000), stated.NoValue())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		head, row1 string
	}{
		{[]string{"open", "visits"}, "KEY START END CLOSES STATE COUNT", "bob 1970-01-01T00:01:00.000Z 1970-01-01T00:02:00.000Z 1970-01-01T00:02:00.000Z open 1"},
		{[]string{"get", "visits", "ann"}, "START END CLOSES STATE COUNT", "1970-01-01T00:00:00.000Z 1970-01-01T00:01:00.000Z 1970-01-01T00:01:00.000Z closed 2"},
		{[]string{"emissions", "visits"}, "ID KIND KEY START END COUNT WATERMARK", "1 final ann 1970-01-01T00:00:00.000Z 1970-01-01T00:01:00.000Z 2 1970-01-01T00:01:01.000Z"},
	} {
		out := mustSucceed(t, client(t, d, append([]string{"windows"}, tc.args...)...))
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 2 || fields(lines[0]) != tc.head || fields(lines[1]) != tc.row1 {
			t.Errorf("windows %s:\n%s\nwant\n%s\n%s", strings.Join(tc.args, " "), out, tc.head, tc.row1)
		}
	}
}
