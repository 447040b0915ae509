// Command userstore is an HTTP service that keeps per-user state in
// stated, with no Kafka at all.
//
// One replica of the service runs beside each stated node (the sidecar
// pattern) and talks to its own node only. Each user has fields (a stated
// map: namespace --namespace, key the user, sub-key the field), optionally
// with a TTL, and counters that the daemon adds to (namespace
// "<namespace>-counters", key "<user>/<counter>"). Every write answers with
// the header X-Stated-Index, the Raft index of its commit; a read given
// that index in X-Stated-Min-Index (or ?min_index=) waits until its replica
// has applied it, so a client that wrote through one replica reads its
// write through any other.
//
//	go run ./cmd/stated run &
//	go run ./examples/userstore &
//	curl -X PUT --data-binary 'Ada' 'http://127.0.0.1:8080/users/ada/name?ttl=1h'
//	curl http://127.0.0.1:8080/users/ada
//
// Endpoints:
//
//	PUT    /users/{user}/{field}[?ttl=30s]  body: the value (at most 1 MiB)
//	GET    /users/{user}/{field}            the value, or 404
//	DELETE /users/{user}/{field}
//	GET    /users/{user}                    {"user","fields","counters"}, or 404
//	POST   /users/{user}/counters/{name}[?by=N][&ttl=30s]
//	GET    /users/{user}/counters/{name}    {"user","counter","value"}
//	GET    /healthz                         200 while the process runs
//	GET    /readyz                          200 when a stated read succeeds within 1s, else 503
//
// Flags may also come from the environment when not given on the command
// line: USERSTORE_LISTEN, USERSTORE_STATED, USERSTORE_NAMESPACE,
// USERSTORE_CLIENT_ID, USERSTORE_REQUEST_TIMEOUT.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	stated "github.com/statedhq/stated/sdk/go"
)

const (
	// maxValueBytes is the largest field value a PUT accepts.
	maxValueBytes = 1 << 20
	// maxNameBytes is the longest user, field or counter name.
	maxNameBytes = 256
	// maxNamespaceBytes is the daemon's limit on a namespace name.
	maxNamespaceBytes = 256
	// counterSuffix names the namespace of the counters.
	counterSuffix = "-counters"
	// readyTimeout bounds the read /readyz makes.
	readyTimeout = time.Second

	headerIndex    = "X-Stated-Index"
	headerApplied  = "X-Stated-Applied-Index"
	headerMinIndex = "X-Stated-Min-Index"
)

func main() {
	if err := run(os.Args[1:], os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "userstore:", err)
		os.Exit(1)
	}
}

// config is the service's configuration, from flags and the environment.
type config struct {
	listen         string
	stated         string
	namespace      string
	clientID       string
	requestTimeout time.Duration
}

// envNames binds flags to environment variables, in the order they are
// applied.
var envNames = []struct{ flag, env string }{
	{"listen", "USERSTORE_LISTEN"},
	{"stated", "USERSTORE_STATED"},
	{"namespace", "USERSTORE_NAMESPACE"},
	{"client-id", "USERSTORE_CLIENT_ID"},
	{"request-timeout", "USERSTORE_REQUEST_TIMEOUT"},
}

// parseConfig reads the flags in args and, for each flag not given there,
// its environment variable.
func parseConfig(args []string, lookupEnv func(string) (string, bool)) (config, error) {
	var c config
	fs := flag.NewFlagSet("userstore", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "HTTP listen address")
	fs.StringVar(&c.stated, "stated", "./stated-data/stated.sock", "stated daemon address(es), comma-separated: a unix socket path or host:port")
	fs.StringVar(&c.namespace, "namespace", "users", "stated namespace of the users' fields; counters go to <namespace>"+counterSuffix)
	fs.StringVar(&c.clientID, "client-id", "", "stated client id (default: random); give every replica its own")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 10*time.Second, "how long a request may wait for stated, including a read's wait for X-Stated-Min-Index")
	for _, b := range envNames {
		f := fs.Lookup(b.flag)
		f.Usage += " (env " + b.env + ")"
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, b := range envNames {
		if given[b.flag] {
			continue
		}
		if v, ok := lookupEnv(b.env); ok {
			if err := fs.Set(b.flag, v); err != nil {
				return c, fmt.Errorf("environment variable %s=%q: %w", b.env, v, err)
			}
		}
	}
	return c, c.validate()
}

