package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	stated "github.com/statedhq/stated/sdk/go"
)

func userstoreBinary(t *testing.T) string { return exampleBinary(t, "userstore") }

// buildUserstoreBinaries builds stated and the example before a test's
// clock starts.
func buildUserstoreBinaries(t *testing.T) {
	t.Helper()
	statedBinary(t)
	userstoreBinary(t)
}

// userstoreApp is one examples/userstore process and its HTTP address.
type userstoreApp struct {
	t    *testing.T
	proc *counterProc
	base string // http://127.0.0.1:port
}

var listenLog = regexp.MustCompile(`msg="userstore listening" listen=(\S+)`)

// startUserstore runs examples/userstore against the stated at statedAddr,
// on a port the kernel picks, and waits until it listens (not until it is
// ready: stated need not be up).
func startUserstore(ctx context.Context, t *testing.T, name, statedAddr string, args ...string) *userstoreApp {
	t.Helper()
	argv := append([]string{"--listen", "127.0.0.1:0", "--stated", statedAddr}, args...)
	p := startProc(t, name, userstoreBinary(t), argv...)
	for {
		if m := listenLog.FindStringSubmatch(p.logs.String()); m != nil {
			return &userstoreApp{t: t, proc: p, base: "http://" + m[1]}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not log its listen address: %v", name, ctx.Err())
		case <-p.done:
			t.Fatalf("%s exited: %v", name, p.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// reply is one HTTP response.
type reply struct {
	code   int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body)) }

// index is the X-Stated-Index header of a write's reply.
func (r reply) index(t *testing.T) uint64 {
	t.Helper()
	idx, err := strconv.ParseUint(r.header.Get("X-Stated-Index"), 10, 64)
	if err != nil || idx == 0 {
		t.Fatalf("reply %s: X-Stated-Index %q: %v", r, r.header.Get("X-Stated-Index"), err)
	}
	return idx
}

// try sends one request; a transport error is returned, not fatal.
func (a *userstoreApp) try(ctx context.Context, method, path string, body []byte, header ...string) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, header: resp.Header, body: b}, err
}

