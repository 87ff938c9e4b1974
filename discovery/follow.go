package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Option configures how the registry is followed, by a resolver or a View.
type Option func(*followOptions)

type followOptions struct {
	logger   *slog.Logger
	backoff  Backoff
	events   ResolverEvents
	unleased bool // take entries that carry no lease
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

// WithUnleasedEntries takes registry entries that carry no etcd lease as
// endpoints, for operators who write static endpoints by hand. Without it
// such an entry is skipped and counted (ResolverEvents.Unleased): nodes
// always register under a lease, and an entry without one outlives whatever
// wrote it.
func WithUnleasedEntries() Option {
	return func(o *followOptions) { o.unleased = true }
}

// ResolverEvents hears how the registry is followed, for metrics. Its methods
// must be cheap and safe for concurrent use.
type ResolverEvents interface {
	// Updated is called each time a new list of endpoints is handed on.
	Updated(service string, endpoints int)
	// WatchRestarted is called each time the registry is listed and watched
	// again after the watch failed or closed.
	WatchRestarted(service string)
	// Malformed is called for every registry value that is skipped because
	// it is malformed.
	Malformed(service string)
	// Unleased is called for every registry entry that is skipped because
	// it carries no lease (see WithUnleasedEntries).
	Unleased(service string)
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

	// unleased are the keys now skipped for want of a lease, and
	// unleasedBefore those of the listing before, so that each is logged
	// once, in one line per listing or watch response (newlyUnleased).
	unleased       map[string]struct{}
	unleasedBefore map[string]struct{}
	newlyUnleased  []string
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
		unleased: map[string]struct{}{},
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
	f.unleasedBefore, f.unleased = f.unleased, map[string]struct{}{}
	for _, kv := range resp.Kvs {
		f.put(kv)
	}
	f.unleasedBefore = nil
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
				f.put(ev.Kv)
			case clientv3.EventTypeDelete:
				f.remove(string(ev.Kv.Key))
				delete(f.unleased, string(ev.Kv.Key))
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

// put records the entry kv. An entry without a lease (unless the options take
// them) or with a malformed value is skipped and counted, and it also removes
// what the key held before: keeping the old address would send calls to
// whatever replaced the node.
func (f *follower) put(kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	if kv.Lease == 0 && !f.opts.unleased {
		f.remove(key)
		f.opts.events.Unleased(f.service)
		if _, known := f.unleased[key]; !known {
			f.unleased[key] = struct{}{}
			if _, logged := f.unleasedBefore[key]; !logged {
				f.newlyUnleased = append(f.newlyUnleased, key)
			}
		}
		return
	}
	delete(f.unleased, key)
	ep, err := DecodeEndpoint(key, kv.Value)
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
	if n := len(f.newlyUnleased); n > 0 {
		f.logger.Warn("skipping registry entries without a lease: nodes register under one (see discovery.WithUnleasedEntries)",
			"entries", n, "keys", f.newlyUnleased[:min(n, maxLoggedKeys)])
		f.newlyUnleased = nil // the record may keep the slice
	}
	if f.lend {
		f.onChange(f.endpoints)
	} else {
		// Never nil, as before: an empty registry is an empty list.
		f.onChange(append(make([]Endpoint, 0, len(f.endpoints)), f.endpoints...))
	}
	f.opts.events.Updated(f.service, len(f.endpoints))
}

// maxLoggedKeys bounds the keys one warning names: a registry flooded with
// entries should not flood the log too.
const maxLoggedKeys = 10

type nopResolverEvents struct{}

func (nopResolverEvents) Updated(string, int)   {}
func (nopResolverEvents) WatchRestarted(string) {}
func (nopResolverEvents) Malformed(string)      {}
func (nopResolverEvents) Unleased(string)       {}
