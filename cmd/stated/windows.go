package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/statedhq/stated/daemon"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	stated "github.com/statedhq/stated/sdk/go"
)

func (c *cli) windowsCommand() *cobra.Command {
	w := &cobra.Command{
		Use:   "windows",
		Short: "Define window namespaces and read their windows, emissions and watermarks",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	w.AddCommand(c.windowsDefine(), c.windowsList(), c.windowsGet(), c.windowsOpen(), c.windowsEmissions())
	return w
}

// specFlags are the flags of `windows define`, by the wire field each
// sets, so that a refusal of a field can name the flag.
var specFlags = map[string]string{
	"size_ms": "--tumbling", "advance_ms": "--advance", "gap_ms": "--session",
	"grace_ms": "--grace", "max_out_of_order_ms": "--max-out-of-order", "retention_ms": "--retention",
	"idle_timeout_ms": "--idle-timeout", "aggregate": "--aggregate", "max_list_values": "--max-list-values",
	"emit": "--emit", "late": "--late", "max_pending_emissions": "--max-pending", "namespace": "NS",
}

// defineFlags holds `windows define`'s flags.
type defineFlags struct {
	tumbling, hopping, advance, session   time.Duration
	grace, maxOutOfOrder, retention, idle time.Duration
	aggregate, emit, late                 string
	maxListValues                         int
	maxPending                            int64
}

func (c *cli) windowsDefine() *cobra.Command {
	var d defineFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "define NS (--tumbling SIZE | --hopping SIZE --advance A | --session GAP) --grace G --max-out-of-order D --aggregate AGG",
		Short: "Define a window namespace (immutable: defining it again identically is a no-op)",
		Long: `Define the window namespace NS. Its shape is one of --tumbling SIZE,
--hopping SIZE --advance A, or --session GAP. --grace (how long after its end a
window still takes records; 0 means no lateness) and --max-out-of-order (how far
a source's watermark trails its newest event time) are required. --aggregate is
count, sum-int, sum-float, min-int, max-int, min-float, max-float, last, list
(with --max-list-values) or opaque (tumbling only). Durations are whole
milliseconds (1m, 10s, 250ms). --retention defaults to size + grace (session:
gap + grace) and may not be lower; --idle-timeout (default 1m) is how long a
silent source holds the watermark back.

A namespace cannot change: defining it again with the same settings succeeds
and changes nothing, with other settings it fails naming the first difference.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		spec, err := d.spec(cmd.Flags(), args[0])
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			if err := client.DefineWindows(ctx, spec); err != nil {
				return err
			}
			st, err := windowStatus(ctx, client, spec.Namespace)
			if err != nil {
				return err
			}
			if asJSON {
				return c.printJSON(specOutputOf(st.Spec))
			}
			fmt.Fprintf(c.stdout, "window namespace %q: %s, retention %s, idle timeout %s, max pending %d\n", st.Spec.Namespace,
				st.Spec, st.Spec.Retention, st.Spec.IdleTimeout, st.Spec.MaxPendingEmissions)
			return nil
		})
	})
	f := cmd.Flags()
	f.DurationVar(&d.tumbling, "tumbling", 0, "tumbling windows of this size")
	f.DurationVar(&d.hopping, "hopping", 0, "hopping windows of this size (with --advance)")
	f.DurationVar(&d.advance, "advance", 0, "how far apart hopping windows start (0 < advance <= size)")
	f.DurationVar(&d.session, "session", 0, "session windows that end after this gap")
	f.DurationVar(&d.grace, "grace", 0, "required: how long after its end a window still takes records (0 for no lateness)")
	f.DurationVar(&d.maxOutOfOrder, "max-out-of-order", 0, "required: how far a source's watermark trails its newest event time")
	f.DurationVar(&d.retention, "retention", 0, "how long, from its start, a closed window stays readable (default size + grace)")
	f.DurationVar(&d.idle, "idle-timeout", 0, "how long a silent source holds the watermark back (default 1m)")
	f.StringVar(&d.aggregate, "aggregate", "", "required: count, sum-int, sum-float, min-int, max-int, min-float, max-float, last, list or opaque")
	f.IntVar(&d.maxListValues, "max-list-values", 0, "list aggregate: keep the first N values (1 to 10000)")
	f.StringVar(&d.emit, "emit", "final", "final (one result per window) or updates (also every change)")
	f.StringVar(&d.late, "late", "drop", "late records: drop (and count) or return (to the committer)")
	f.Int64Var(&d.maxPending, "max-pending", 0, "refuse adds while this many emissions are unacknowledged (default 100000)")
	f.BoolVar(&asJSON, "json", false, "print the namespace's spec as JSON")
	return cmd
}

// spec checks the flags and builds the spec; its errors name the flag.
func (d *defineFlags) spec(fs *pflag.FlagSet, ns string) (stated.WindowSpec, error) {
	s := stated.WindowSpec{Namespace: ns, Grace: d.grace, MaxOutOfOrder: d.maxOutOfOrder, Retention: d.retention,
		IdleTimeout: d.idle, MaxListValues: d.maxListValues, MaxPendingEmissions: d.maxPending}
	var shapes []string
	for _, name := range []string{"tumbling", "hopping", "session"} {
		if fs.Changed(name) {
			shapes = append(shapes, "--"+name)
		}
	}
	switch {
	case len(shapes) == 0:
		return s, errors.New("give the shape: --tumbling SIZE, --hopping SIZE --advance A, or --session GAP")
	case len(shapes) > 1:
		return s, fmt.Errorf("%s: give only one shape", strings.Join(shapes, " and "))
	case fs.Changed("advance") && !fs.Changed("hopping"):
		return s, errors.New("--advance is for --hopping windows only")
	case fs.Changed("hopping") && !fs.Changed("advance"):
		return s, errors.New("--hopping needs --advance")
	}
	switch {
	case fs.Changed("tumbling"):
		s.Shape, s.Size = stated.Tumbling, d.tumbling
	case fs.Changed("hopping"):
		s.Shape, s.Size, s.Advance = stated.Hopping, d.hopping, d.advance
	default:
		s.Shape, s.Gap = stated.Session, d.session
	}
	for _, name := range []string{"grace", "max-out-of-order", "aggregate"} {
		if !fs.Changed(name) {
			hint := ""
			if name != "aggregate" {
				hint = "; 0 means no lateness"
			}
			return s, fmt.Errorf("--%s is required%s", name, hint)
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"tumbling", d.tumbling}, {"hopping", d.hopping}, {"advance", d.advance}, {"session", d.session},
		{"grace", d.grace}, {"max-out-of-order", d.maxOutOfOrder}, {"retention", d.retention}, {"idle-timeout", d.idle}} {
		if f.d%time.Millisecond != 0 {
			return s, fmt.Errorf("--%s %s is not a whole number of milliseconds", f.name, f.d)
		}
	}
	agg, ok := stated.ParseAggregate(d.aggregate)
	if !ok {
		return s, fmt.Errorf("--aggregate %q: want count, sum-int, sum-float, min-int, max-int, min-float, max-float, last, list or opaque", d.aggregate)
	}
	s.Aggregate = agg
	switch d.emit {
	case "final":
		s.Emit = stated.EmitFinal
	case "updates":
		s.Emit = stated.EmitUpdates
	default:
		return s, fmt.Errorf("--emit %q: want final or updates", d.emit)
	}
	switch d.late {
	case "drop":
		s.Late = stated.LateDrop
	case "return":
		s.Late = stated.LateReturn
	default:
		return s, fmt.Errorf("--late %q: want drop or return", d.late)
	}
	// The daemon's own validation, run here so that a bad flag is a
	// usage error naming the flag rather than a refusal naming a field.
	if err := daemon.ValidateWindowSpec(wireSpec(s)); err != nil {
		var fe *daemon.FieldError
		if errors.As(err, &fe) {
			flag := specFlags[fe.Field]
			if fe.Field == "size_ms" {
				flag = "--" + s.Shape.String()
			}
			return s, fmt.Errorf("%s: %s", flag, fe.Reason)
		}
		return s, err
	}
	return s, nil
}

// wireSpec is s as the daemon receives it, for validation.
func wireSpec(s stated.WindowSpec) *statedv1.WindowSpec {
	grace, ooo := s.Grace.Milliseconds(), s.MaxOutOfOrder.Milliseconds()
	return &statedv1.WindowSpec{
		Namespace: s.Namespace, Shape: statedv1.WindowShape(s.Shape),
		SizeMs: s.Size.Milliseconds(), AdvanceMs: s.Advance.Milliseconds(), GapMs: s.Gap.Milliseconds(),
		GraceMs: &grace, MaxOutOfOrderMs: &ooo,
		RetentionMs: s.Retention.Milliseconds(), IdleTimeoutMs: s.IdleTimeout.Milliseconds(),
		Aggregate: statedv1.WindowAggregate(s.Aggregate), MaxListValues: int32(min(max(s.MaxListValues, -1), 1<<31-1)),
		Emit: statedv1.WindowEmit(s.Emit), Late: statedv1.LatePolicy(s.Late), MaxPendingEmissions: s.MaxPendingEmissions,
	}
}

// specOutput is a namespace's spec in --json output; durations in
// milliseconds, as on the wire.
type specOutput struct {
	Namespace           string `json:"namespace"`
	Shape               string `json:"shape"`
	SizeMs              int64  `json:"size_ms,omitempty"`
	AdvanceMs           int64  `json:"advance_ms,omitempty"`
	GapMs               int64  `json:"gap_ms,omitempty"`
	GraceMs             int64  `json:"grace_ms"`
	MaxOutOfOrderMs     int64  `json:"max_out_of_order_ms"`
	RetentionMs         int64  `json:"retention_ms"`
	IdleTimeoutMs       int64  `json:"idle_timeout_ms"`
	Aggregate           string `json:"aggregate"`
	MaxListValues       int    `json:"max_list_values,omitempty"`
	Emit                string `json:"emit"`
	Late                string `json:"late"`
	MaxPendingEmissions int64  `json:"max_pending_emissions"`
}

func specOutputOf(s stated.WindowSpec) specOutput {
	return specOutput{
		Namespace: s.Namespace, Shape: s.Shape.String(), SizeMs: s.Size.Milliseconds(), AdvanceMs: s.Advance.Milliseconds(),
		GapMs: s.Gap.Milliseconds(), GraceMs: s.Grace.Milliseconds(), MaxOutOfOrderMs: s.MaxOutOfOrder.Milliseconds(),
		RetentionMs: s.Retention.Milliseconds(), IdleTimeoutMs: s.IdleTimeout.Milliseconds(), Aggregate: s.Aggregate.String(),
		MaxListValues: s.MaxListValues, Emit: s.Emit.String(), Late: s.Late.String(), MaxPendingEmissions: s.MaxPendingEmissions,
	}
}

// windowStatus returns the status of the window namespace ns, or an error
// saying it is not defined.
func windowStatus(ctx context.Context, client *stated.Client, ns string) (stated.WindowStatus, error) {
	all, err := client.WindowStatus(ctx)
	if err != nil {
		return stated.WindowStatus{}, err
	}
	for _, st := range all {
		if st.Spec.Namespace == ns {
			return st, nil
		}
	}
	return stated.WindowStatus{}, &exitError{code: exitFailed, err: fmt.Errorf("window namespace %q is not defined", ns)}
}

// namespaceOutput is one namespace in `windows list --json`. Watermarks
// and event times are milliseconds since the Unix epoch; watermark is -1
// until something moved it, max_event_time before the first record.
type namespaceOutput struct {
	Spec         specOutput     `json:"spec"`
	Watermark    int64          `json:"watermark"`
	MaxEventTime int64          `json:"max_event_time"`
	LagMs        int64          `json:"lag_ms"`
	OpenWindows  int64          `json:"open_windows"`
	Pending      int64          `json:"pending"`
	LateDropped  int64          `json:"late_dropped"`
	LateReturned int64          `json:"late_returned"`
	Adds         int64          `json:"adds"`
	Sources      []sourceOutput `json:"sources"`
}

type sourceOutput struct {
	Source     string `json:"source"`
	Watermark  int64  `json:"watermark"`
	LastActive string `json:"last_active"` // RFC 3339
}

func watermarkMs(t time.Time, ok bool) int64 {
	if !ok {
		return -1
	}
	return t.UnixMilli()
}

func namespaceOutputOf(st stated.WindowStatus) namespaceOutput {
	o := namespaceOutput{
		Spec: specOutputOf(st.Spec), Watermark: watermarkMs(st.Watermark, st.HasWatermark),
		MaxEventTime: watermarkMs(st.MaxEventTime, !st.MaxEventTime.IsZero()), LagMs: st.Lag.Milliseconds(), OpenWindows: st.OpenWindows,
		Pending: st.Pending, LateDropped: st.LateDropped, LateReturned: st.LateReturned, Adds: st.Adds,
		Sources: []sourceOutput{},
	}
	for _, s := range st.Sources {
		o.Sources = append(o.Sources, sourceOutput{Source: s.Source, Watermark: watermarkMs(s.Watermark, s.HasWatermark),
			LastActive: s.LastActive.UTC().Format(time.RFC3339Nano)})
	}
	return o
}

func (c *cli) windowsList() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the window namespaces: watermark, lag, open windows, pending emissions, late records",
		Long: `List the window namespaces by name: shape and aggregate, the watermark
(event time up to which windows are closed; "-" until records or hints move
it), the lag (how far the watermark trails the newest event time), open
windows, pending (unacknowledged) emissions, late records dropped and
returned, records added, and the number of sources.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, _ []string) error {
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			all, err := client.WindowStatus(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				for _, st := range all {
					if err := c.printJSON(namespaceOutputOf(st)); err != nil {
						return err
					}
				}
				return nil
			}
			if len(all) == 0 {
				fmt.Fprintln(c.stderr, "no window namespaces defined")
				return nil
			}
			return c.printWindowNamespaces(all)
		})
	})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per namespace")
	return cmd
}

