package routeguide

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// writeGate bounds the notes a server posts at once: over all streams, and
// from one peer (the client's host), so that no client can take them all.
// A note that finds no room waits for it, within its stream's context and
// for at most wait.
type writeGate struct {
	all     chan struct{}
	perPeer int
	wait    time.Duration

	mu    sync.Mutex
	peers map[string]*peerSlots
}

// peerSlots are one peer's share, kept while any of its notes waits or posts.
type peerSlots struct {
	slots chan struct{}
	users int
}

// errGateFull is what enter returns when the wait ends without room.
var errGateFull = errors.New("no room to post")

// newWriteGate lets n notes post at once, and a peer take a quarter of them
// (at least one); nil when n <= 0, which lets every note through.
func newWriteGate(n int, wait time.Duration) *writeGate {
	if n <= 0 {
		return nil
	}
	return &writeGate{all: make(chan struct{}, n), perPeer: max(1, n/4), wait: wait, peers: make(map[string]*peerSlots)}
}

// enter waits for room for one note of the stream whose context is ctx,
// and returns what gives it back.
func (g *writeGate) enter(ctx context.Context) (leave func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	key := peerHost(ctx)
	g.mu.Lock()
	p := g.peers[key]
	if p == nil {
		p = &peerSlots{slots: make(chan struct{}, g.perPeer)}
		g.peers[key] = p
	}
	p.users++
	g.mu.Unlock()
	done := func() {
		g.mu.Lock()
		if p.users--; p.users == 0 {
			delete(g.peers, key)
		}
		g.mu.Unlock()
	}

	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	if err := take(ctx, p.slots, timer.C); err != nil {
		done()
		return nil, err
	}
	if err := take(ctx, g.all, timer.C); err != nil {
		<-p.slots
		done()
		return nil, err
	}
	return func() { <-g.all; <-p.slots; done() }, nil
}

// take puts a token in slots, waiting while it is full until ctx ends or
// the wait expires.
func take(ctx context.Context, slots chan struct{}, expired <-chan time.Time) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
		return errGateFull
	}
}

// peerHost is the host of the stream's peer: a client's connections share
// its share.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}
