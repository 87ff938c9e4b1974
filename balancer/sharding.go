package balancer

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// sharding is gRPC's round_robin (endpointsharding over pick_first
// children) with the children's states kept as counts, so that an update of
// one child costs O(1), not O(N): see docs/DESIGN.md, "Round robin over
// endpoints that refuse". Its picker picks by load (load.go), and it ejects
// the children that fail (ejection.go).
type sharding struct {
	target     string
	cc         grpcbalancer.ClientConn
	opts       grpcbalancer.BuildOptions
	childBuild func(grpcbalancer.ClientConn, grpcbalancer.BuildOptions) grpcbalancer.Balancer

	// children is written by the top-down calls only, which gRPC
	// serializes; children's updates never read it.
	children *resolver.EndpointMap[*child]
	cfg      policyConfig // the latest, with defaults filled in; top-down calls only

	// mu guards what children's updates change. Never call into a child
	// while holding it: the child may update its state synchronously.
	mu       sync.Mutex
	inhibit  bool // a top-down call is under way and sends one state after it
	count    map[connectivity.State]int
	ready    map[*child]struct{}
	newReady bool // ready changed since the last picker
	failed   grpcbalancer.Picker
	sent     connectivity.State
	members  map[*child]struct{} // every child not removed, for the ejection sweep

	sweeps *sweeper // nil while ejection is off; top-down calls only
}

func newSharding(cc grpcbalancer.ClientConn, opts grpcbalancer.BuildOptions, childBuild func(grpcbalancer.ClientConn, grpcbalancer.BuildOptions) grpcbalancer.Balancer) *sharding {
	return &sharding{
		target:     opts.Target.String(),
		cc:         cc,
		opts:       opts,
		childBuild: childBuild,
		children:   resolver.NewEndpointMap[*child](),
		count:      map[connectivity.State]int{},
		ready:      map[*child]struct{}{},
		members:    map[*child]struct{}{},
		cfg:        policyConfig{decay: DefaultLatencyDecay},
		sent:       connectivity.Shutdown, // nothing sent yet
	}
}

func (s *sharding) UpdateClientConnState(state grpcbalancer.ClientConnState) error {
	s.setInhibit(true)
	var err error
	children := resolver.NewEndpointMap[*child]()
	for _, ep := range state.ResolverState.Endpoints {
		if _, dup := children.Get(ep); dup {
			continue
		}
		c, ok := s.children.Get(ep)
		if !ok {
			c = s.newChild(ep)
		}
		children.Set(ep, c)
		childErr := c.updateClientConnState(grpcbalancer.ClientConnState{
			BalancerConfig: state.BalancerConfig,
			ResolverState:  resolver.State{Endpoints: []resolver.Endpoint{ep}, Attributes: state.ResolverState.Attributes},
		})
		if childErr != nil && err == nil {
			err = childErr
		}
	}
	for ep, c := range s.children.All() {
		if _, ok := children.Get(ep); !ok {
			s.forget(c)
			c.close()
		}
	}
	s.children = children
	if children.Len() == 0 {
		err = grpcbalancer.ErrBadResolverState
	}
	s.setInhibit(false)
	return err
}

func (s *sharding) ResolverError(err error) {
	s.setInhibit(true)
	for _, c := range s.children.All() {
		c.do(func(lb grpcbalancer.Balancer) { lb.ResolverError(err) })
	}
	s.setInhibit(false)
}

func (s *sharding) ExitIdle() {
	s.setInhibit(true)
	for _, c := range s.children.All() {
		c.do(grpcbalancer.Balancer.ExitIdle)
	}
	s.setInhibit(false)
}

func (s *sharding) Close() {
	s.sweeps.stop()
	s.setInhibit(true)
	for _, c := range s.children.All() {
		s.forget(c)
		c.close()
	}
}

// configure takes the policy's config: endpoints that come later have its
// latency decay and metrics, and ejection follows its outlier detection.
func (s *sharding) configure(cfg policyConfig) {
	odChanged := !reflect.DeepEqual(s.cfg.od, cfg.od)
	s.cfg = cfg
	if !odChanged {
		return
	}
	s.sweeps.stop()
	s.sweeps = nil
	if cfg.od != nil {
		s.sweeps = s.startSweeps(*cfg.od)
	}
}

// sweeper runs the ejection sweep every interval until stop.
type sweeper struct{ stopping, done chan struct{} }

func (s *sharding) startSweeps(od OutlierDetection) *sweeper {
	w := &sweeper{stopping: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(od.Interval)
		defer tick.Stop()
		for {
			select {
			case <-w.stopping:
				return
			case now := <-tick.C:
				s.sweep(od, now)
			}
		}
	}()
	return w
}

func (w *sweeper) stop() {
	if w != nil {
		close(w.stopping)
		<-w.done
	}
}

// sweep ejects and brings back endpoints, and sends a new picker if that
// changed which it picks from.
func (s *sharding) sweep(od OutlierDetection, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sweepLocked(od, slices.Collect(maps.Keys(s.members)), now) {
		return
	}
	s.newReady = true
	if !s.inhibit {
		s.sendLocked(false, false)
	}
}

func (s *sharding) UpdateSubConnState(grpcbalancer.SubConn, grpcbalancer.SubConnState) {} // deprecated; children have listeners

// setInhibit holds back the state while a top-down call updates children,
// and sends it once when the call is done.
func (s *sharding) setInhibit(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inhibit = on
	if !on {
		s.sendLocked(true, false)
	}
}

