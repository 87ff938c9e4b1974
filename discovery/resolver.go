package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Scheme is the URI scheme of targets resolved through etcd: etcd:///<service>.
const Scheme = "etcd"

// ResolverOption configures the resolvers a Builder builds.
type ResolverOption func(*resolverOptions)

type resolverOptions struct {
	logger  *slog.Logger
	backoff Backoff
	events  ResolverEvents
}

// WithResolverLogger sets where resolvers log; the default is slog.Default().
func WithResolverLogger(logger *slog.Logger) ResolverOption {
	return func(o *resolverOptions) { o.logger = logger }
}

// WithResolverBackoff sets how resolvers space out their attempts to follow
// the registry again after a failure.
func WithResolverBackoff(b Backoff) ResolverOption {
	return func(o *resolverOptions) { o.backoff = b }
}

// ResolverEvents hears what resolvers do, for metrics. Its methods must be
// cheap and safe for concurrent use.
type ResolverEvents interface {
	// Updated is called each time a resolver hands gRPC a new list of endpoints.
	Updated(service string, endpoints int)
	// WatchRestarted is called each time a resolver starts following the
	// registry again after its watch failed or closed.
	WatchRestarted(service string)
	// Malformed is called for every registry value a resolver skips.
	Malformed(service string)
}

// WithResolverEvents reports what resolvers do to events.
func WithResolverEvents(events ResolverEvents) ResolverOption {
	return func(o *resolverOptions) { o.events = events }
}

// Builder builds resolvers for etcd:///<service> targets from one etcd
// client. Register it with grpc.WithResolvers when dialling.
type Builder struct {
	client *clientv3.Client
	opts   resolverOptions
}

// NewBuilder returns a Builder that reads the registry through client.
func NewBuilder(client *clientv3.Client, opts ...ResolverOption) *Builder {
	o := resolverOptions{logger: slog.Default(), backoff: DefaultBackoff, events: nopResolverEvents{}}
	for _, opt := range opts {
		opt(&o)
	}
	return &Builder{client: client, opts: o}
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
	r := &etcdResolver{
		client:     b.client,
		opts:       b.opts,
		service:    service,
		prefix:     Prefix(service),
		cc:         cc,
		logger:     b.opts.logger.With("service", service),
		cancel:     cancel,
		done:       make(chan struct{}),
		resolveNow: make(chan struct{}, 1),
	}
	go r.run(ctx)
	return r, nil
}

type etcdResolver struct {
	client  *clientv3.Client
	opts    resolverOptions
	service string
	prefix  string
	cc      resolver.ClientConn
	logger  *slog.Logger

	cancel     context.CancelFunc
	done       chan struct{}
	resolveNow chan struct{}

	// Owned by the run goroutine.
	endpoints map[string]Endpoint
	pushed    bool
}

// ResolveNow cuts short the wait before the next attempt to follow the
// registry, when the resolver is between attempts. While the watch is up the
// resolver is already current, so the hint costs nothing.
func (r *etcdResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.resolveNow <- struct{}{}:
	default:
	}
}

// Close stops following the registry and waits until the resolver's
// goroutine has ended.
func (r *etcdResolver) Close() {
	r.cancel()
	<-r.done
}

// run follows the registry until Close, whatever etcd does: after every
// failure it lists the registry again and watches from there, which also
// recovers from a compaction that removed the revisions it had not seen.
func (r *etcdResolver) run(ctx context.Context) {
	defer close(r.done)
	failures := 0
	for {
		err := r.follow(ctx, func() { failures = 0 })
		if ctx.Err() != nil {
			return
		}
		if failures == 0 {
			// Log the change of state once; the retries that follow are quiet.
			r.logger.Warn("lost the registry; keeping the last known endpoints and retrying", "error", err, "endpoints", len(r.endpoints))
		} else {
			r.logger.Debug("registry still unreachable", "error", err, "attempt", failures)
		}
		r.opts.events.WatchRestarted(r.service)
		delay := r.opts.backoff.Delay(failures)
		failures++
		if !r.waitOrResolveNow(ctx, delay) {
			return
		}
	}
}

func (r *etcdResolver) waitOrResolveNow(ctx context.Context, delay time.Duration) bool {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	case <-r.resolveNow:
	}
	return true
}

// follow lists the registry, hands the endpoints to gRPC, and applies the
// watch's events until the watch fails. It calls listed after a good list.
func (r *etcdResolver) follow(ctx context.Context, listed func()) error {
	// Without a leader, a member may serve a stale or partitioned view;
	// requiring one makes the watch fail instead, and the resolver moves on.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	resp, err := r.client.Get(ctx, r.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list %s: %w", r.prefix, err)
	}
	wasRestart := r.endpoints != nil
	r.endpoints = make(map[string]Endpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r.put(string(kv.Key), kv.Value)
	}
	r.push()
	listed()
	if wasRestart {
		r.logger.Info("following the registry again", "endpoints", len(r.endpoints), "revision", resp.Header.Revision)
	}

	watch := r.client.Watch(ctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wresp := range watch {
		if err := wresp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", r.prefix, err)
		}
		for _, ev := range wresp.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				r.put(string(ev.Kv.Key), ev.Kv.Value)
			case clientv3.EventTypeDelete:
				delete(r.endpoints, string(ev.Kv.Key))
			}
		}
		if len(wresp.Events) > 0 {
			r.push()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch closed")
}

// put records the value stored under key. A malformed value is skipped and
// counted, and it also removes what the key held before: keeping the old
// address would send calls to whatever replaced the node.
func (r *etcdResolver) put(key string, value []byte) {
	ep, err := DecodeEndpoint(key, value)
	if err != nil {
		delete(r.endpoints, key)
		r.opts.events.Malformed(r.service)
		r.logger.Warn("skipping malformed registry entry", "key", key, "error", err)
		return
	}
	r.endpoints[key] = ep
}

// push hands the current endpoints to gRPC, in key order so that equal sets
// look equal. An empty list is sent too: gRPC then fails calls at once
// instead of letting them wait for nodes until their deadline.
func (r *etcdResolver) push() {
	keys := make([]string, 0, len(r.endpoints))
	for k := range r.endpoints {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	state := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(keys))}
	for _, k := range keys {
		ep := r.endpoints[k]
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: ep.Addr}},
			Attributes: attributes.New(metadataKey{}, ep.Metadata),
		})
	}
	if len(keys) == 0 {
		r.logger.Warn("no node is registered", "prefix", r.prefix)
	}
	// An error here means gRPC found the state unusable (no endpoints, say);
	// it asks again through ResolveNow, and the watch already follows.
	_ = r.cc.UpdateState(state)
	r.opts.events.Updated(r.service, len(keys))
}

type metadataKey struct{}

// MetadataFrom returns the node Metadata that a resolver attached to an
// endpoint's attributes.
func MetadataFrom(attrs *attributes.Attributes) (Metadata, bool) {
	md, ok := attrs.Value(metadataKey{}).(Metadata)
	return md, ok
}

type nopResolverEvents struct{}

func (nopResolverEvents) Updated(string, int)   {}
func (nopResolverEvents) WatchRestarted(string) {}
func (nopResolverEvents) Malformed(string)      {}
