package balancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking that healthCheckConfig turns on
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/serviceconfig"

	"github.com/routeguide-cluster/routeguide/routeguide"
)

// ServiceConfig is the service config of every RouteGuide client:
//
//   - loadBalancingConfig: our policy (Name), which prefers the nodes that
//     answer fast and have few calls in flight, ejects the nodes that fail,
//     and says clearly when no node is registered.
//   - healthCheckConfig: each connection watches grpc.health.v1 for
//     routeguide.HealthService; a node that is not SERVING is not picked.
//   - retryPolicy for routeguide.IdempotentMethods, which change nothing and
//     can safely run twice: an UNAVAILABLE answer (the node went away between
//     the pick and the call, or refused the connection) or an INTERNAL one (a
//     node failing, which ejection takes out of the picks meanwhile) is
//     retried on another node, up to 4 attempts in all, a few milliseconds
//     apart. A stream is
//     retried only until its first response arrives, so a client never sees
//     a feature twice. RecordRoute and RouteChat change state and are never
//     retried.
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
      "retryableStatusCodes": ["UNAVAILABLE", "INTERNAL"]
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

// parseSeconds reads a service config's duration: seconds, with an "s".
func parseSeconds(s string) (time.Duration, error) {
	n, ok := strings.CutSuffix(s, "s")
	f, err := strconv.ParseFloat(n, 64)
	if !ok || err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > maxConfigSeconds || f < -maxConfigSeconds {
		return 0, fmt.Errorf("%q is not a duration in seconds such as \"1.5s\" (at most %d)", s, maxConfigSeconds)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// maxConfigSeconds bounds a duration in the policy's config: a day.
const maxConfigSeconds = 86400

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
// only busy. Until keepalive gives the connection up, the policy still
// probes it now and then, and the attempt timeout (DefaultAttemptTimeout)
// moves each idempotent call picked for it to another node.
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
// replaces it with the caller's options.
const policyConfigPlaceholder = "{}"

// Option changes what DialOptions returns; it is not a grpc.DialOption.
type Option func(*options)

type options struct {
	attemptTimeout time.Duration
	policy         policyJSON
}

// WithMetrics makes the policy report to m what it sees of each endpoint.
func WithMetrics(m *Metrics) Option {
	return func(o *options) { o.policy.Metrics = m.id }
}

// WithOutlierDetection replaces DefaultOutlierDetection; a nil
// FailurePercentageEjection turns ejection off.
func WithOutlierDetection(od OutlierDetection) Option {
	return func(o *options) { o.policy.OutlierDetection = &od }
}

// WithLatencyDecay replaces DefaultLatencyDecay.
func WithLatencyDecay(d time.Duration) Option {
	return func(o *options) { o.policy.LatencyDecay = seconds(d) }
}

// policyJSON is the policy's config in a service config (the package doc
// lists it).
type policyJSON struct {
	LatencyDecay     string            `json:"latencyDecay,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	Metrics          string            `json:"metrics,omitempty"`
}

// policyConfig is policyJSON parsed, with the defaults filled in.
type policyConfig struct {
	decay   time.Duration
	od      *OutlierDetection // nil: no ejection
	metrics *Metrics          // nil: none
}

func defaultPolicyConfig() policyConfig {
	od := DefaultOutlierDetection.withDefaults()
	return policyConfig{decay: DefaultLatencyDecay, od: &od}
}

// lbConfig is the policy's config as gRPC hands it to each connection's
// balancer, which is how a connection finds the Metrics its dialer chose:
// by id, since a config is JSON.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig
	parsed policyConfig
}

func (builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg, err := parsePolicyConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	return &lbConfig{parsed: cfg}, nil
}

func parsePolicyConfig(raw json.RawMessage) (policyConfig, error) {
	var j policyJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return policyConfig{}, err
	}
	cfg := defaultPolicyConfig()
	if j.LatencyDecay != "" {
		d, err := parseSeconds(j.LatencyDecay)
		if err != nil {
			return policyConfig{}, fmt.Errorf("latencyDecay: %w", err)
		}
		if d <= 0 {
			return policyConfig{}, fmt.Errorf("latencyDecay %s is not positive", j.LatencyDecay)
		}
		cfg.decay = d
	}
	if j.OutlierDetection != nil {
		od := j.OutlierDetection.withDefaults()
		if err := od.validate(); err != nil {
			return policyConfig{}, err
		}
		cfg.od = &od
		if od.FailurePercentageEjection == nil {
			cfg.od = nil
		}
	}
	m, err := metricsByIDString(j.Metrics)
	if err != nil {
		return policyConfig{}, err
	}
	cfg.metrics = m
	return cfg, nil
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
	if o.policy != (policyJSON{}) {
		cfg, err := json.Marshal(o.policy)
		if err != nil {
			panic(fmt.Sprintf("marshal the policy's config: %v", err)) // plain values marshal
		}
		serviceConfig = strings.Replace(serviceConfig, `"`+Name+`": `+policyConfigPlaceholder, `"`+Name+`": `+string(cfg), 1)
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
