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
)

// Option configures how the registry is followed, by a resolver or a View.
type Option func(*followOptions)

type followOptions struct {
	logger  *slog.Logger
	backoff Backoff
	events  ResolverEvents
}

func newFollowOptions(opts []Option) followOptions {
	o := followOptions{logger: slog.Default(), backoff: DefaultBackoff, events: nopResolverEvents{}}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLogger sets where warnings about the registry go; the default is
// slog.Default().
func WithLogger(logger *slog.Logger) Option {
	return func(o *followOptions) { o.logger = logger }
}

// WithBackoff sets how attempts to follow the registry again after a failure
// are spaced out.
func WithBackoff(b Backoff) Option {
	return func(o *followOptions) { o.backoff = b }
}

// ResolverEvents hears how the registry is followed, for metrics. Its methods
// must be cheap and safe for concurrent use.
type ResolverEvents interface {
	// Updated is called each time a new list of endpoints is handed on.
	Updated(service string, endpoints int)
	// WatchRestarted is called each time the registry is listed and watched
	// again after the watch failed or closed.
	WatchRestarted(service string)
	// Malformed is called for every registry value that is skipped.
	Malformed(service string)
}

// WithEvents reports how the registry is followed to events.
func WithEvents(events ResolverEvents) Option {
	return func(o *followOptions) { o.events = events }
}

// follower keeps up with the nodes registered under one service and hands
// every new list, in key order, to onChange. It is what etcd's resolver does,
// without its gaps: after any failure of the watch (a compaction, a lost
// leader, a closed channel) it lists the registry again and watches from
// there, with backoff, for as long as it runs, and until it succeeds it hands
// on nothing, so the last known nodes stay in use.
type follower struct {
	client   *clientv3.Client
	service  string
	prefix   string
	opts     followOptions
	logger   *slog.Logger
	onChange func([]Endpoint)
	poke     chan struct{}

	// endpoints are the registered nodes in key order, owned by run. An
	// add or removal is a binary search and a copy of the tail: with 10,000
	// nodes a change costs microseconds, where sorting a map's values again
	// on every change cost milliseconds (docs/BENCHMARKS.md).
	endpoints []Endpoint
	listed    bool // endpoints holds a listing
	// lend hands onChange the follower's own list, which changes after
	// onChange returns, instead of a copy: for a callback that keeps
	// nothing of it, as the resolver's.
	lend bool
}

func newFollower(client *clientv3.Client, service string, opts followOptions, onChange func([]Endpoint)) *follower {
	return &follower{
		client:   client,
		service:  service,
		prefix:   Prefix(service),
		opts:     opts,
		logger:   opts.logger.With("service", service),
		onChange: onChange,
		poke:     make(chan struct{}, 1),
	}
}

// retryNow cuts short the wait before the next attempt, if one is pending.
func (f *follower) retryNow() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// run follows the registry until ctx ends.
func (f *follower) run(ctx context.Context) {
	failures := 0
	for {
		err := f.follow(ctx, func() { failures = 0 })
		if ctx.Err() != nil {
			return
		}
		if failures == 0 {
			// Log the change of state once; the retries that follow are quiet.
			f.logger.Warn("lost the registry; keeping the last known endpoints and retrying", "error", err, "endpoints", len(f.endpoints))
		} else {
			f.logger.Debug("registry still unreachable", "error", err, "attempt", failures)
		}
		f.opts.events.WatchRestarted(f.service)
		delay := f.opts.backoff.Delay(failures)
		failures++
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-f.poke:
			timer.Stop()
		}
	}
}

// follow lists the registry, hands on the endpoints, and applies the watch's
// events until the watch fails. It calls listed after a good list.
func (f *follower) follow(ctx context.Context, listed func()) error {
	// Without a leader, a member may serve a stale or partitioned view;
	// requiring one makes the watch fail instead, and the follower moves on.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()

	resp, err := f.client.Get(ctx, f.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list %s: %w", f.prefix, err)
	}
	restarted := f.listed
	f.listed = true
	// A listing comes in key order, so appending keeps the list sorted.
	f.endpoints = slices.Grow(f.endpoints[:0], len(resp.Kvs))
	for _, kv := range resp.Kvs {
		f.put(string(kv.Key), kv.Value)
	}
	f.handOn()
	listed()
	// A ResolveNow hint that came while the follower was current must not cut
	// short the wait after the next failure.
	select {
	case <-f.poke:
	default:
	}
	if restarted {
		f.logger.Info("following the registry again", "endpoints", len(f.endpoints), "revision", resp.Header.Revision)
	}

	watch := f.client.Watch(ctx, f.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wresp := range watch {
		if err := wresp.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", f.prefix, err)
		}
		for _, ev := range wresp.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				f.put(string(ev.Kv.Key), ev.Kv.Value)
			case clientv3.EventTypeDelete:
				f.remove(string(ev.Kv.Key))
			}
		}
		if len(wresp.Events) > 0 {
			f.handOn()
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
func (f *follower) put(key string, value []byte) {
	ep, err := DecodeEndpoint(key, value)
	if err != nil {
		f.remove(key)
		f.opts.events.Malformed(f.service)
		f.logger.Warn("skipping malformed registry entry", "key", key, "error", err)
		return
	}
	i, found := f.find(key)
	if found {
		f.endpoints[i] = ep
		return
	}
	f.endpoints = slices.Insert(f.endpoints, i, ep)
}

// remove forgets key, if it is known.
func (f *follower) remove(key string) {
	if i, found := f.find(key); found {
		f.endpoints = slices.Delete(f.endpoints, i, i+1)
	}
}

// find is where key is in endpoints, or where it would go.
func (f *follower) find(key string) (int, bool) {
	return slices.BinarySearchFunc(f.endpoints, key, func(ep Endpoint, key string) int { return strings.Compare(ep.Key, key) })
}

func (f *follower) handOn() {
	if f.lend {
		f.onChange(f.endpoints)
	} else {
		// Never nil, as before: an empty registry is an empty list.
		f.onChange(append(make([]Endpoint, 0, len(f.endpoints)), f.endpoints...))
	}
	f.opts.events.Updated(f.service, len(f.endpoints))
}

type nopResolverEvents struct{}

func (nopResolverEvents) Updated(string, int)   {}
func (nopResolverEvents) WatchRestarted(string) {}
func (nopResolverEvents) Malformed(string)      {}
