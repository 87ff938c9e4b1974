package balancer

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking that healthCheckConfig turns on
	"google.golang.org/grpc/keepalive"

	"github.com/routeguide-cluster/routeguide/routeguide"
)

// ServiceConfig is the service config of every RouteGuide client: our round
// robin over the nodes whose health is SERVING, and retries of the idempotent
// methods on UNAVAILABLE (a stream only until its first response). See
// docs/DESIGN.md, "The service config and keepalive".
var ServiceConfig = `{
  "loadBalancingConfig": [{"` + Name + `": ` + policyConfigPlaceholder + `}],
  "healthCheckConfig": {"serviceName": "` + routeguide.HealthService + `"},
  "methodConfig": [{
    "name": [` + methodNames(routeguide.IdempotentMethods) + `],
    "retryPolicy": {
      "maxAttempts": ` + strconv.Itoa(RetryMaxAttempts) + `,
      "initialBackoff": "` + seconds(RetryInitialBackoff) + `",
      "maxBackoff": "` + seconds(RetryMaxBackoff) + `",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// The retry policy of routeguide.IdempotentMethods, in ServiceConfig and in
// what a node serves over xDS.
const (
	RetryMaxAttempts    = 4
	RetryInitialBackoff = 10 * time.Millisecond
	RetryMaxBackoff     = 100 * time.Millisecond
)

// seconds is d as a service config's duration.
func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// methodNames are full method names (/service/method) as the names of a
// service config's methodConfig.
func methodNames(fullNames []string) string {
	names := make([]string, len(fullNames))
	for i, full := range fullNames {
		service, method, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		names[i] = fmt.Sprintf(`{"service": %q, "method": %q}`, service, method)
	}
	return strings.Join(names, ", ")
}

// Keepalive: a client gives up a node that vanished without closing its
// connections after Time+Timeout = 13s, about the least gRPC allows; nodes
// permit a ping every 5s, half the client's interval, so jitter never trips
// too_many_pings. See docs/DESIGN.md, "The service config and keepalive".
var (
	ClientKeepalive = keepalive.ClientParameters{
		Time:                10 * time.Second,
		Timeout:             3 * time.Second,
		PermitWithoutStream: true,
	}
	ServerEnforcement = keepalive.EnforcementPolicy{
		MinTime:             5 * time.Second,
		PermitWithoutStream: true,
	}
	// ServerKeepalive lets a node find clients that vanished the same way.
	ServerKeepalive = keepalive.ServerParameters{
		Time:    30 * time.Second,
		Timeout: 10 * time.Second,
	}
)

// policyConfigPlaceholder is the policy's config in ServiceConfig; DialOptions
// replaces it to name the caller's Metrics.
const policyConfigPlaceholder = "{}"

// Option changes what DialOptions returns; it is not a grpc.DialOption.
type Option func(*options)

type options struct {
	metrics        *Metrics
	attemptTimeout time.Duration
}

// WithMetrics makes the policy report its picks and ready endpoints to m.
func WithMetrics(m *Metrics) Option {
	return func(o *options) { o.metrics = m }
}

// DialOptions are the options every RouteGuide client dials with, besides its
// transport credentials and resolver: the service config, keepalive, and a
// timeout on each attempt of an idempotent call, so that a node that went
// silent costs a call one attempt timeout rather than its whole deadline
// (see attempt.go: the retry policy never retries a deadline, and keepalive
// takes 13s to give a silent connection up).
func DialOptions(opts ...Option) []grpc.DialOption {
	o := options{attemptTimeout: DefaultAttemptTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	serviceConfig := ServiceConfig
	if o.metrics != nil {
		serviceConfig = strings.Replace(serviceConfig, `"`+Name+`": `+policyConfigPlaceholder, fmt.Sprintf(`"%s": {"metrics": %q}`, Name, o.metrics.id), 1)
	}
	return append([]grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(ClientKeepalive),
		grpc.WithMaxHeaderListSize(MaxHeaderListBytes),
	}, attemptOptions(o.attemptTimeout)...)
}

// MaxHeaderListBytes bounds the metadata of one call, in each direction:
// RouteGuide sends a few hundred bytes, and room for a token or trace
// context is plenty. Without it gRPC takes 16 MB, held for the call's life.
const MaxHeaderListBytes = 16 << 10

// ServerOptions are the options a node must serve with to match the
// clients' DialOptions: keepalive, and the bound on metadata.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(ServerEnforcement),
		grpc.KeepaliveParams(ServerKeepalive),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
	}
}
