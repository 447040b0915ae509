package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statedhq/stated/daemon/authz"
	statedv1 "github.com/statedhq/stated/proto/statedv1"
	"github.com/statedhq/stated/raftstore"
	"github.com/statedhq/stated/raftstore/command"
	"github.com/statedhq/stated/raftstore/fsm"
)

// WindowStore is what the Windows service needs from the replicated
// store; *raftstore.Store satisfies it.
type WindowStore interface {
	// DefineWindows proposes a window namespace's definition; created is
	// false when it existed with the same spec.
	DefineWindows(ctx context.Context, spec command.WindowSpec) (created bool, err error)
	WindowStatuses() ([]fsm.WindowStatus, error)
	// Windows, OpenWindows and Emissions read the local state; an
	// undefined namespace is a *fsm.RejectError.
	Windows(ns string, key []byte, fromMs, toMs int64) ([]fsm.Window, error)
	OpenWindows(ns string, afterKey []byte, afterStart int64, limit int) ([]fsm.Window, error)
	Emissions(ns string, afterID uint64, limit int) ([]command.Emission, error)
	ReadBarrier(ctx context.Context, c raftstore.Consistency, minIndex uint64) (uint64, error)
	AppliedIndex() uint64
	Leadership
}

// WindowsServer implements statedv1.WindowsServer over a WindowStore.
// Define is a write: a follower forwards it to the leader. Reads are
// served like State's: LINEARIZABLE ones by the leader, others here.
type WindowsServer struct {
	statedv1.UnimplementedWindowsServer
	store  WindowStore
	logger *slog.Logger
	fwd    forwarding
}

// NewWindows returns a WindowsServer serving store.
func NewWindows(store WindowStore, opts ...Option) *WindowsServer {
	o := newOptions(opts)
	return &WindowsServer{store: store, logger: o.logger, fwd: newForwarding(store, o)}
}

// Define validates the spec and proposes it; a follower forwards it.
func (s *WindowsServer) Define(ctx context.Context, r *statedv1.DefineWindowsRequest) (*statedv1.DefineWindowsResponse, error) {
	spec, err := specFromWire(r.GetSpec())
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	conn, fctx, err := s.fwd.leaderConn(ctx)
	if err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	if conn != nil {
		resp, err := statedv1.NewWindowsClient(conn).Define(fctx, r)
		return resp, statusOf(ctx, s.logger, forwardedError(err))
	}
	created, err := s.store.DefineWindows(ctx, spec)
	var re *fsm.RejectError
	if errors.As(err, &re) {
		// A redefinition, refused naming a spec field: name it as the
		// request has it.
		err = invalid("spec."+re.Field, "%s", re.Reason)
	}
	if err != nil {
		return nil, statusOf(ctx, s.logger, under("spec", err))
	}
	return &statedv1.DefineWindowsResponse{Index: s.store.AppliedIndex(), Created: created}, nil
}

// specFromWire validates a wire spec as the state machine will, with
// field paths under "spec".
func specFromWire(w *statedv1.WindowSpec) (command.WindowSpec, error) {
	if w == nil {
		return command.WindowSpec{}, invalid("spec", "required")
	}
	spec, err := ValidateWindowSpec(w)
	if err != nil {
		return command.WindowSpec{}, under("spec", err)
	}
	return spec, nil
}

