package balancer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // registers the client-side health checking that healthCheckConfig turns on
	"google.golang.org/grpc/keepalive"

	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// ServiceConfig is the service config of a RouteGuide client, which
// DialOptions builds from its options (serviceConfigOf): our round robin over
// the nodes whose health is SERVING, and retries of the idempotent methods on
// UNAVAILABLE (a stream only until its first response). See docs/DESIGN.md,
// "The service config and keepalive".
var ServiceConfig = serviceConfigOf(defaultOptions())

// The retry policy of the idempotent methods, in ServiceConfig and in what
// a node serves over xDS.
const (
	RetryMaxAttempts    = 4
	RetryInitialBackoff = 10 * time.Millisecond
	RetryMaxBackoff     = 100 * time.Millisecond
)

// The service config as data, in the JSON names of gRPC's service config.
type (
	serviceConfig struct {
		LoadBalancingConfig []map[string]policyConfig `json:"loadBalancingConfig"`
		HealthCheckConfig   healthCheckConfig         `json:"healthCheckConfig"`
		MethodConfig        []methodConfig            `json:"methodConfig,omitempty"`
	}
	policyConfig struct {
		Metrics string `json:"metrics,omitempty"`
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
		LoadBalancingConfig: []map[string]policyConfig{{Name: {}}},
		HealthCheckConfig:   healthCheckConfig{ServiceName: o.healthService},
	}
	if o.metrics != nil {
		sc.LoadBalancingConfig[0][Name] = policyConfig{Metrics: o.metrics.id}
	}
	if len(o.idempotentMethods) > 0 {
		mc := methodConfig{RetryPolicy: retryPolicy{
			MaxAttempts:          RetryMaxAttempts,
			InitialBackoff:       seconds(RetryInitialBackoff),
			MaxBackoff:           seconds(RetryMaxBackoff),
			BackoffMultiplier:    2,
			RetryableStatusCodes: []string{"UNAVAILABLE"},
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

// ValidateFullMethod reports whether name is a full gRPC method name,
// /package.Service/Method, as retry policies name methods.
func ValidateFullMethod(name string) error {
	service, method, _ := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	if !strings.HasPrefix(name, "/") || service == "" || method == "" || strings.Contains(method, "/") {
		return fmt.Errorf("method %q: not /package.Service/Method", name)
	}
	return nil
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
	seen := make(map[string]bool, len(o.idempotentMethods))
	for _, m := range o.idempotentMethods {
		if err := ValidateFullMethod(m); err != nil {
			return fmt.Errorf("balancer.WithIdempotentMethods: %w", err)
		}
		if seen[m] {
			return fmt.Errorf("balancer.WithIdempotentMethods: method %q named twice", m)
		}
		seen[m] = true
	}
	return nil
}

// WithMetrics makes the policy report its picks and ready endpoints to m.
func WithMetrics(m *Metrics) Option {
	return func(o *options) { o.metrics = m }
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
