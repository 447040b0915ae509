package daemontest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// maxBufferedLines caps the debug and info lines kept for a failing test.
const maxBufferedLines = 5000

// testHandler is a slog.Handler that writes warnings and errors to t.Log at
// once, keeps the rest, and writes the rest to t.Log only if the test fails.
// After the test's cleanup it drops everything: t.Log must not be called
// once a test has finished, and Raft may still log while it shuts down.
type testHandler struct {
	st    *handlerState
	inner slog.Handler // formats one record into st.buf
}

type handlerState struct {
	t     testing.TB
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []string
	done  bool
}

func newTestHandler(t testing.TB) *testHandler {
	st := &handlerState{t: t}
	h := &testHandler{st: st, inner: slog.NewTextHandler(&st.buf, &slog.HandlerOptions{Level: slog.LevelDebug})}
	// Registered before the daemon's Close, so it runs after it.
	t.Cleanup(func() {
		if t.Failed() {
			h.flush()
		}
		st.mu.Lock()
		st.done = true
		st.lines = nil
		st.mu.Unlock()
	})
	return h
}

// flush writes the kept lines to the test log.
func (h *testHandler) flush() {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	if h.st.done {
		return
	}
	for _, l := range h.st.lines {
		h.st.t.Log(l)
	}
	h.st.lines = nil
}

func (h *testHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *testHandler) Handle(ctx context.Context, r slog.Record) error {
	st := h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return nil
	}
	st.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	line := strings.TrimSuffix(st.buf.String(), "\n")
	if r.Level >= slog.LevelWarn {
		st.t.Log(line)
		return nil
	}
	if len(st.lines) >= maxBufferedLines {
		st.lines = st.lines[1:]
	}
	st.lines = append(st.lines, line)
	return nil
}

func (h *testHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &testHandler{st: h.st, inner: h.inner.WithAttrs(attrs)}
}

func (h *testHandler) WithGroup(name string) slog.Handler {
	return &testHandler{st: h.st, inner: h.inner.WithGroup(name)}
}
