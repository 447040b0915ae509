package daemon

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/statedhq/stated/daemon/authz"
)

// loadAuthz reads cfg.TokenFile; nil without one. A malformed file fails
// Start with an error naming the file, the grant and the field.
func loadAuthz(cfg Config) (*authz.Authorizer, error) {
	if cfg.TokenFile == "" {
		return nil, nil
	}
	a, err := authz.New(cfg.TokenFile, cfg.Logger)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("authorization: bearer tokens required", "token_file", cfg.TokenFile, "grants", a.Len())
	return a, nil
}

// authzServerOptions chains the token check on both listeners (the unix
// socket and TCP): one gRPC server serves both. It runs after the metrics
// interceptor, so refusals are counted by code.
func (d *Daemon) authzServerOptions() []grpc.ServerOption {
	if d.authz == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(d.authz.UnaryInterceptor),
		grpc.ChainStreamInterceptor(d.authz.StreamInterceptor),
	}
}

// reloadAuthz re-reads the token file; a malformed one keeps the old
// grants, logged and returned.
func (d *Daemon) reloadAuthz() error {
	if d.authz == nil {
		return nil
	}
	if err := d.authz.Reload(); err != nil {
		d.logger.Error("token file reload refused; keeping the old grants", "error", err)
		return err
	}
	d.logger.Info("token file reloaded", "token_file", d.cfg.TokenFile, "grants", d.authz.Len())
	return nil
}

// joinTokenContext adds Config.JoinToken to the calls a new node makes to
// the Join addresses (Members, Join), which need admin on "*" when the
// members have a token file.
func (d *Daemon) joinTokenContext(ctx context.Context) context.Context {
	if d.cfg.JoinToken == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.cfg.JoinToken)
}
