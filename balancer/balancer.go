// Package balancer is the calling policy of a cluster's gRPC clients: a
// round-robin policy chosen by service config, health checking, retries and
// attempt timeouts for idempotent calls, and keepalive, as dial options (and
// the server options that match them). It serves any gRPC service, RouteGuide
// by default, and knows nothing of etcd: any resolver that hands gRPC a list
// of endpoints works with it. gRPC's own package balancer is imported here as
// grpcbalancer.
package balancer

import (
	"fmt"
	"sync/atomic"

	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
)

// Name is the name of the policy in service configs.
const Name = "routeguide_round_robin"

func init() {
	grpcbalancer.Register(builder{})
}

// The policy picks as gRPC's round_robin does, from the same pick_first
// children, one per endpoint, but keeps their states by count (sharding.go),
// so that endpoints that refuse connections do not hold up the ones that
// answer. It has two additions. When the resolver reports no endpoints at
// all, calls fail with a
// message that names the target: round_robin itself says only "no children
// to pick from", which tells an operator nothing about which service has no
// nodes (TestNoEndpointsFailFastNamingTheTarget). And when the dialer asked
// for Metrics, it counts picks per endpoint and the endpoints ready.
type builder struct{}

func (builder) Name() string { return Name }

func (builder) Build(cc grpcbalancer.ClientConn, opts grpcbalancer.BuildOptions) grpcbalancer.Balancer {
	b := &roundRobin{target: opts.Target.String()}
	b.Balancer = newSharding(&stateInterceptor{ClientConn: cc, parent: b}, opts, grpcbalancer.Get(pickfirst.Name).Build)
	return b
}

type roundRobin struct {
	grpcbalancer.Balancer
	target      string
	noEndpoints atomic.Bool
	picks       atomic.Pointer[pickCounter] // nil without Metrics
}

func (b *roundRobin) UpdateClientConnState(s grpcbalancer.ClientConnState) error {
	b.noEndpoints.Store(len(s.ResolverState.Endpoints) == 0 && len(s.ResolverState.Addresses) == 0)
	if m := metricsFor(s.BalancerConfig); m != nil && b.picks.Load() == nil {
		b.picks.Store(&pickCounter{metrics: m, target: b.target})
	}
	// round_robin takes no config of its own; its pick_first children watch
	// health.
	return b.Balancer.UpdateClientConnState(grpcbalancer.ClientConnState{ResolverState: pickfirst.EnableHealthListener(s.ResolverState)})
}

// stateInterceptor sits between round_robin and the channel to replace the
// picker that fails calls when there is nothing to pick from.
type stateInterceptor struct {
	grpcbalancer.ClientConn
	parent *roundRobin
}

func (c *stateInterceptor) UpdateState(s grpcbalancer.State) {
	if s.ConnectivityState == connectivity.TransientFailure && c.parent.noEndpoints.Load() {
		s.Picker = base.NewErrPicker(fmt.Errorf("%s resolves to no endpoints: no node of the service is registered", c.parent.target))
	} else if picks := c.parent.picks.Load(); picks != nil {
		s.Picker = picks.wrap(s.Picker)
	}
	c.ClientConn.UpdateState(s)
}

func (c *stateInterceptor) NewSubConn(addrs []resolver.Address, opts grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error) {
	picks := c.parent.picks.Load()
	if picks == nil {
		return c.ClientConn.NewSubConn(addrs, opts)
	}
	return picks.track(addrs, opts, func(opts grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error) {
		return c.ClientConn.NewSubConn(addrs, opts)
	})
}
