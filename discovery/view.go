package discovery

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// View is a live copy of the nodes registered under one service, fed by a
// watch, for readers that must not query etcd on every request (the /sd
// endpoint that Prometheus polls, say). It follows the registry the way the
// resolver does, and keeps its last list while etcd is out of reach.
type View struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.RWMutex
	endpoints []Endpoint
	changed   chan struct{} // closed at the next set
}

// WatchService starts a View of service; Close stops it.
func WatchService(client *clientv3.Client, service string, opts ...Option) *View {
	ctx, cancel := context.WithCancel(context.Background())
	v := &View{cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	f := newFollower(client, service, newFollowOptions(opts), v.set)
	go func() {
		defer close(v.done)
		f.run(ctx)
	}()
	return v
}

func (v *View) set(eps []Endpoint) {
	v.mu.Lock()
	v.endpoints = eps
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

// Endpoints returns the registered nodes in key order. The slice is shared:
// do not modify it.
func (v *View) Endpoints() []Endpoint {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.endpoints
}

// Current returns the registered nodes, as Endpoints does, and a channel
// that is closed when they next change: a reader that must follow every
// change reads again after it closes. Endpoints is nil until the registry
// has been listed once; an empty registry is an empty list.
func (v *View) Current() (endpoints []Endpoint, changed <-chan struct{}) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.endpoints, v.changed
}

// Close stops following the registry and waits until the View's goroutine
// has ended.
func (v *View) Close() {
	v.cancel()
	<-v.done
}
