package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/attributes"
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

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// Build implements resolver.Builder. The resolver follows the registry in the
// background until Close.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.Trim(target.Endpoint(), "/")
	if service == "" {
		return nil, fmt.Errorf("etcd resolver: target %q names no service; want etcd:///<service>", target.URL.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &etcdResolver{cancel: cancel, done: make(chan struct{})}
	logger := b.opts.logger.With("service", service)
	r.follower = newFollower(b.client, service, b.opts, func(eps []Endpoint) { pushState(cc, logger, eps) })
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

// pushState hands gRPC the endpoints, with each node's Metadata as an
// attribute. An empty list is sent too: gRPC then fails calls at once
// instead of letting them wait for nodes until their deadline.
func pushState(cc resolver.ClientConn, logger *slog.Logger, eps []Endpoint) {
	state := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(eps))}
	for _, ep := range eps {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: ep.Addr}},
			Attributes: attributes.New(metadataKey{}, ep.Metadata),
		})
	}
	if len(eps) == 0 {
		logger.Warn("no node is registered")
	}
	// An error here means gRPC found the state unusable (no endpoints, say);
	// it asks again through ResolveNow, and the watch already follows.
	_ = cc.UpdateState(state)
}

type metadataKey struct{}

// MetadataFrom returns the node Metadata that a resolver attached to an
// endpoint's attributes.
func MetadataFrom(attrs *attributes.Attributes) (Metadata, bool) {
	md, ok := attrs.Value(metadataKey{}).(Metadata)
	return md, ok
}
