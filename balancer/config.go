package balancer

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking that healthCheckConfig turns on
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/serviceconfig"

	"github.com/routeguide-cluster/routeguide/internal/callpolicy"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// ServiceConfig is the service config of a RouteGuide client, which
// DialOptions builds from its options (serviceConfigOf): our policy (Name),
// which picks by load and ejects failing nodes, over the nodes whose health
// is SERVING, and retries of the idempotent methods on UNAVAILABLE and
// INTERNAL (a stream only until its first response). See docs/DESIGN.md,
// "The service config and keepalive".
var ServiceConfig = serviceConfigOf(defaultOptions())

// The retry policy of the idempotent methods, in ServiceConfig and in what
// a node serves over xDS.
const (
	RetryMaxAttempts    = 4
	RetryInitialBackoff = 10 * time.Millisecond
	RetryMaxBackoff     = 100 * time.Millisecond
)

// RetryableCodes are the codes on which an idempotent call is made again on
// another node: UNAVAILABLE (the node went away, or refused the
// connection) and INTERNAL (the node failed the call; outlier ejection takes
// a node that keeps failing out of the picks meanwhile). An idempotent call
// changes nothing, so running it twice is safe whatever the first attempt
// did; docs/DESIGN.md, "Slow and failing nodes".
var RetryableCodes = []string{"UNAVAILABLE", "INTERNAL"}

// The service config as data, in the JSON names of gRPC's service config.
type (
	serviceConfig struct {
		LoadBalancingConfig []map[string]policyJSON `json:"loadBalancingConfig"`
		HealthCheckConfig   healthCheckConfig       `json:"healthCheckConfig"`
		MethodConfig        []methodConfig          `json:"methodConfig,omitempty"`
	}
	// policyJSON is the policy's config (the package doc lists it).
	policyJSON struct {
		LatencyDecay     string                `json:"latencyDecay,omitempty"`
		OutlierDetection *outlierDetectionJSON `json:"outlierDetection,omitempty"`
		Metrics          string                `json:"metrics,omitempty"`
	}
	healthCheckConfig struct {
		ServiceName string `json:"serviceName"`
	}
	methodConfig struct {
		Name        []methodName `json:"name"`
		RetryPolicy retryPolicy  `json:"retryPolicy"`
	}
	methodName struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	retryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
)

// serviceConfigOf is the service config of valid options o.
func serviceConfigOf(o options) string {
	sc := serviceConfig{
		LoadBalancingConfig: []map[string]policyJSON{{Name: {}}},
		HealthCheckConfig:   healthCheckConfig{ServiceName: o.healthService},
	}
	policy := sc.LoadBalancingConfig[0][Name]
	if o.outlierDetection != nil {
		policy.OutlierDetection = outlierDetectionToJSON(*o.outlierDetection)
	}
	if o.metrics != nil {
		policy.Metrics = o.metrics.id
	}
	if o.latencyDecay != 0 {
		policy.LatencyDecay = seconds(o.latencyDecay)
	}
	sc.LoadBalancingConfig[0][Name] = policy
	if len(o.idempotentMethods) > 0 {
		mc := methodConfig{RetryPolicy: retryPolicy{
			MaxAttempts:          RetryMaxAttempts,
			InitialBackoff:       seconds(RetryInitialBackoff),
			MaxBackoff:           seconds(RetryMaxBackoff),
			BackoffMultiplier:    2,
			RetryableStatusCodes: RetryableCodes,
		}}
		for _, full := range o.idempotentMethods {
			service, method, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
			mc.Name = append(mc.Name, methodName{Service: service, Method: method})
		}
		sc.MethodConfig = []methodConfig{mc}
	}
	out, err := json.Marshal(sc)
	if err != nil {
		panic(fmt.Sprintf("marshal a service config of plain structs: %v", err)) // cannot happen
	}
	return string(out)
}

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

// policyConfig is the policy's config parsed, with the defaults filled in.
type policyConfig struct {
	decay   time.Duration
	od      *OutlierDetection // nil: no ejection
	metrics *Metrics          // nil: none
}

func defaultPolicyConfig() policyConfig {
	od := DefaultOutlierDetection.WithDefaults()
	return policyConfig{decay: DefaultLatencyDecay, od: &od}
}

// lbConfig is the policy's config as gRPC hands it to each connection's
// balancer, which is how a connection finds the Metrics its dialer chose:
// by id, since a config is JSON.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	raw                               json.RawMessage
	parsed                            policyConfig
}