// do sends one request and fails the test on a transport error.
func (a *userstoreApp) do(ctx context.Context, method, path string, body []byte, header ...string) reply {
	a.t.Helper()
	r, err := a.try(ctx, method, path, body, header...)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// expect sends one request and fails the test unless it answers code.
func (a *userstoreApp) expect(ctx context.Context, code int, method, path string, body []byte, header ...string) reply {
	a.t.Helper()
	r := a.do(ctx, method, path, body, header...)
	if r.code != code {
		a.t.Fatalf("%s %s%s: got %s, want %d", method, a.base, path, r, code)
	}
	return r
}

// waitReady polls /readyz until it answers want.
func (a *userstoreApp) waitReady(ctx context.Context, want int) {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := a.try(ctx, http.MethodGet, "/readyz", nil)
		if err == nil && r.code == want {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: /readyz did not answer %d within 30s (last: %s, %v)", a.proc.name, want, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// userDoc is the body of GET /users/{user}.
type userDoc struct {
	User     string            `json:"user"`
	Fields   map[string]string `json:"fields"`
	Counters map[string]int64  `json:"counters"`
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	return v
}

func minIndex(idx uint64) []string {
	return []string{"X-Stated-Min-Index", strconv.FormatUint(idx, 10)}
}

func TestUserstoreReadsYourWritesAcrossReplicasAndSumsCountersExactly(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	buildUserstoreBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	a := startUserstore(ctx, t, "userstore-a", nodes[0].socket)
	b := startUserstore(ctx, t, "userstore-b", nodes[1].socket)
	a.waitReady(ctx, http.StatusOK)
	b.waitReady(ctx, http.StatusOK)

	// Each round overwrites one field through one replica and reads it
	// through the other, which must see this round's value, never an
	// older one.
	apps := []*userstoreApp{a, b}
	for i := range 60 {
		w, r := apps[i%2], apps[(i+1)%2]
		val := fmt.Sprintf("v%d", i)
		idx := w.expect(ctx, http.StatusOK, http.MethodPut, "/users/ada/name", []byte(val)).index(t)
		got := r.expect(ctx, http.StatusOK, http.MethodGet, "/users/ada/name", nil, minIndex(idx)...)
		if string(got.body) != val {
			t.Fatalf("round %d: wrote %q through %s at index %d; %s read %q", i, val, w.proc.name, idx, r.proc.name, got.body)
		}
		if ct := got.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Fatalf("GET a field: Content-Type %q", ct)
		}
	}
	// The same through the query parameter.
	idx := a.expect(ctx, http.StatusOK, http.MethodPut, "/users/ada/email", []byte("ada@example.com")).index(t)
	if got := b.expect(ctx, http.StatusOK, http.MethodGet, fmt.Sprintf("/users/ada/email?min_index=%d", idx), nil); string(got.body) != "ada@example.com" {
		t.Fatalf("min_index read through b: %s", got)
	}

	// Concurrent counter adds through both replicas.
	const workers, adds = 4, 25
	var mu sync.Mutex
	var maxIdx uint64
	var want int64
	var wg sync.WaitGroup
	errc := make(chan error, 2*workers)
	for _, app := range apps {
		for w := range workers {
			wg.Go(func() {
				for i := range adds {
					by := int64(w + i%3 - 1) // -1..4: adds of every sign
					r, err := app.try(ctx, http.MethodPost, fmt.Sprintf("/users/ada/counters/logins?by=%d", by), nil)
					if err == nil && r.code != http.StatusOK {
						err = fmt.Errorf("%s: add %d: %s", app.proc.name, by, r)
					}
					if err != nil {
						errc <- err
						return
					}
					idx, err := strconv.ParseUint(r.header.Get("X-Stated-Index"), 10, 64)
					if err != nil {
						errc <- fmt.Errorf("%s: add: X-Stated-Index: %v", app.proc.name, err)
						return
					}
					mu.Lock()
					want += by
					maxIdx = max(maxIdx, idx)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, app := range apps {
		got := decode[struct{ Value int64 }](t, app.expect(ctx, http.StatusOK, http.MethodGet, "/users/ada/counters/logins", nil, minIndex(maxIdx)...))
		if got.Value != want {
			t.Fatalf("counter through %s: %d, want %d (the sum of %d adds)", app.proc.name, got.Value, want, 2*workers*adds)
		}
	}

	// GET /users/{user} lists every field and counter.
	idx = b.expect(ctx, http.StatusOK, http.MethodPost, "/users/ada/counters/visits", nil).index(t)
	idx = max(idx, maxIdx)
	for _, app := range apps {
		doc := decode[userDoc](t, app.expect(ctx, http.StatusOK, http.MethodGet, "/users/ada", nil, minIndex(idx)...))
		wantDoc := userDoc{User: "ada", Fields: map[string]string{"name": "v59", "email": "ada@example.com"},
			Counters: map[string]int64{"logins": want, "visits": 1}}
		if fmt.Sprint(doc) != fmt.Sprint(wantDoc) {
			t.Fatalf("GET /users/ada through %s: %+v, want %+v", app.proc.name, doc, wantDoc)
		}
	}

	// A deleted field is gone on the other replica.
	idx = a.expect(ctx, http.StatusOK, http.MethodDelete, "/users/ada/email", nil).index(t)
	b.expect(ctx, http.StatusNotFound, http.MethodGet, "/users/ada/email", nil, minIndex(idx)...)
	b.expect(ctx, http.StatusNotFound, http.MethodGet, "/users/nobody", nil)
}

func TestUserstoreFieldWithTTLExpiresAndOthersStay(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	buildUserstoreBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	nodes := startCluster(ctx, t, 1, "--expiry-interval", "100ms")
	a := startUserstore(ctx, t, "userstore", nodes[0].socket)
	a.waitReady(ctx, http.StatusOK)

	const ttl = 2 * time.Second
	a.expect(ctx, http.StatusOK, http.MethodPut, "/users/tim/name", []byte("Tim"))
	start := time.Now() // before the leader fixes the expiry
	a.expect(ctx, http.StatusOK, http.MethodPut, "/users/tim/token?ttl="+ttl.String(), []byte("secret"))
	r := a.do(ctx, http.MethodGet, "/users/tim/token", nil)
	switch {
	case r.code == http.StatusOK && string(r.body) == "secret":
	case r.code == http.StatusNotFound && time.Since(start) >= ttl:
		t.Logf("the machine was too slow to see the field before its TTL of %s ran out", ttl)
	default:
		t.Fatalf("GET a field %s after its PUT with ttl %s: %s", time.Since(start), ttl, r)
	}
	eventually(t, 20*time.Second, "the field with a TTL never expired", func() bool {
		return a.do(ctx, http.MethodGet, "/users/tim/token", nil).code == http.StatusNotFound
	})
	if time.Since(start) < ttl {
		t.Fatalf("the field expired %s after its PUT, before its TTL of %s", time.Since(start), ttl)
	}
	doc := decode[userDoc](t, a.expect(ctx, http.StatusOK, http.MethodGet, "/users/tim", nil))
	if len(doc.Fields) != 1 || doc.Fields["name"] != "Tim" {
		t.Fatalf("after the TTL: %+v, want only the field without a TTL", doc)
	}
}

func TestUserstoreKeepsEveryAcknowledgedWriteWhenItsStatedIsKilled(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	buildUserstoreBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	nodes := startCluster(ctx, t, 3)
	a := startUserstore(ctx, t, "userstore-a", nodes[0].socket)
	b := startUserstore(ctx, t, "userstore-b", nodes[1].socket)
	a.waitReady(ctx, http.StatusOK)
	b.waitReady(ctx, http.StatusOK)

	type write struct {
		user, field, value string
	}
	var mu sync.Mutex
	var acked []write
	var maxIdx uint64
	// put writes through app until it is acknowledged: a 503 may or may
	// not have applied, and writing the same value again is harmless.
	put := func(app *userstoreApp, w write) error {
		path := "/users/" + w.user + "/" + w.field
		var last string
		for ctx.Err() == nil {
			r, err := app.try(ctx, http.MethodPut, path, []byte(w.value))
			switch {
			case err != nil:
				last = err.Error()
			case r.code == http.StatusOK:
				idx, err := strconv.ParseUint(r.header.Get("X-Stated-Index"), 10, 64)
				if err != nil {
					return fmt.Errorf("%s: PUT %s: X-Stated-Index: %v", app.proc.name, path, err)
				}
				mu.Lock()
				acked = append(acked, w)
				maxIdx = max(maxIdx, idx)
				mu.Unlock()
				return nil
			case r.code == http.StatusServiceUnavailable:
				last = r.String()
			default:
				return fmt.Errorf("%s: PUT %s: %s", app.proc.name, path, r)
			}
		}
		return fmt.Errorf("%s: PUT %s: never acknowledged (last: %s)", app.proc.name, path, last)
	}
	// writeAll makes n writes through app, from 4 workers.
	writeAll := func(app *userstoreApp, round string, n int) error {
		var wg sync.WaitGroup
		errc := make(chan error, 4)
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < n; i += 4 {
					user := fmt.Sprintf("u%d", i%10)
					field := fmt.Sprintf("%s-%s-%d", app.proc.name, round, i)
					if err := put(app, write{user, field, "value of " + field}); err != nil {
						errc <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		return <-errc
	}
	errc := make(chan error, 2)
	for _, app := range []*userstoreApp{a, b} {
		go func() { errc <- writeAll(app, "before", 100) }()
	}
	for range 2 {
		must(t, <-errc)
	}

	nodes[0].kill()
	a.waitReady(ctx, http.StatusServiceUnavailable)
	// The cluster goes on without the node (it may have led): b's writes
	// are acknowledged while a's stated is down.
	must(t, writeAll(b, "during", 50))
	nodes[0].start(ctx)
	a.waitReady(ctx, http.StatusOK)
	must(t, writeAll(a, "after", 10))

	if len(acked) != 260 {
		t.Fatalf("%d writes acknowledged, want 260", len(acked))
	}
	byUser := map[string]map[string]string{}
	for _, w := range acked {
		if byUser[w.user] == nil {
			byUser[w.user] = map[string]string{}
		}
		byUser[w.user][w.field] = w.value
		// b's writes need the highest index; a's own would not.
		r := a.expect(ctx, http.StatusOK, http.MethodGet, "/users/"+w.user+"/"+w.field, nil, minIndex(maxIdx)...)
		if string(r.body) != w.value {
			t.Fatalf("%s/%s through a: %q, want %q", w.user, w.field, r.body, w.value)
		}
	}
	for user, fields := range byUser {
		doc := decode[userDoc](t, a.expect(ctx, http.StatusOK, http.MethodGet, "/users/"+user, nil, minIndex(maxIdx)...))
		if fmt.Sprint(doc.Fields) != fmt.Sprint(fields) {
			t.Fatalf("GET /users/%s through a: %d fields %v, want %d: %v", user, len(doc.Fields), doc.Fields, len(fields), fields)
		}
	}
}

func TestUserstoreRefusesBadInputNamingItAndWritesNothing(t *testing.T) {
	t.Parallel()
	skipLong(t) // processes only: what runs in this process is race-tested in its own package
	buildUserstoreBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	n := newNode(t)
	// The app starts before its stated, as it may in a pod: it listens at
	// once and is not ready until stated answers.
	a := startUserstore(ctx, t, "userstore", n.socket, "--namespace", "people")
	a.expect(ctx, http.StatusOK, http.MethodGet, "/healthz", nil)
	a.expect(ctx, http.StatusServiceUnavailable, http.MethodGet, "/readyz", nil)
	n.start(ctx)
	a.waitReady(ctx, http.StatusOK)

	long := strings.Repeat("x", 257)
	tests := []struct {
		method, path string
		body         []byte
		header       []string
		code         int
		names        string
	}{
		{http.MethodPut, "/users/u/f?ttl=soon", []byte("v"), nil, http.StatusBadRequest, "ttl"},
		{http.MethodPut, "/users/u/f?ttl=-1s", []byte("v"), nil, http.StatusBadRequest, "ttl"},
		{http.MethodPut, "/users/u/f?ttl=", []byte("v"), nil, http.StatusBadRequest, "ttl"},
		{http.MethodPost, "/users/u/counters/c?by=lots", nil, nil, http.StatusBadRequest, "by"},
		{http.MethodPost, "/users/u/counters/c?by=1.5", nil, nil, http.StatusBadRequest, "by"},
		{http.MethodPost, "/users/u/counters/c?by=1&ttl=0s", nil, nil, http.StatusBadRequest, "ttl"},
		{http.MethodGet, "/users/u/f", nil, []string{"X-Stated-Min-Index", "abc"}, http.StatusBadRequest, "X-Stated-Min-Index"},
		{http.MethodGet, "/users/u", nil, []string{"X-Stated-Min-Index", "-1"}, http.StatusBadRequest, "X-Stated-Min-Index"},
		{http.MethodGet, "/users/u/counters/c?min_index=x", nil, nil, http.StatusBadRequest, "min_index"},
		{http.MethodPut, "/users/" + long + "/f", []byte("v"), nil, http.StatusBadRequest, "user"},
		{http.MethodPut, "/users/u/" + long, []byte("v"), nil, http.StatusBadRequest, "field"},
		{http.MethodPost, "/users/u/counters/" + long, nil, nil, http.StatusBadRequest, "name"},
		{http.MethodPut, "/users/a%2Fb/f", []byte("v"), nil, http.StatusBadRequest, "user"},
		{http.MethodPut, "/users/u/f", make([]byte, 1<<20+1), nil, http.StatusRequestEntityTooLarge, "value"},
	}
	for _, tt := range tests {
		r := a.do(ctx, tt.method, tt.path, tt.body, tt.header...)
		e := decode[struct{ Error string }](t, r)
		if r.code != tt.code || !strings.HasPrefix(e.Error, tt.names+":") {
			t.Errorf("%s %.60s: %s, want %d naming %q", tt.method, tt.path, r, tt.code, tt.names)
		}
	}

	// Nothing reached stated: both namespaces are empty.
	c, err := stated.Dial(ctx, n.socket, stated.WithLazySession())
	must(t, err)
	defer c.Close()
	for _, ns := range []string{"people", "people-counters"} {
		if got := scanAll(ctx, t, c, stated.ScanQuery{Namespace: ns}); len(got) != 0 {
			t.Errorf("namespace %q holds %d entries after bad requests: %v", ns, len(got), got)
		}
	}
	a.expect(ctx, http.StatusNotFound, http.MethodGet, "/users/u", nil)

	// A value of exactly 1 MiB is accepted, and SIGTERM stops the app
	// cleanly.
	a.expect(ctx, http.StatusOK, http.MethodPut, "/users/u/f", make([]byte, 1<<20))
	a.proc.signal(syscall.SIGTERM)
	if a.proc.err != nil {
		t.Fatalf("userstore after SIGTERM: %v", a.proc.err)
	}
}
