package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/resolver"
)

// Scheme is the URI scheme of targets resolved through etcd: etcd:///<service>.
const Scheme = "etcd"

// Builder builds resolvers for etcd:///<service> targets from one etcd
// client. Register it with grpc.WithResolvers when dialling.
type Builder struct {
	client *clientv3.Client
	opts   followOptions
}

// NewBuilder returns a Builder that reads the registry through client.
func NewBuilder(client *clientv3.Client, opts ...Option) *Builder {
	return &Builder{client: client, opts: newFollowOptions(opts)}
}

// ServiceOf is the service that target, parsed as an etcd:///<service>
// target, names: its path without slashes; "" when it names none.
func ServiceOf(target url.URL) string {
	path := target.Path
	if path == "" {
		path = target.Opaque // etcd:service
	}
	return strings.Trim(path, "/")
}

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// Build implements resolver.Builder. The resolver follows the registry in the
// background until Close.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := ServiceOf(target.URL)
	if service == "" {
		return nil, fmt.Errorf("etcd resolver: target %q names no service; want etcd:///<service>", target.URL.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &etcdResolver{cancel: cancel, done: make(chan struct{})}
	logger := b.opts.logger.With("service", service)
	var pushed []pushedEndpoint
	r.follower = newFollower(b.client, service, b.opts, func(eps []Endpoint) { pushed = pushState(cc, logger, eps, pushed) })
	r.follower.lend = true // pushState keeps nothing of the list
	go func() {
		defer close(r.done)
		r.follower.run(ctx)
	}()
	return r, nil
}

// etcdResolver adapts a follower to gRPC: each list of endpoints becomes a
// resolver.State.
type etcdResolver struct {
	follower *follower
	cancel   context.CancelFunc
	done     chan struct{}
}

// ResolveNow cuts short the wait before the next attempt to follow the
// registry, when the resolver is between attempts. While the watch is up the
// resolver is already current, so the hint costs nothing.
func (r *etcdResolver) ResolveNow(resolver.ResolveNowOptions) { r.follower.retryNow() }

// Close stops following the registry and waits until the resolver's
// goroutine has ended.
func (r *etcdResolver) Close() {
	r.cancel()
	<-r.done
}

// pushedEndpoint is an endpoint as last handed to gRPC.
type pushedEndpoint struct {
	from Endpoint
	to   resolver.Endpoint
}

// pushState hands gRPC the endpoints' addresses. An empty list is sent too:
// gRPC then fails calls at once instead of letting them wait for nodes until
// their deadline.
//
// eps and before are both in key order. An endpoint unchanged since before
// is handed on as it was, without building its addresses again: with 10,000
// nodes one change then costs one pass over the list instead of 10,000
// allocations. It returns what it handed on, for the next call.
func pushState(cc resolver.ClientConn, logger *slog.Logger, eps []Endpoint, before []pushedEndpoint) []pushedEndpoint {
	pushed := make([]pushedEndpoint, 0, len(eps))
	state := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(eps))}
	for _, ep := range eps {
		for len(before) > 0 && before[0].from.Key < ep.Key {
			before = before[1:]
		}
		var to resolver.Endpoint
		if len(before) > 0 && before[0].from == ep {
			to = before[0].to
		} else {
			to = resolver.Endpoint{Addresses: []resolver.Address{{Addr: ep.Addr}}}
		}
		pushed = append(pushed, pushedEndpoint{from: ep, to: to})
		state.Endpoints = append(state.Endpoints, to)
	}
	if len(eps) == 0 {
		logger.Warn("no node is registered")
	}
	// An error here means gRPC found the state unusable (no endpoints, say);
	// it asks again through ResolveNow, and the watch already follows.
	_ = cc.UpdateState(state)
	return pushed
}