// printWindowNamespaces prints one line per window namespace: `windows
// list`, and the window part of `status`.
func (c *cli) printWindowNamespaces(all []stated.WindowStatus) error {
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tSPEC\tWATERMARK\tLAG\tOPEN\tPENDING\tLATE DROPPED\tLATE RETURNED\tADDS\tSOURCES")
	for _, st := range all {
		wm, lag := "-", "-"
		if st.HasWatermark {
			wm, lag = eventTime(st.Watermark), st.Lag.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", st.Spec.Namespace, st.Spec, wm, lag,
			st.OpenWindows, st.Pending, st.LateDropped, st.LateReturned, st.Adds, len(st.Sources))
	}
	return w.Flush()
}

// eventTime formats an event time: RFC 3339 in UTC with milliseconds.
func eventTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// parseEventTime reads --from or --to: RFC 3339, or milliseconds since
// the Unix epoch.
func parseEventTime(flag, s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms < 0 || ms > daemon.MaxEventTime {
			return time.Time{}, fmt.Errorf("--%s %d is outside 0 to %d ms", flag, ms, int64(daemon.MaxEventTime))
		}
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want RFC 3339 (2026-11-30T08:00:00Z) or milliseconds since the Unix epoch", flag, s)
	}
	return t, nil
}

