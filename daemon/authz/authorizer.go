package authz

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	statedv1 "github.com/statedhq/stated/proto/statedv1"
)

// Authorizer checks calls against the grants of a token file.
type Authorizer struct {
	path   string
	logger *slog.Logger
	grants atomic.Pointer[Grants]
}

// New reads the token file at path; an error names the file, the grant
// and the field.
func New(path string, logger *slog.Logger) (*Authorizer, error) {
	g, err := ParseFile(path)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Authorizer{path: path, logger: logger}
	a.grants.Store(g)
	return a, nil
}

// Reload re-reads the token file; new calls use its grants. A file that
// cannot be read or parsed keeps the old grants, and Reload returns why.
func (a *Authorizer) Reload() error {
	g, err := ParseFile(a.path)
	if err != nil {
		return err
	}
	a.grants.Store(g)
	return nil
}

// Len is the number of grants in force.
func (a *Authorizer) Len() int { return a.grants.Load().Len() }

// open reports whether method needs no token: the standard health and
// reflection services.
func open(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// Authorize checks the call to method with req against ctx's bearer
// token. Its error is a gRPC status: Unauthenticated or PermissionDenied.
func (a *Authorizer) Authorize(ctx context.Context, method string, req any) error {
	if open(method) {
		return nil
	}
	token, err := bearer(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	gr, ok := a.grants.Load().lookup(token)
	if !ok {
		return status.Error(codes.Unauthenticated, ErrUnknownToken.Error())
	}
	rule, ok := Rules[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "authz: %s has no authorization rule", method)
	}
	need := rule(req)
	switch {
	case need.Op == "":
		return nil
	case need.Cluster:
		if !gr.allows(need.Op, "", false, true) {
			return a.denied(gr, method, need.Op, `"*" (the whole cluster)`)
		}
	case len(need.Namespaces) == 0:
		if !gr.allows(need.Op, "", true, false) {
			return a.denied(gr, method, need.Op, "any namespace")
		}
	default:
		for _, ns := range need.Namespaces {
			if !gr.allows(need.Op, ns, false, false) {
				return a.denied(gr, method, need.Op, fmt.Sprintf("namespace %q", ns))
			}
		}
	}
	return nil
}

func (a *Authorizer) denied(gr *Grant, method string, op Operation, what string) error {
	a.logger.Debug("authz: call refused", "grant", gr.Name, "method", method, "operation", string(op), "on", what)
	return status.Errorf(codes.PermissionDenied, "authz: grant %q may not %s %s", gr.Name, op, what)
}

// bearer returns the token of the call's "authorization: Bearer" header.
func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", ErrNoToken
	}
	v := vals[0]
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", ErrNoToken
	}
	tok := strings.TrimSpace(v[len(prefix):])
	if tok == "" {
		return "", ErrNoToken
	}
	return tok, nil
}

// UnaryInterceptor authorizes each unary call before its handler runs,
// and hands the two handlers whose checks depend on what the call finds
// the Authorizer in the call's context (only those: every other call,
// Commit among them, is spared the context's allocation): a CommitBatch passes with
// write on any namespace and its handler checks each commit it carries
// with AuthorizeCommit; the window status of every namespace lists those
// Visible says.
func (a *Authorizer) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := a.Authorize(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	switch info.FullMethod {
	case statedv1.State_CommitBatch_FullMethodName, statedv1.Windows_Status_FullMethodName:
		ctx = context.WithValue(ctx, authorizerKey{}, a)
	}
	return handler(ctx, req)
}

type authorizerKey struct{}

// AuthorizeCommit checks one commit of a CommitBatch (a call, or a request
// of a CommitStream) as a Commit call
// would be checked, against the call's token. Without an Authorizer in
// ctx (the daemon has no token file) every commit passes.
func AuthorizeCommit(ctx context.Context, r *statedv1.CommitRequest) error {
	a, _ := ctx.Value(authorizerKey{}).(*Authorizer)
	if a == nil {
		return nil
	}
	return a.Authorize(ctx, statedv1.State_Commit_FullMethodName, r)
}

// Visible returns which namespaces a listing of every namespace (the
// window status with none named) shows the call's token: those its grant
// may read, all of them with read on "*". No operation implies another:
// admin alone shows none. It returns
// nil, meaning all, without an Authorizer in ctx (the daemon has no token
// file). A token no grant holds (the file was reloaded meanwhile) sees
// none.
func Visible(ctx context.Context) func(ns string) bool {
	a, _ := ctx.Value(authorizerKey{}).(*Authorizer)
	if a == nil {
		return nil
	}
	none := func(string) bool { return false }
	token, err := bearer(ctx)
	if err != nil {
		return none
	}
	gr, ok := a.grants.Load().lookup(token)
	if !ok {
		return none
	}
	if gr.allows(Read, "", false, true) {
		return func(string) bool { return true }
	}
	return func(ns string) bool { return gr.allows(Read, ns, false, false) }
}

// StreamInterceptor authorizes a streaming call on each request message
// it receives, before the handler sees it.
func (a *Authorizer) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if open(info.FullMethod) {
		return handler(srv, ss)
	}
	if info.FullMethod == statedv1.State_CommitStream_FullMethodName {
		// Its requests are CommitBatch calls: the stream needs what a
		// CommitBatch call needs, and its handler checks each commit of
		// each request with AuthorizeCommit, against the grants as they
		// are then (a token file reloaded meanwhile counts).
		if err := a.Authorize(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return handler(srv, &withAuthorizer{ServerStream: ss, ctx: context.WithValue(ss.Context(), authorizerKey{}, a)})
	}
	// Refuse a call without a known token before reading anything.
	if err := a.Authorize(ss.Context(), info.FullMethod, nil); err != nil && status.Code(err) == codes.Unauthenticated {
		return err
	}
	return handler(srv, &authorizedStream{ServerStream: ss, a: a, method: info.FullMethod})
}

// withAuthorizer is a stream whose context carries the Authorizer.
type withAuthorizer struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *withAuthorizer) Context() context.Context { return s.ctx }

type authorizedStream struct {
	grpc.ServerStream
	a      *Authorizer
	method string
}

func (s *authorizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.a.Authorize(s.Context(), s.method, m)
}
