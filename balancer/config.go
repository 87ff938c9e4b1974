package balancer

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking that healthCheckConfig turns on
	"google.golang.org/grpc/keepalive"

	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// ServiceConfig is the service config of every RouteGuide client:
//
//   - loadBalancingConfig: our round robin (round_robin plus a clear error
//     when no node is registered), so calls spread evenly over every node.
//   - healthCheckConfig: each connection watches grpc.health.v1 for
//     contract.HealthService; a node that is not SERVING is not picked.
//   - retryPolicy for contract.IdempotentMethods, which change nothing and
//     can safely run twice: an UNAVAILABLE answer (the node went away between
//     the pick and the call, or refused the connection) is retried on another
//     node, up to 4 attempts in all, a few milliseconds apart. A stream is
//     retried only until its first response arrives, so a client never sees
//     a feature twice. RecordRoute and RouteChat change state and are never
//     retried.
var ServiceConfig = `{
  "loadBalancingConfig": [{"` + Name + `": ` + policyConfigPlaceholder + `}],
  "healthCheckConfig": {"serviceName": "` + contract.HealthService + `"},
  "methodConfig": [{
    "name": [` + methodNames(contract.IdempotentMethods) + `],
    "retryPolicy": {
      "maxAttempts": ` + strconv.Itoa(RetryMaxAttempts) + `,
      "initialBackoff": "` + seconds(RetryInitialBackoff) + `",
      "maxBackoff": "` + seconds(RetryMaxBackoff) + `",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// The retry policy of contract.IdempotentMethods, in ServiceConfig and in
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

// Keepalive: the client pings a connection that has been quiet for
// ClientKeepalive.Time and drops it when no answer comes within Timeout, so a
// node that vanished without closing its connections (power loss, a cut
// cable) is given up after at most Time+Timeout = 13s, even with no call in
// flight. gRPC does not let clients ping more often than every 10s (it raises
// a shorter Time to 10s), so 13s is close to the least there is: a shorter
// Timeout would save a second or two at the risk of dropping a node that is
// only busy. Until keepalive gives the connection up, round robin still
// picks it, and the attempt timeout (DefaultAttemptTimeout) moves each
// idempotent call picked for it to another node.
//
// Nodes must permit that rate, or they would close the connection with
// too_many_pings: ServerEnforcement allows a ping every 5s, half the client's
// interval, so jitter never trips it.
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