// validate checks what the flags cannot: a namespace the daemon accepts
// (with room for the counters' suffix) and a positive timeout.
func (c config) validate() error {
	switch {
	case c.listen == "":
		return errors.New("--listen: empty")
	case c.stated == "":
		return errors.New("--stated: empty")
	case c.namespace == "":
		return errors.New("--namespace: empty")
	case len(c.namespace)+len(counterSuffix) > maxNamespaceBytes:
		return fmt.Errorf("--namespace: %d bytes, limit %d (the counters' namespace adds %q)", len(c.namespace), maxNamespaceBytes-len(counterSuffix), counterSuffix)
	case !utf8.ValidString(c.namespace) || strings.ContainsFunc(c.namespace, unicode.IsControl):
		return fmt.Errorf("--namespace: %q is not UTF-8 without control characters", c.namespace)
	case c.requestTimeout <= 0:
		return fmt.Errorf("--request-timeout: %s is not positive", c.requestTimeout)
	}
	return nil
}

func run(args []string, lookupEnv func(string) (string, bool)) error {
	cfg, err := parseConfig(args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Not WithBlock: stated may start after the service (in a pod the
	// containers start in any order). Dial returns at once, the session
	// opens in the background, and /readyz says 503 until stated answers.
	// The Client connects again within a second of stated's return
	// (stated.DefaultReconnectBackoff).
	var opts []stated.Option
	if cfg.clientID != "" {
		opts = append(opts, stated.WithClientID(cfg.clientID))
	}
	client, err := stated.Dial(ctx, cfg.stated, opts...)
	if err != nil {
		return fmt.Errorf("--stated: %w", err)
	}
	defer client.Close()

	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	s := &server{
		client:    client,
		ns:        cfg.namespace,
		counterNS: cfg.namespace + counterSuffix,
		timeout:   cfg.requestTimeout,
		log:       logger,
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	logger.Info("userstore listening", "listen", l.Addr().String(), "stated", cfg.stated,
		"namespace", s.ns, "counters_namespace", s.counterNS, "client_id", client.ClientID())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("userstore stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// server serves the HTTP API from one stated client.
type server struct {
	client    *stated.Client
	ns        string // the users' fields: key user, map sub-key field
	counterNS string // the users' counters: key "<user>/<counter>"
	timeout   time.Duration
	log       *slog.Logger
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /users/{user}/{field}", s.putField)
	mux.HandleFunc("GET /users/{user}/{field}", s.getField)
	mux.HandleFunc("DELETE /users/{user}/{field}", s.deleteField)
	mux.HandleFunc("GET /users/{user}", s.getUser)
	mux.HandleFunc("POST /users/{user}/counters/{name}", s.addCounter)
	mux.HandleFunc("GET /users/{user}/counters/{name}", s.getCounter)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	return mux
}

// badRequest is an error in the request, answered with 400 (or status).
type badRequest struct {
	status int
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &badRequest{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// pathName returns the path wildcard part, checked: 1..256 bytes of
// UTF-8, and for a user no '/', which separates the user from the counter
// in a counter's key.
func pathName(r *http.Request, part string) (string, error) {
	v := r.PathValue(part)
	switch {
	case v == "":
		return "", invalid("%s: empty", part)
	case len(v) > maxNameBytes:
		return "", invalid("%s: %d bytes, limit %d", part, len(v), maxNameBytes)
	case !utf8.ValidString(v):
		return "", invalid("%s: not valid UTF-8", part)
	case part == "user" && strings.Contains(v, "/"):
		return "", invalid("user: %q contains '/'", v)
	}
	return v, nil
}

// pathNames returns the named path parts, checked by pathName.
func pathNames(r *http.Request, parts ...string) ([]string, error) {
	out := make([]string, len(parts))
	for i, p := range parts {
		v, err := pathName(r, p)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// ttlOption parses the optional ttl query parameter.
func ttlOption(r *http.Request) ([]stated.WriteOption, error) {
	q := r.URL.Query()
	if !q.Has("ttl") {
		return nil, nil
	}
	v := q.Get("ttl")
	ttl, err := time.ParseDuration(v)
	if err != nil || ttl <= 0 {
		return nil, invalid("ttl: %q is not a positive Go duration such as 30s or 1h", v)
	}
	return []stated.WriteOption{stated.WithTTL(ttl)}, nil
}

// readOptions turns X-Stated-Min-Index (or ?min_index=) into a read that
// waits for that index; without either the read is the client's default
// (its own writes, read-your-writes).
func readOptions(r *http.Request) ([]stated.ReadOption, error) {
	var idx uint64
	if vals := r.Header.Values(headerMinIndex); len(vals) > 0 {
		if len(vals) > 1 {
			return nil, invalid("%s: given %d times", headerMinIndex, len(vals))
		}
		n, err := strconv.ParseUint(strings.TrimSpace(vals[0]), 10, 64)
		if err != nil {
			return nil, invalid("%s: %q is not a Raft index (a non-negative integer)", headerMinIndex, vals[0])
		}
		idx = n
	}
	if q := r.URL.Query(); q.Has("min_index") {
		v := q.Get("min_index")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, invalid("min_index: %q is not a Raft index (a non-negative integer)", v)
		}
		idx = max(idx, n)
	}
	if idx == 0 {
		return nil, nil
	}
	return []stated.ReadOption{stated.WithMinIndex(idx)}, nil
}

// ctx bounds a request's calls to stated.
func (s *server) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.timeout)
}

func (s *server) putField(w http.ResponseWriter, r *http.Request) {
	names, err := pathNames(r, "user", "field")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := ttlOption(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxValueBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			err = &badRequest{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("value: larger than %d bytes", maxValueBytes)}
		}
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	res, err := s.client.Txn().MapPut(s.ns, []byte(names[0]), []byte(names[1]), value, opts...).Commit(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerIndex, strconv.FormatUint(res.Index, 10))
	writeJSON(w, http.StatusOK, map[string]any{"user": names[0], "field": names[1], "index": res.Index})
}

func (s *server) getField(w http.ResponseWriter, r *http.Request) {
	names, err := pathNames(r, "user", "field")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := readOptions(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	item, found, err := s.client.MapGet(ctx, s.ns, []byte(names[0]), []byte(names[1]), opts...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(headerApplied, strconv.FormatUint(item.AppliedIndex, 10))
	w.WriteHeader(http.StatusOK)
	w.Write(item.Value)
}

func (s *server) deleteField(w http.ResponseWriter, r *http.Request) {
	names, err := pathNames(r, "user", "field")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	res, err := s.client.Txn().MapDelete(s.ns, []byte(names[0]), []byte(names[1])).Commit(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerIndex, strconv.FormatUint(res.Index, 10))
	writeJSON(w, http.StatusOK, map[string]any{"user": names[0], "field": names[1], "index": res.Index})
}

// getUser answers every field (values as strings) and counter of a user.
func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	user, err := pathName(r, "user")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := readOptions(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	fields := map[string]string{}
	for e, err := range s.client.Scan(ctx, stated.ScanQuery{Namespace: s.ns, Kind: stated.KindMap, Key: []byte(user)}, opts...) {
		if err != nil {
			s.fail(w, r, err)
			return
		}
		fields[string(e.SubKey)] = string(e.Value)
	}
	prefix := user + "/"
	counters := map[string]int64{}
	for e, err := range s.client.Scan(ctx, stated.ScanQuery{Namespace: s.counterNS, Kind: stated.KindCounter, Prefix: []byte(prefix)}, opts...) {
		if err != nil {
			s.fail(w, r, err)
			return
		}
		counters[strings.TrimPrefix(string(e.Key), prefix)] = e.Counter
	}
	if len(fields) == 0 && len(counters) == 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "fields": fields, "counters": counters})
}

// addCounter adds ?by= (default 1) to a user's counter on the daemon: no
// read-modify-write, so concurrent adds through any replica all count.
// The commit does not return the new value; GET the counter for it.
func (s *server) addCounter(w http.ResponseWriter, r *http.Request) {
	names, err := pathNames(r, "user", "name")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	by := int64(1)
	if q := r.URL.Query(); q.Has("by") {
		if by, err = strconv.ParseInt(q.Get("by"), 10, 64); err != nil {
			s.fail(w, r, invalid("by: %q is not a 64-bit integer", q.Get("by")))
			return
		}
	}
	opts, err := ttlOption(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	res, err := s.client.Txn().CounterAdd(s.counterNS, counterKey(names[0], names[1]), by, opts...).Commit(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerIndex, strconv.FormatUint(res.Index, 10))
	writeJSON(w, http.StatusOK, map[string]any{"user": names[0], "counter": names[1], "index": res.Index})
}

// getCounter answers a counter's value; one never added to reads 0.
func (s *server) getCounter(w http.ResponseWriter, r *http.Request) {
	names, err := pathNames(r, "user", "name")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	opts, err := readOptions(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	v, err := s.client.GetCounter(ctx, s.counterNS, counterKey(names[0], names[1]), opts...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": names[0], "counter": names[1], "value": v})
}

// counterKey is the key of a user's counter; a user has no '/', so the
// first '/' separates the two.
func counterKey(user, name string) []byte { return []byte(user + "/" + name) }

// ready answers 200 when a local read from stated succeeds within a
// second: the daemon is up and serving this replica.
func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if _, _, err := s.client.Get(ctx, s.ns, []byte("readyz"), stated.WithConsistency(stated.ConsistencyLocal)); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

// fail answers err: 400 (or its own status) for a bad request, 400 for a
// request the daemon refused as invalid, 503 when stated is unavailable
// or did not answer in time, else 500.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	var br *badRequest
	switch {
	case errors.As(err, &br):
		code = br.status
	case errors.Is(err, stated.ErrInvalidArgument):
		code = http.StatusBadRequest
	case errors.Is(err, stated.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	}
	if code >= 500 {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
