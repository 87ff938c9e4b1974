package balancer

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Load-aware picking: power of two choices over a peak latency EWMA times
// the calls in flight, as Finagle and go-zero do. docs/DESIGN.md ("Slow and
// failing nodes") has the measurements that chose it over least request and
// weighted round robin.

// DefaultLatencyDecay is the EWMA's time constant: an observation weighs
// e^(-Δt/decay) against the next one Δt later, and a node's cost fades
// towards nothing while it goes unpicked, so it is tried again.
const DefaultLatencyDecay = time.Second

// probeAfter is the longest a ready endpoint that loses every comparison
// goes without a call: the next comparison it loses, it is picked anyway,
// so a node that healed is seen to have healed.
const probeAfter = time.Second

// unmeasuredCost is the cost of an endpoint with calls in flight and no
// latency yet: a fresh node answers its first calls before it takes more.
const unmeasuredCost = float64(time.Second)

// epoch is where the policy's clock starts; durations since it are monotonic.
var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// load is what the policy knows of one endpoint's calls, across pickers.
type load struct {
	decay    float64 // ns
	inflight atomic.Int64
	lastPick atomic.Int64 // nanotime

	mu    sync.Mutex    // serializes observe
	ewma  atomic.Uint64 // float64 bits, ns; 0 until the first answer
	stamp atomic.Int64  // nanotime of the last observation

	// Attempts ended since the ejection sweep last took them.
	calls, failures atomic.Uint64
	ejected         atomic.Bool // a copy of the sweep's, for the metrics

	// The endpoint's metrics: no-ops without Metrics (metrics.go, add).
	picks       prometheus.Counter
	failed      func()
	ejectedOnce func()
}

func newLoad(decay time.Duration) *load {
	return &load{decay: float64(decay), picks: noCounter{}, failed: func() {}, ejectedOnce: func() {}}
}

// noCounter is the picks counter of an endpoint without Metrics.
type noCounter struct{ prometheus.Counter }

func (noCounter) Inc() {}

// cost is the load's latency EWMA, faded by the time since it was last
// measured, times the calls in flight plus one.
func (l *load) cost(now int64) float64 {
	inflight := float64(l.inflight.Load())
	ewma := math.Float64frombits(l.ewma.Load())
	if ewma == 0 {
		return unmeasuredCost * inflight
	}
	return ewma * l.weight(now-l.stamp.Load()) * (inflight + 1)
}

// weight is e^(-dt/decay), what a measurement dt ago still counts. Under
// load an endpoint was measured a moment ago, where the first two terms of
// the series are exact to a few parts in a million and cost no math.Exp.
func (l *load) weight(dt int64) float64 {
	x := float64(dt) / l.decay
	if x < 1.0/256 {
		return 1 - x
	}
	return math.Exp(-x)
}

// observe takes one attempt's latency into the EWMA. Peak-sensitive: a
// slower answer replaces the average at once, a faster one is averaged in. A
// failed attempt may raise the EWMA but never lowers it, or a node that fails
// fast would draw calls.
func (l *load) observe(now int64, rtt float64, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := math.Float64frombits(l.ewma.Load())
	ewma := rtt
	if rtt < old {
		if failed {
			ewma = old
		} else {
			w := l.weight(now - l.stamp.Load())
			ewma = old*w + rtt*(1-w)
		}
	}
	l.ewma.Store(math.Float64bits(ewma))
	l.stamp.Store(now)
}

// latency is the EWMA as it was last measured.
func (l *load) latency() time.Duration {
	return time.Duration(math.Float64frombits(l.ewma.Load()))
}

// streamKey marks the context of a stream (markStream): its length is no
// latency, so the picker counts it in flight but keeps it out of the EWMA.
type streamKey struct{}

// markStream is the stream interceptor of DialOptions that marks streams.
func markStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(context.WithValue(ctx, streamKey{}, true), desc, cc, method, opts...)
}

// start counts a call in flight on addr from now, and returns what ends it.
// A failure makes c, the timed call (nil for others), avoid addr. A
// unary call's time goes into the EWMA, a stream's does not.
func (l *load) start(now int64, addr string, c *call, unary bool) func(grpcbalancer.DoneInfo) {
	l.inflight.Add(1)
	return func(info grpcbalancer.DoneInfo) {
		end := nanotime()
		l.inflight.Add(-1)
		failed := isFailure(info.Err)
		l.calls.Add(1)
		if failed {
			l.failures.Add(1)
			l.failed()
			if c != nil {
				c.failedOn(addr)
			}
		}
		if unary {
			l.observe(end, float64(end-now), info.Err != nil)
		}
	}
}

// isFailure reports whether an attempt's error is the node's fault, which is
// what outlier ejection counts: not an answer the service gives (NOT_FOUND,
// RESOURCE_EXHAUSTED, ...), not a caller's cancellation, not slowness
// (which the EWMA sees).
func isFailure(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// p2cPicker picks, for each call, the cheaper of two ready endpoints drawn
// at random. An attempt of a timed call (attempt.go) draws from the
// endpoints where no attempt of the same call has hung or failed, while
// there are any.
type p2cPicker struct {
	pickers []grpcbalancer.Picker
	addrs   []string // the endpoint of each picker
	loads   []*load
}

func (p *p2cPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	now := nanotime()
	c, _ := info.Ctx.Value(callKey{}).(*call)
	i := p.pickFor(now, c)
	res, err := p.pickers[i].Pick(info)
	if err != nil {
		return res, err
	}
	p.loads[i].picks.Inc()
	res.Done = p.loads[i].start(now, p.addrs[i], c, info.Ctx.Value(streamKey{}) == nil)
	return res, nil
}

// pickFor chooses for c, a timed call or nil. An attempt of a timed call
// notes where it went, so that a timeout marks that endpoint as hung.
func (p *p2cPicker) pickFor(now int64, c *call) int {
	if c == nil {
		return p.choose(now, nil)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i := p.choose(now, c.avoid)
	c.peer = p.addrs[i]
	return i
}

// choose draws two endpoints not in avoid if two are left,
// and returns the cheaper, or the other one if it has waited past
// probeAfter.
func (p *p2cPicker) choose(now int64, avoid map[string]bool) int {
	n := len(p.pickers)
	if n == 1 {
		return 0
	}
	a, b := p.draw(n, avoid)
	if p.loads[b].cost(now) < p.loads[a].cost(now) {
		a, b = b, a
	}
	if last := p.loads[b].lastPick.Load(); now-last > int64(probeAfter) && p.loads[b].lastPick.CompareAndSwap(last, now) {
		return b
	}
	p.loads[a].lastPick.Store(now)
	return a
}

// draw returns two different indexes below n, of endpoints not in avoid if
// there are two such (one such, twice, if there is one).
func (p *p2cPicker) draw(n int, avoid map[string]bool) (int, int) {
	if len(avoid) == 0 {
		a := rand.IntN(n)
		b := rand.IntN(n - 1)
		if b >= a {
			b++
		}
		return a, b
	}
	var ok []int
	for i, addr := range p.addrs {
		if !avoid[addr] {
			ok = append(ok, i)
		}
	}
	switch len(ok) {
	case 0:
		return p.draw(n, nil)
	case 1:
		return ok[0], ok[0]
	}
	a, b := p.draw(len(ok), nil)
	return ok[a], ok[b]
}

// readyEndpoints is how many endpoints a picker of sharding picks from.
func readyEndpoints(p grpcbalancer.Picker) int {
	if rp, ok := p.(*p2cPicker); ok {
		return len(rp.pickers)
	}
	return 0
}
