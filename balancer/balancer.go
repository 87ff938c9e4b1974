// Package balancer is the calling policy of a cluster's gRPC clients: a
// load-aware policy chosen by service config, with outlier ejection, health
// checking, retries and attempt timeouts for idempotent calls, and
// keepalive, as dial options (and the server options that match them). It
// serves any gRPC service, RouteGuide by default, and knows nothing of etcd:
// any resolver that hands gRPC a list of endpoints works with it. gRPC's own
// package balancer is imported here as grpcbalancer.
//
// The policy is registered as "routeguide_p2c" (Name). It picks the cheaper
// of two ready endpoints drawn at random, cost being a peak latency EWMA
// times the calls in flight, probes an endpoint that went unpicked for a
// second, and ejects endpoints that fail, with gRFC A50's failure-percentage
// semantics. Its config, every field optional (an xDS cluster can name it in
// a TypedStruct, gRFC A52, with these fields):
//
//	{
//	  "latencyDecay": "1s",        // the EWMA's time constant (DefaultLatencyDecay)
//	  "outlierDetection": {        // absent: DefaultOutlierDetection; A50's names and defaults
//	    "interval": "2s",
//	    "baseEjectionTime": "10s",
//	    "maxEjectionTime": "300s",
//	    "maxEjectionPercent": 10,
//	    "failurePercentageEjection": {   // absent: no ejection
//	      "threshold": 20, "enforcementPercentage": 100,
//	      "minimumHosts": 3, "requestVolume": 20
//	    }
//	  },
//	  "metrics": "<id>"            // in-process only: set by WithMetrics
//	}
//
// docs/DESIGN.md ("Slow and failing nodes") says why, with the figures.
package balancer

import (
	"fmt"
	"sync/atomic"

	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
)

// Name is the name of the policy in service configs.
const Name = "routeguide_p2c"

func init() {
	grpcbalancer.Register(builder{})
}

// The policy keeps one pick_first child per endpoint, as gRPC's round_robin
// does, with their states kept by count (sharding.go), so that endpoints
// that refuse connections do not hold up the ones that answer. It picks by
// load (load.go), ejects the endpoints that fail (ejection.go), and when the
// resolver reports no endpoints at all, fails calls with a message that
// names the target: round_robin itself says only "no children to pick
// from", which tells an operator nothing about which service has no nodes
// (TestNoEndpointsFailFastNamingTheTarget).
type builder struct{}

func (builder) Name() string { return Name }

func (builder) Build(cc grpcbalancer.ClientConn, opts grpcbalancer.BuildOptions) grpcbalancer.Balancer {
	b := &policy{target: opts.Target.String()}
	b.sharding = newSharding(&stateInterceptor{ClientConn: cc, parent: b}, opts, grpcbalancer.Get(pickfirst.Name).Build)
	return b
}

type policy struct {
	*sharding
	target      string
	noEndpoints atomic.Bool
	metrics     atomic.Pointer[Metrics] // nil without
}

func (b *policy) UpdateClientConnState(s grpcbalancer.ClientConnState) error {
	b.noEndpoints.Store(len(s.ResolverState.Endpoints) == 0 && len(s.ResolverState.Addresses) == 0)
	cfg := defaultPolicyConfig()
	if c, ok := s.BalancerConfig.(*lbConfig); ok {
		cfg = c.parsed
	}
	if cfg.metrics != nil {
		b.metrics.Store(cfg.metrics)
	}
	b.configure(cfg)
	// The pick_first children take no config; they watch health.
	return b.sharding.UpdateClientConnState(grpcbalancer.ClientConnState{ResolverState: pickfirst.EnableHealthListener(s.ResolverState)})
}

// stateInterceptor sits between the policy and the channel to replace the
// picker that fails calls when there is nothing to pick from.
type stateInterceptor struct {
	grpcbalancer.ClientConn
	parent *policy
}

func (c *stateInterceptor) UpdateState(s grpcbalancer.State) {
	if s.ConnectivityState == connectivity.TransientFailure && c.parent.noEndpoints.Load() {
		s.Picker = base.NewErrPicker(fmt.Errorf("%s resolves to no endpoints: no node of the service is registered", c.parent.target))
	}
	if m := c.parent.metrics.Load(); m != nil {
		m.ready.WithLabelValues(c.parent.target).Set(float64(readyEndpoints(s.Picker)))
	}
	c.ClientConn.UpdateState(s)
}
