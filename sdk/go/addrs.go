package stated

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// multiScheme is the scheme of the Client's own resolver for a list of
// addresses; each Client has a resolver of its own, so nothing is
// registered globally.
const multiScheme = "stated-addrs"

// unixPrefix marks a unix socket in a resolved address, for dialAddr.
const unixPrefix = "unix:"

// multiTarget returns the gRPC target and dial options that connect to
// one of addrs at a time: gRPC's pick_first balancer over a fixed list
// connects to the first address that accepts and, when that connection
// breaks, to the first one that accepts again. Calls then fail with
// Unavailable until it has, which the Client's retries absorb.
func multiTarget(addrs []string) (string, []grpc.DialOption, error) {
	var eps []resolver.Endpoint
	for _, a := range addrs {
		ep, err := endpointOf(a)
		if err != nil {
			return "", nil, err
		}
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: ep}}})
	}
	r := manual.NewBuilderWithScheme(multiScheme)
	r.InitialState(resolver.State{Endpoints: eps})
	return multiScheme + ":///stated", []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{}}]}`),
		grpc.WithContextDialer(dialAddr),
	}, nil
}

// endpointOf turns one address of a list into what dialAddr dials:
// "unix:/abs/path" for a unix socket, else host:port.
func endpointOf(addr string) (string, error) {
	target, err := parseAddr(addr)
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(target, "unix://"):
		u, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("stated: dial %q: %w", addr, err)
		}
		return unixPrefix + u.Path, nil
	case strings.HasPrefix(target, "unix:"):
		return target, nil
	case strings.Contains(target, ":///"), strings.HasPrefix(target, "unix-abstract:"):
		return "", fmt.Errorf("stated: dial %q: in a list of addresses, give unix socket paths or host:port", addr)
	}
	return target, nil
}

// dialAddr dials an address from endpointOf.
func dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return d.DialContext(ctx, "unix", path)
	}
	return d.DialContext(ctx, "tcp", addr)
}