func (s *sharding) newChild(ep resolver.Endpoint) *child {
	c := &child{ClientConn: s.cc, parent: s, addr: ep.Addresses[0].Addr, state: grpcbalancer.State{ConnectivityState: connectivity.Connecting, Picker: base.NewErrPicker(grpcbalancer.ErrNoSubConnAvailable)}}
	c.load, c.metrics = newLoad(s.cfg.decay), s.cfg.metrics
	if c.metrics != nil {
		c.metrics.add(s.target, c.addr, c.load) // before the sweep can see c
	}
	s.mu.Lock()
	s.count[connectivity.Connecting]++
	s.members[c] = struct{}{}
	s.mu.Unlock()
	c.lb = s.childBuild(c, s.opts)
	return c
}

// forget takes a removed child out of the counts; its later updates are
// ignored.
func (s *sharding) forget(c *child) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.removed = true
	if c.metrics != nil {
		c.metrics.remove(s.target, c.addr, c.load)
	}
	delete(s.members, c)
	s.count[c.state.ConnectivityState]--
	if _, ok := s.ready[c]; ok {
		delete(s.ready, c)
		s.newReady = true
	}
}

// childUpdated records a child's new state and sends the aggregate when it
// may have changed: a ready child came or went, the aggregate state changed,
// or, in TRANSIENT_FAILURE, a child failed again (its error is the one calls
// see).
func (s *sharding) childUpdated(c *child, state grpcbalancer.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.removed {
		return
	}
	s.count[c.state.ConnectivityState]--
	s.count[state.ConnectivityState]++
	c.state = state
	_, wasReady := s.ready[c]
	if state.ConnectivityState == connectivity.Ready {
		s.ready[c] = struct{}{}
		s.newReady = true // a new picker of a ready child counts too
	} else if wasReady {
		delete(s.ready, c)
		s.newReady = true
	}
	if state.ConnectivityState == connectivity.TransientFailure {
		s.failed = state.Picker
	}
	if !s.inhibit {
		s.sendLocked(false, state.ConnectivityState == connectivity.TransientFailure)
	}
}

// sendLocked sends the aggregate state as round_robin does: READY if a child
// is, else CONNECTING, else IDLE, else TRANSIENT_FAILURE. Unless force, it
// sends only what changed; in TRANSIENT_FAILURE, a child that failedAgain
// changed the error calls see.
func (s *sharding) sendLocked(force, failedAgain bool) {
	var state connectivity.State
	var picker grpcbalancer.Picker
	switch {
	case len(s.ready) > 0:
		state = connectivity.Ready
		if !force && !s.newReady && s.sent == state {
			return
		}
		picker = s.pickerLocked()
		s.newReady = false
	case s.count[connectivity.Connecting] > 0 || s.count[connectivity.Idle] > 0:
		// A child that turns IDLE is made to connect at once (child.UpdateState).
		state = connectivity.Connecting
		if s.count[connectivity.Connecting] == 0 {
			state = connectivity.Idle
		}
		if !force && s.sent == state {
			return
		}
		picker = base.NewErrPicker(grpcbalancer.ErrNoSubConnAvailable)
	case s.failed != nil && s.count[connectivity.TransientFailure] > 0:
		state, picker = connectivity.TransientFailure, s.failed
		if !force && !failedAgain && s.sent == state {
			return
		}
	default:
		state, picker = connectivity.TransientFailure, base.NewErrPicker(errors.New("no children to pick from"))
	}
	s.sent = state
	s.cc.UpdateState(grpcbalancer.State{ConnectivityState: state, Picker: picker})
}

// pickerLocked picks from the ready children that are not ejected, or from
// every ready child if all are.
func (s *sharding) pickerLocked() *p2cPicker {
	p := &p2cPicker{
		pickers: make([]grpcbalancer.Picker, 0, len(s.ready)),
		addrs:   make([]string, 0, len(s.ready)),
		loads:   make([]*load, 0, len(s.ready)),
	}
	for _, ejected := range []bool{false, true} {
		for c := range s.ready {
			if c.ejection.ejected == ejected {
				p.pickers = append(p.pickers, c.state.Picker)
				p.addrs = append(p.addrs, c.addr)
				p.loads = append(p.loads, c.load)
			}
		}
		if len(p.pickers) > 0 {
			break
		}
	}
	return p
}

// child is one endpoint's pick_first, and the grpcbalancer.ClientConn it
// reports to.
type child struct {
	grpcbalancer.ClientConn // the parent's; UpdateState is the child's own
	parent                  *sharding
	addr                    string // the endpoint's first address
	load                    *load
	metrics                 *Metrics // nil without
	// state, removed and ejection are guarded by parent.mu.
	state    grpcbalancer.State
	removed  bool
	ejection ejection

	mu     sync.Mutex // serializes calls into lb
	lb     grpcbalancer.Balancer
	closed bool
}

func (c *child) UpdateState(state grpcbalancer.State) {
	c.parent.childUpdated(c, state)
	if state.ConnectivityState == connectivity.Idle {
		go c.do(grpcbalancer.Balancer.ExitIdle) // as round_robin: reconnect at once
	}
}

func (c *child) updateClientConnState(state grpcbalancer.ClientConnState) (err error) {
	c.do(func(lb grpcbalancer.Balancer) { err = lb.UpdateClientConnState(state) })
	return err
}

// do calls f on the child's balancer, unless it is closed.
func (c *child) do(f func(grpcbalancer.Balancer)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		f(c.lb)
	}
}

func (c *child) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.lb.Close()
	}
}