// windowOutput is a window in --json output; times are milliseconds since
// the Unix epoch. Bytes that are valid UTF-8 print as strings.
type windowOutput struct {
	Namespace string   `json:"namespace"`
	Key       string   `json:"key"`
	StartMs   int64    `json:"start_ms"`
	EndMs     int64    `json:"end_ms"`
	CloseMs   int64    `json:"close_ms"`
	Closed    bool     `json:"closed"`
	Count     int64    `json:"count"`
	Int       *int64   `json:"int,omitempty"`
	Float     *float64 `json:"float,omitempty"`
	Bytes     *string  `json:"bytes,omitempty"`
	Values    []string `json:"values,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
}

// aggValue is a window's or emission's result as its aggregate has it.
type aggValue struct {
	Count     int64
	Int       int64
	Float     float64
	Bytes     []byte
	Values    [][]byte
	Truncated bool
}

// aggHeader is the header of the aggregate's column after COUNT; none
// for the count aggregate, whose value COUNT is.
func aggHeader(agg stated.Aggregate) string {
	if agg == stated.Count {
		return ""
	}
	return "\t" + strings.ToUpper(agg.String())
}

// aggCell is the aggregate's cell v, as aggHeader heads it.
func aggCell(agg stated.Aggregate, v string) string {
	if agg == stated.Count {
		return ""
	}
	return "\t" + v
}

// text prints the result for agg: the count, the number, the bytes, or
// the list of values.
func (v aggValue) text(agg stated.Aggregate) string {
	switch agg {
	case stated.SumInt, stated.MinInt, stated.MaxInt:
		return strconv.FormatInt(v.Int, 10)
	case stated.SumFloat, stated.MinFloat, stated.MaxFloat:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	case stated.Last, stated.Opaque:
		return printable(v.Bytes)
	case stated.CollectList:
		parts := make([]string, len(v.Values))
		for i, b := range v.Values {
			parts[i] = printable(b)
		}
		s := "[" + strings.Join(parts, " ") + "]"
		if v.Truncated {
			s += " (truncated)"
		}
		return s
	}
	return strconv.FormatInt(v.Count, 10)
}

// set fills the JSON fields of the aggregate's result.
func (v aggValue) set(agg stated.Aggregate, i **int64, f **float64, b **string, vs *[]string) {
	switch agg {
	case stated.SumInt, stated.MinInt, stated.MaxInt:
		n := v.Int
		*i = &n
	case stated.SumFloat, stated.MinFloat, stated.MaxFloat:
		x := v.Float
		*f = &x
	case stated.Last, stated.Opaque:
		s := string(v.Bytes)
		*b = &s
	case stated.CollectList:
		*vs = make([]string, len(v.Values))
		for j, x := range v.Values {
			(*vs)[j] = string(x)
		}
	}
}

func (c *cli) printWindows(ns string, agg stated.Aggregate, ws []stated.Window, withKey, asJSON bool) error {
	if asJSON {
		for _, w := range ws {
			o := windowOutput{Namespace: ns, Key: string(w.Key), StartMs: w.Start.UnixMilli(), EndMs: w.End.UnixMilli(),
				CloseMs: w.Close.UnixMilli(), Closed: w.Closed, Count: w.Count, Truncated: w.Truncated}
			aggValue{w.Count, w.Int, w.Float, w.Bytes, w.Values, w.Truncated}.set(agg, &o.Int, &o.Float, &o.Bytes, &o.Values)
			if err := c.printJSON(o); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	header := "START\tEND\tCLOSES\tSTATE\tCOUNT" + aggHeader(agg)
	if withKey {
		header = "KEY\t" + header
	}
	fmt.Fprintln(tw, header)
	for _, w := range ws {
		state := "open"
		if w.Closed {
			state = "closed"
		}
		if withKey {
			fmt.Fprintf(tw, "%s\t", printable(w.Key))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%s\n", eventTime(w.Start), eventTime(w.End), eventTime(w.Close), state, w.Count,
			aggCell(agg, aggValue{w.Count, w.Int, w.Float, w.Bytes, w.Values, w.Truncated}.text(agg)))
	}
	return tw.Flush()
}

func (c *cli) windowsGet() *cobra.Command {
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get NS KEY",
		Short: "Print a key's windows (open, and closed ones still retained) in start order",
		Long: `Print the windows of KEY in the window namespace NS whose start is in
[--from, --to): open ones, and closed ones the namespace still retains. Times
are RFC 3339 or milliseconds since the Unix epoch; without --to there is no
upper bound.`,
		Args: cobra.ExactArgs(2),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		var fromT, toT time.Time
		var err error
		if from != "" {
			if fromT, err = parseEventTime("from", from); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
		}
		if to != "" {
			if toT, err = parseEventTime("to", to); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
		}
		if from != "" && to != "" && toT.Before(fromT) {
			return &exitError{code: exitUsage, err: fmt.Errorf("--to %s is before --from %s", to, from)}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			st, err := windowStatus(ctx, client, args[0])
			if err != nil {
				return err
			}
			ws, err := client.Windows(ctx, args[0], []byte(args[1]), fromT, toT)
			if err != nil {
				return err
			}
			if len(ws) == 0 && !asJSON {
				fmt.Fprintf(c.stderr, "no windows of key %q in window namespace %q\n", args[1], args[0])
				return nil
			}
			return c.printWindows(args[0], st.Spec.Aggregate, ws, false, asJSON)
		})
	})
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "the earliest window start (RFC 3339 or Unix milliseconds)")
	f.StringVar(&to, "to", "", "windows that start before this (RFC 3339 or Unix milliseconds)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per window")
	return cmd
}

func (c *cli) windowsOpen() *cobra.Command {
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "open NS",
		Short: "List a window namespace's open windows in key and start order",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		if limit < 0 {
			return &exitError{code: exitUsage, err: fmt.Errorf("--limit %d is negative", limit)}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			st, err := windowStatus(ctx, client, args[0])
			if err != nil {
				return err
			}
			var ws []stated.Window
			for w, err := range client.OpenWindows(ctx, args[0]) {
				if err != nil {
					return err
				}
				ws = append(ws, w)
				if limit > 0 && len(ws) == limit {
					break
				}
			}
			if len(ws) == 0 && !asJSON {
				fmt.Fprintf(c.stderr, "no open windows in window namespace %q\n", args[0])
				return nil
			}
			return c.printWindows(args[0], st.Spec.Aggregate, ws, true, asJSON)
		})
	})
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 0, "stop after N windows (0 for all)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per window")
	return cmd
}

// emissionOutput is an emission in --json output.
type emissionOutput struct {
	Namespace string   `json:"namespace"`
	ID        uint64   `json:"id"`
	Kind      string   `json:"kind"`
	Key       string   `json:"key"`
	StartMs   int64    `json:"start_ms"`
	EndMs     int64    `json:"end_ms"`
	Count     int64    `json:"count"`
	Int       *int64   `json:"int,omitempty"`
	Float     *float64 `json:"float,omitempty"`
	Bytes     *string  `json:"bytes,omitempty"`
	Values    []string `json:"values,omitempty"`
	Truncated bool     `json:"truncated,omitempty"`
	Watermark int64    `json:"watermark"`
}

func (c *cli) windowsEmissions() *cobra.Command {
	var after uint64
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "emissions NS",
		Short: "List a window namespace's pending (unacknowledged) emissions in id order",
		Long: `List the emissions of the window namespace NS that no commit has
acknowledged yet, in id order, after --after: closed windows (final), updates
and fired timers, with the watermark when each was written.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = runtime(func(cmd *cobra.Command, args []string) error {
		if limit < 0 || limit > 10000 {
			return &exitError{code: exitUsage, err: fmt.Errorf("--limit %d is outside 0 to 10000", limit)}
		}
		return c.withClient(cmd, func(ctx context.Context, client *stated.Client) error {
			st, err := windowStatus(ctx, client, args[0])
			if err != nil {
				return err
			}
			agg := st.Spec.Aggregate
			var all []stated.Emission
			for cursor := after; ; {
				page, err := client.Emissions(ctx, args[0], cursor, 1000)
				if err != nil {
					return err
				}
				all = append(all, page...)
				if len(page) < 1000 || (limit > 0 && len(all) >= limit) {
					break
				}
				cursor = page[len(page)-1].ID
			}
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			if asJSON {
				for _, e := range all {
					o := emissionOutput{Namespace: e.Namespace, ID: e.ID, Kind: e.Kind.String(), Key: string(e.Key),
						StartMs: e.Start.UnixMilli(), EndMs: e.End.UnixMilli(), Count: e.Count, Truncated: e.Truncated,
						Watermark: e.Watermark.UnixMilli()}
					if e.Kind != stated.EmissionTimer {
						aggValue{e.Count, e.Int, e.Float, e.Bytes, e.Values, e.Truncated}.set(agg, &o.Int, &o.Float, &o.Bytes, &o.Values)
					}
					if err := c.printJSON(o); err != nil {
						return err
					}
				}
				return nil
			}
			if len(all) == 0 {
				fmt.Fprintf(c.stderr, "no pending emissions in window namespace %q\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tKEY\tSTART\tEND\tCOUNT"+aggHeader(agg)+"\tWATERMARK")
			for _, e := range all {
				val := "-"
				if e.Kind != stated.EmissionTimer {
					val = aggValue{e.Count, e.Int, e.Float, e.Bytes, e.Values, e.Truncated}.text(agg)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d%s\t%s\n", e.ID, e.Kind, printable(e.Key), eventTime(e.Start),
					eventTime(e.End), e.Count, aggCell(agg, val), eventTime(e.Watermark))
			}
			return tw.Flush()
		})
	})
	f := cmd.Flags()
	f.Uint64Var(&after, "after", 0, "list emissions with an id greater than this")
	f.IntVar(&limit, "limit", 0, "stop after N emissions (0 for all)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per emission")
	return cmd
}