// MarshalJSON gives back the config as it came: gRPC's xDS policies marshal
// their children's parsed configs and parse them again.
func (c *lbConfig) MarshalJSON() ([]byte, error) { return c.raw, nil }

func (builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg, err := parsePolicyConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", Name, err)
	}
	return &lbConfig{raw: slices.Clone(raw), parsed: cfg}, nil
}

// parsePolicyConfig ignores the fields it does not know: an xDS server newer
// than its client may name the policy with more, and a config gRPC cannot
// parse fails the whole cluster.
func parsePolicyConfig(raw json.RawMessage) (policyConfig, error) {
	var j policyJSON
	if err := json.Unmarshal(raw, &j); err != nil {
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
		od, err := j.OutlierDetection.parse()
		if err != nil {
			return policyConfig{}, err
		}
		od = od.WithDefaults()
		if err := od.Validate(); err != nil {
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

// Option changes what DialOptions returns; it is not a grpc.DialOption.
type Option func(*options)

type options struct {
	metrics           *Metrics
	latencyDecay      time.Duration
	outlierDetection  *OutlierDetection
	attemptTimeout    time.Duration
	healthService     string
	idempotentMethods []string
}

// defaultOptions are those of a RouteGuide client.
func defaultOptions() options {
	return options{
		attemptTimeout:    DefaultAttemptTimeout,
		healthService:     contract.HealthService,
		idempotentMethods: contract.IdempotentMethods,
	}
}

// validate reports the first option that is not valid, by its name.
func (o options) validate() error {
	if o.latencyDecay < 0 || o.latencyDecay > maxConfigSeconds*time.Second {
		return fmt.Errorf("balancer.WithLatencyDecay: %v is not between 0 and %ds", o.latencyDecay, maxConfigSeconds)
	}
	if od := o.outlierDetection; od != nil {
		if err := od.WithDefaults().Validate(); err != nil {
			return fmt.Errorf("balancer.WithOutlierDetection: %w", err)
		}
	}
	seen := make(map[string]bool, len(o.idempotentMethods))
	for _, m := range o.idempotentMethods {
		if err := callpolicy.ValidateFullMethod(m); err != nil {
			return fmt.Errorf("balancer.WithIdempotentMethods: %w", err)
		}
		if seen[m] {
			return fmt.Errorf("balancer.WithIdempotentMethods: method %q named twice", m)
		}
		seen[m] = true
	}
	return nil
}

// WithMetrics makes the policy report to m what it sees of each endpoint.
func WithMetrics(m *Metrics) Option {
	return func(o *options) { o.metrics = m }
}

// WithOutlierDetection replaces DefaultOutlierDetection; a nil
// FailurePercentageEjection turns ejection off.
func WithOutlierDetection(od OutlierDetection) Option {
	return func(o *options) { o.outlierDetection = &od }
}

// WithLatencyDecay replaces DefaultLatencyDecay; zero keeps it.
func WithLatencyDecay(d time.Duration) Option {
	return func(o *options) { o.latencyDecay = d }
}

// WithHealthService names the service whose grpc.health.v1 status decides
// whether a node is picked; "" is the server as a whole. The default is
// RouteGuide's, contract.HealthService.
func WithHealthService(name string) Option {
	return func(o *options) { o.healthService = name }
}

// WithIdempotentMethods names the calls, as full method names
// (/package.Service/Method), that change nothing and so may run twice:
// they are retried on UNAVAILABLE and their attempts time out (unary calls
// and server streams; others are never retried). The default is
// RouteGuide's, contract.IdempotentMethods; none turns retries off.
func WithIdempotentMethods(fullMethods ...string) Option {
	return func(o *options) { o.idempotentMethods = slices.Clone(fullMethods) }
}

// DialOptions are the options a client of the cluster dials with, besides
// its transport credentials and resolver: the service config, keepalive,
// and a timeout on each attempt of an idempotent call, so that a node that
// went silent costs a call one attempt timeout rather than its whole
// deadline (attempt.go). It fails on an option that is not valid.
func DialOptions(opts ...Option) ([]grpc.DialOption, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return append([]grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfigOf(o)),
		grpc.WithKeepaliveParams(ClientKeepalive),
		grpc.WithMaxHeaderListSize(MaxHeaderListBytes),
		grpc.WithChainStreamInterceptor(markStream),
	}, attemptOptions(o.attemptTimeout, o.idempotentMethods)...), nil
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