// ValidateWindowSpec checks w as DefineWindows does and returns it in the
// state machine's terms. A refusal is a *command.FieldError naming the
// wire's field ("size_ms"), for callers that check a spec before they
// send it, such as `stated windows define`.
func ValidateWindowSpec(w *statedv1.WindowSpec) (command.WindowSpec, error) {
	refuse := func(field, format string, args ...any) (command.WindowSpec, error) {
		return command.WindowSpec{}, &command.FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if w.GraceMs == nil {
		return refuse("grace_ms", "required; 0 means no lateness")
	}
	if w.MaxOutOfOrderMs == nil {
		return refuse("max_out_of_order_ms", "required; 0 means no lateness")
	}
	// Enum values outside a byte are refused here, since the command
	// stores them in a byte; those within it the spec's validation judges.
	for _, e := range []struct {
		field string
		v     int32
	}{{"shape", int32(w.GetShape())}, {"aggregate", int32(w.GetAggregate())}, {"emit", int32(w.GetEmit())}, {"late", int32(w.GetLate())}} {
		if e.v < 0 || e.v > math.MaxUint8 {
			return refuse(e.field, "unknown value %d", e.v)
		}
	}
	spec := command.WindowSpec{
		Namespace: w.GetNamespace(), Shape: command.Shape(w.GetShape()),
		SizeMs: w.GetSizeMs(), AdvanceMs: w.GetAdvanceMs(), GapMs: w.GetGapMs(),
		GraceMs: w.GetGraceMs(), MaxOutOfOrderMs: w.GetMaxOutOfOrderMs(),
		RetentionMs: w.GetRetentionMs(), IdleTimeoutMs: w.GetIdleTimeoutMs(),
		Aggregate: command.Aggregate(w.GetAggregate()), MaxListValues: w.GetMaxListValues(),
		Emit: command.EmitMode(w.GetEmit()), Late: command.LatePolicy(w.GetLate()),
		MaxPendingEmissions: w.GetMaxPendingEmissions(),
	}
	if err := command.ValidateNewWindowSpec(&spec); err != nil {
		return command.WindowSpec{}, err
	}
	return spec, nil
}

// under converts a *command.FieldError into a *fieldError whose field is
// under parent, e.g. "size_ms" under "spec".
func under(parent string, err error) error {
	var fe *command.FieldError
	if errors.As(err, &fe) {
		return &fieldError{Field: parent + "." + fe.Field, Reason: fe.Reason}
	}
	return err
}

func specToWire(s command.WindowSpec) *statedv1.WindowSpec {
	grace, ooo := s.GraceMs, s.MaxOutOfOrderMs
	return &statedv1.WindowSpec{
		Namespace: s.Namespace, Shape: statedv1.WindowShape(s.Shape),
		SizeMs: s.SizeMs, AdvanceMs: s.AdvanceMs, GapMs: s.GapMs, GraceMs: &grace, MaxOutOfOrderMs: &ooo,
		RetentionMs: s.RetentionMs, IdleTimeoutMs: s.IdleTimeoutMs,
		Aggregate: statedv1.WindowAggregate(s.Aggregate), MaxListValues: s.MaxListValues,
		Emit: statedv1.WindowEmit(s.Emit), Late: statedv1.LatePolicy(s.Late),
		MaxPendingEmissions: s.MaxPendingEmissions,
	}
}

// windowRead serves a read as State does: a LINEARIZABLE one on a follower is
// forwarded (forward is called with the leader's connection), any other
// waits for its consistency and runs local with the applied index.
func windowRead[Resp any](ctx context.Context, s *WindowsServer, ro *statedv1.ReadOptions,
	forward func(statedv1.WindowsClient, context.Context) (Resp, error), local func(applied uint64) (Resp, error)) (Resp, error) {
	var zero Resp
	if consistency(ro) == raftstore.Linearizable {
		conn, fctx, err := s.fwd.leaderConn(ctx)
		if err != nil {
			return zero, statusOf(ctx, s.logger, err)
		}
		if conn != nil {
			resp, err := forward(statedv1.NewWindowsClient(conn), fctx)
			return resp, statusOf(ctx, s.logger, forwardedError(err))
		}
	}
	if _, err := s.store.ReadBarrier(ctx, consistency(ro), ro.GetMinIndex()); err != nil {
		return zero, statusOf(ctx, s.logger, err)
	}
	resp, err := local(s.store.AppliedIndex())
	if err != nil {
		return zero, statusOf(ctx, s.logger, err)
	}
	return resp, nil
}

// Get returns one key's windows starting in [from_ms, to_ms).
func (s *WindowsServer) Get(ctx context.Context, r *statedv1.GetWindowsRequest) (*statedv1.GetWindowsResponse, error) {
	if err := validateGetWindows(r); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	to := r.GetToMs()
	if to == 0 {
		to = command.MaxEventTime + 1
	}
	return windowRead(ctx, s, r.GetRead(),
		func(c statedv1.WindowsClient, fctx context.Context) (*statedv1.GetWindowsResponse, error) {
			return c.Get(fctx, r)
		},
		func(applied uint64) (*statedv1.GetWindowsResponse, error) {
			ws, err := s.store.Windows(r.GetNamespace(), r.GetKey(), r.GetFromMs(), to)
			if err != nil {
				return nil, err
			}
			return &statedv1.GetWindowsResponse{Windows: windowsToWire(ws), AppliedIndex: applied}, nil
		})
}

// ListOpen returns a page of a namespace's open windows.
func (s *WindowsServer) ListOpen(ctx context.Context, r *statedv1.ListOpenWindowsRequest) (*statedv1.ListOpenWindowsResponse, error) {
	if err := validateListOpen(r); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	limit := pageLimit(r.GetLimit())
	return windowRead(ctx, s, r.GetRead(),
		func(c statedv1.WindowsClient, fctx context.Context) (*statedv1.ListOpenWindowsResponse, error) {
			return c.ListOpen(fctx, r)
		},
		func(applied uint64) (*statedv1.ListOpenWindowsResponse, error) {
			var after []byte
			if len(r.GetAfterKey()) > 0 {
				after = r.GetAfterKey()
			}
			// One more than the page, to tell whether another follows.
			ws, err := s.store.OpenWindows(r.GetNamespace(), after, r.GetAfterStartMs(), limit+1)
			if err != nil {
				return nil, err
			}
			more := len(ws) > limit
			if more {
				ws = ws[:limit]
			}
			return &statedv1.ListOpenWindowsResponse{Windows: windowsToWire(ws), More: more, AppliedIndex: applied}, nil
		})
}

// Emissions returns a page of a namespace's pending emissions.
func (s *WindowsServer) Emissions(ctx context.Context, r *statedv1.ReadEmissionsRequest) (*statedv1.ReadEmissionsResponse, error) {
	if err := validateReadEmissions(r); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	limit := pageLimit(r.GetLimit())
	return windowRead(ctx, s, r.GetRead(),
		func(c statedv1.WindowsClient, fctx context.Context) (*statedv1.ReadEmissionsResponse, error) {
			return c.Emissions(fctx, r)
		},
		func(applied uint64) (*statedv1.ReadEmissionsResponse, error) {
			es, err := s.store.Emissions(r.GetNamespace(), r.GetAfterId(), limit+1)
			if err != nil {
				return nil, err
			}
			more := len(es) > limit
			if more {
				es = es[:limit]
			}
			return &statedv1.ReadEmissionsResponse{Emissions: emissionsToWire(es), More: more, AppliedIndex: applied}, nil
		})
}

// Status reports the one window namespace asked for, or every one the
// caller's token may see (authz.Visible: all without a token file).
func (s *WindowsServer) Status(ctx context.Context, r *statedv1.WindowStatusRequest) (*statedv1.WindowStatusResponse, error) {
	if r.GetNamespace() != "" {
		if err := validateWindowNS("namespace", r.GetNamespace()); err != nil {
			return nil, statusOf(ctx, s.logger, err)
		}
	}
	if err := validateRead("read", r.GetRead()); err != nil {
		return nil, statusOf(ctx, s.logger, err)
	}
	return windowRead(ctx, s, r.GetRead(),
		func(c statedv1.WindowsClient, fctx context.Context) (*statedv1.WindowStatusResponse, error) {
			return c.Status(fctx, r)
		},
		func(applied uint64) (*statedv1.WindowStatusResponse, error) {
			all, err := s.store.WindowStatuses()
			if err != nil {
				return nil, err
			}
			resp := &statedv1.WindowStatusResponse{AppliedIndex: applied}
			// A named namespace passed authorization already; every
			// namespace shows those the token may see.
			var visible func(string) bool
			if r.GetNamespace() == "" {
				visible = authz.Visible(ctx)
			}
			found := false
			for _, st := range all {
				if r.GetNamespace() != "" && st.Spec.Namespace != r.GetNamespace() {
					continue
				}
				if visible != nil && !visible(st.Spec.Namespace) {
					continue
				}
				found = true
				resp.Namespaces = append(resp.Namespaces, namespaceStatusToWire(st))
			}
			if r.GetNamespace() != "" && !found {
				return nil, invalid("namespace", "window namespace %q is not defined", r.GetNamespace())
			}
			return resp, nil
		})
}

func namespaceStatusToWire(st fsm.WindowStatus) *statedv1.WindowNamespaceStatus {
	n := &statedv1.WindowNamespaceStatus{
		Spec: specToWire(st.Spec), Watermark: st.Watermark, MaxEventTime: st.MaxEventTime,
		OpenWindows: st.OpenWindows, Pending: st.Pending, LateDropped: st.LateDropped,
		LateReturned: st.LateReturned, Adds: st.Adds,
	}
	for _, src := range st.Sources {
		n.Sources = append(n.Sources, &statedv1.WindowSourceStatus{
			Source: src.Source, Watermark: src.Watermark, MaxEventTime: src.MaxEventTime,
			LastActiveUnixMillis: src.LastActive / 1e6,
		})
	}
	return n
}

func windowsToWire(ws []fsm.Window) []*statedv1.Window {
	out := make([]*statedv1.Window, len(ws))
	for i, w := range ws {
		out[i] = &statedv1.Window{
			Key: w.Key, StartMs: w.StartMs, EndMs: w.EndMs, CloseMs: w.CloseMs, Closed: w.Closed,
			Count: w.Count, IntValue: w.Int, FloatValue: w.Float, BytesValue: w.Bytes, Values: w.Values, Truncated: w.Truncated,
		}
	}
	return out
}

func emissionsToWire(es []command.Emission) []*statedv1.Emission {
	if len(es) == 0 {
		return nil
	}
	out := make([]*statedv1.Emission, len(es))
	for i, e := range es {
		out[i] = &statedv1.Emission{
			Namespace: e.Namespace, Id: e.ID, Kind: statedv1.EmissionKind(e.Kind), Key: e.Key,
			StartMs: e.StartMs, EndMs: e.EndMs, Count: e.Count, IntValue: e.Int, FloatValue: e.Float,
			BytesValue: e.Bytes, Values: e.Values, Truncated: e.Truncated, Watermark: e.Watermark,
		}
	}
	return out
}

func addResultsToWire(as []command.AddStatus) []*statedv1.AddResult {
	if len(as) == 0 {
		return nil
	}
	out := make([]*statedv1.AddResult, len(as))
	for i, a := range as {
		out[i] = &statedv1.AddResult{Status: statedv1.AddStatus(a)}
	}
	return out
}

// pageLimit is a read page's size: 0 means defaultWindowPage.
func pageLimit(limit uint32) int {
	if limit == 0 {
		return defaultWindowPage
	}
	return int(limit)
}

// asFieldError converts a *command.FieldError into the package's own.
func asFieldError(err error) error {
	var fe *command.FieldError
	if errors.As(err, &fe) {
		return &fieldError{Field: fe.Field, Reason: fe.Reason}
	}
	return err
}

func validateWindowNS(field, ns string) error {
	return asFieldError(command.ValidateWindowNamespace(field, ns))
}

func validateWindowKey(field string, key []byte) error {
	if len(key) == 0 {
		return invalid(field, "empty")
	}
	return maxLen(field, key, MaxKeyBytes)
}

func validateEventTime(field string, t int64) error {
	return asFieldError(command.ValidateEventTime(field, t))
}

func validatePage(limit uint32) error {
	if limit > MaxWindowPage {
		return invalid("limit", "%d, limit %d", limit, MaxWindowPage)
	}
	return nil
}

func validateGetWindows(r *statedv1.GetWindowsRequest) error {
	if err := validateWindowNS("namespace", r.GetNamespace()); err != nil {
		return err
	}
	if err := validateWindowKey("key", r.GetKey()); err != nil {
		return err
	}
	if err := validateEventTime("from_ms", r.GetFromMs()); err != nil {
		return err
	}
	if to := r.GetToMs(); to != 0 {
		if err := validateEventTime("to_ms", to); err != nil {
			return err
		}
		if to < r.GetFromMs() {
			return invalid("to_ms", "%d is before from_ms %d", to, r.GetFromMs())
		}
	}
	return validateRead("read", r.GetRead())
}

func validateListOpen(r *statedv1.ListOpenWindowsRequest) error {
	if err := validateWindowNS("namespace", r.GetNamespace()); err != nil {
		return err
	}
	if err := maxLen("after_key", r.GetAfterKey(), MaxKeyBytes); err != nil {
		return err
	}
	if err := validatePage(r.GetLimit()); err != nil {
		return err
	}
	return validateRead("read", r.GetRead())
}

func validateReadEmissions(r *statedv1.ReadEmissionsRequest) error {
	if err := validateWindowNS("namespace", r.GetNamespace()); err != nil {
		return err
	}
	if err := validatePage(r.GetLimit()); err != nil {
		return err
	}
	return validateRead("read", r.GetRead())
}

// validateWindowParts checks a commit's window adds, watermark hints,
// acknowledgements and timers. Whether their namespaces are defined the
// state machine judges, in the entry: this node's state may lag.
func validateWindowParts(r *statedv1.CommitRequest) error {
	for _, n := range []struct {
		field string
		n     int
		limit int
	}{
		{"window_adds", len(r.GetWindowAdds()), MaxWindowAddsPerCommit},
		{"watermark_hints", len(r.GetWatermarkHints()), MaxWatermarkHintsPerCommit},
		{"acks", len(r.GetAcks()), MaxAcksPerCommit},
		{"timers", len(r.GetTimers()), MaxTimersPerCommit},
	} {
		if n.n > n.limit {
			return invalid(n.field, "%d entries, limit %d", n.n, n.limit)
		}
	}
	for i, a := range r.GetWindowAdds() {
		if err := validateWindowAdd(a); err != nil {
			return within(fmt.Sprintf("window_adds[%d]", i), err)
		}
	}
	for i, h := range r.GetWatermarkHints() {
		err := validateWindowNS("namespace", h.GetNamespace())
		if err == nil {
			err = validateSource("source", h.GetSource())
		}
		if err == nil {
			err = validateEventTime("time_ms", h.GetTimeMs())
		}
		if err != nil {
			return within(fmt.Sprintf("watermark_hints[%d]", i), err)
		}
	}
	type emission struct {
		ns string
		id uint64
	}
	seen := make(map[emission]int, len(r.GetAcks()))
	for i, a := range r.GetAcks() {
		if err := validateWindowNS("namespace", a.GetNamespace()); err != nil {
			return within(fmt.Sprintf("acks[%d]", i), err)
		}
		if a.GetId() == 0 {
			return invalid(fmt.Sprintf("acks[%d].id", i), "0; emission ids start at 1")
		}
		e := emission{a.GetNamespace(), a.GetId()}
		if j, dup := seen[e]; dup {
			return invalid(fmt.Sprintf("acks[%d]", i), "duplicate of acks[%d] (emission %d of %q)", j, e.id, e.ns)
		}
		seen[e] = i
	}
	for i, t := range r.GetTimers() {
		err := validateWindowNS("namespace", t.GetNamespace())
		if err == nil {
			err = validateWindowKey("key", t.GetKey())
		}
		if err == nil {
			err = validateEventTime("time_ms", t.GetTimeMs())
		}
		if err != nil {
			return within(fmt.Sprintf("timers[%d]", i), err)
		}
	}
	return nil
}

// validateWindowAdd checks one add; field paths are relative to it.
func validateWindowAdd(a *statedv1.WindowAdd) error {
	if err := validateWindowNS("namespace", a.GetNamespace()); err != nil {
		return err
	}
	if err := validateSource("source", a.GetSource()); err != nil {
		return err
	}
	if err := validateWindowKey("key", a.GetKey()); err != nil {
		return err
	}
	if err := validateEventTime("event_time_ms", a.GetEventTimeMs()); err != nil {
		return err
	}
	if f := a.GetFloatValue(); math.IsNaN(f) || math.IsInf(f, 0) {
		return invalid("float_value", "%v is not a finite number", f)
	}
	return maxLen("bytes_value", a.GetBytesValue(), MaxValueBytes)
}

func validateSource(field, src string) error {
	switch {
	case len(src) > MaxSourceBytes:
		return invalid(field, "%d bytes, limit %d", len(src), MaxSourceBytes)
	case !utf8.ValidString(src):
		return invalid(field, "not valid UTF-8")
	}
	return nil
}

// windowParts copies a validated request's window parts into c.
func windowParts(c *command.Commit, r *statedv1.CommitRequest) {
	if n := len(r.GetWindowAdds()); n > 0 {
		c.WindowAdds = make([]command.WindowAdd, n)
		for i, a := range r.GetWindowAdds() {
			c.WindowAdds[i] = command.WindowAdd{
				Namespace: a.GetNamespace(), Source: a.GetSource(), Key: a.GetKey(), EventTimeMs: a.GetEventTimeMs(),
				Int: a.GetIntValue(), Float: a.GetFloatValue(), Bytes: a.GetBytesValue(),
			}
		}
	}
	if n := len(r.GetWatermarkHints()); n > 0 {
		c.WatermarkHints = make([]command.WatermarkHint, n)
		for i, h := range r.GetWatermarkHints() {
			c.WatermarkHints[i] = command.WatermarkHint{Namespace: h.GetNamespace(), Source: h.GetSource(), TimeMs: h.GetTimeMs()}
		}
	}
	if n := len(r.GetAcks()); n > 0 {
		c.Acks = make([]command.EmissionAck, n)
		for i, a := range r.GetAcks() {
			c.Acks[i] = command.EmissionAck{Namespace: a.GetNamespace(), ID: a.GetId()}
		}
	}
	if n := len(r.GetTimers()); n > 0 {
		c.Timers = make([]command.TimerOp, n)
		for i, t := range r.GetTimers() {
			c.Timers[i] = command.TimerOp{Namespace: t.GetNamespace(), Key: t.GetKey(), TimeMs: t.GetTimeMs(), Delete: t.GetDelete()}
		}
	}
}

// outboxFullStatus is RESOURCE_EXHAUSTED with an OutboxFull detail, so
// that a client tells a full outbox from an oversized message.
// maxPending is the namespace's cap, 0 when unknown.
func outboxFullStatus(e *fsm.OutboxFullError, maxPending int64) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("namespace %q has %d unacknowledged emissions; acknowledge them first", e.Namespace, e.Pending))
	if d, err := st.WithDetails(&statedv1.OutboxFull{Namespace: e.Namespace, Pending: e.Pending, MaxPendingEmissions: maxPending}); err == nil {
		st = d
	}
	return st.Err()
}
