package routeguide

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc/peer"
)

// writeGate bounds the notes a server posts and answers at once, over all
// streams and per client group: an IPv4 address, or an IPv6 /64, which is
// what one host or one site holds. A group may hold at most
// share() places: a quarter of them, and less as more groups post, always
// leaving room for one more group; and since an answer that is not read
// within its wait gives its place back (Server.sendAnswer), no set of
// clients holds the places for longer than that. Notes that find no room
// wait in arrival order, within their stream's context and for at most
// wait. See docs/DESIGN.md, "RouteChat: who may post".
type writeGate struct {
	places int
	wait   time.Duration

	mu      sync.Mutex
	inUse   int
	groups  map[netip.Prefix]*group
	waiting list.List // of *waiter, oldest first
}

// group is one client group's holding, kept while any of its notes waits
// or holds a place.
type group struct {
	key   netip.Prefix
	held  int
	users int // notes waiting or holding
}

type waiter struct {
	g       *group
	granted chan struct{} // closed once the place is the waiter's
}

// errGateFull is what enter returns when the wait ends without room.
var errGateFull = errors.New("no room to post")

// newWriteGate lets n notes post at once; nil when n <= 0, which lets
// every note through.
func newWriteGate(n int, wait time.Duration) *writeGate {
	if n <= 0 {
		return nil
	}
	return &writeGate{places: n, wait: wait, groups: make(map[netip.Prefix]*group)}
}

// share is how many places one group may hold while the groups of the map
// post: a quarter of them, at most places/(groups+1), at least one.
func (g *writeGate) shareLocked() int {
	return max(1, min(g.places/4, g.places/(len(g.groups)+1)))
}

func (g *writeGate) mayTakeLocked(gr *group) bool {
	return g.inUse < g.places && gr.held < g.shareLocked()
}

// enter waits for room for one note of the stream whose context is ctx,
// and returns what gives it back.
func (g *writeGate) enter(ctx context.Context) (leave func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	key := clientGroup(ctx)
	g.mu.Lock()
	gr := g.groups[key]
	if gr == nil {
		gr = &group{key: key}
		g.groups[key] = gr
	}
	gr.users++
	w := &waiter{g: gr, granted: make(chan struct{})}
	el := g.waiting.PushBack(w)
	g.grantLocked()
	g.mu.Unlock()

	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case <-w.granted:
		return func() { g.leave(gr) }, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = errGateFull
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w.granted:
		// Granted as the wait ended: the place is the caller's after all.
		return func() { g.leave(gr) }, nil
	default:
	}
	g.waiting.Remove(el)
	g.dropLocked(gr)
	g.grantLocked() // this waiter may have held back those behind it
	return nil, err
}

func (g *writeGate) takeLocked(gr *group) {
	g.inUse++
	gr.held++
}

func (g *writeGate) leave(gr *group) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inUse--
	gr.held--
	g.dropLocked(gr)
	g.grantLocked()
}

func (g *writeGate) dropLocked(gr *group) {
	if gr.users--; gr.users == 0 {
		delete(g.groups, gr.key)
	}
}

// grantLocked gives free places to the waiters in arrival order, passing
// over those whose group holds its share.
func (g *writeGate) grantLocked() {
	for el := g.waiting.Front(); el != nil && g.inUse < g.places; {
		next := el.Next()
		if w := el.Value.(*waiter); g.mayTakeLocked(w.g) {
			g.takeLocked(w.g)
			g.waiting.Remove(el)
			close(w.granted)
		}
		el = next
	}
}

// clientGroup is the group of the stream's peer: its IPv4 address, or the
// /64 of its IPv6 address; a peer without an IP address is a group of its
// own kind.
func clientGroup(ctx context.Context) netip.Prefix {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Prefix{}
	}
	var addr netip.Addr
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		addr, _ = netip.AddrFromSlice(tcp.IP)
	} else if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		addr = ap.Addr()
	}
	addr = addr.Unmap()
	switch {
	case addr.Is4():
		return netip.PrefixFrom(addr, 32)
	case addr.Is6():
		prefix, _ := addr.WithZone("").Prefix(64)
		return prefix
	}
	return netip.Prefix{}
}
