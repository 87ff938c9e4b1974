// Package tracing exports OpenTelemetry traces of a process's gRPC calls over
// OTLP/gRPC: it owns the tracer provider and the stats handlers that put a
// span on each call and carry W3C trace context on the wire.
package tracing

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"

	"github.com/routeguide-cluster/routeguide/discovery"
)

// EndpointFlag is the flag, on node and client alike, that sets Config.Endpoint.
const EndpointFlag = "otlp-endpoint"

// RegisterEndpoint adds --otlp-endpoint, which sets *endpoint, to fs.
func RegisterEndpoint(fs *flag.FlagSet, endpoint *string) {
	fs.StringVar(endpoint, EndpointFlag, *endpoint, "export a trace of every RPC over OTLP/gRPC to the collector at `host:port` (Jaeger: 4317); empty is off")
}

// CheckEndpoint reports, naming the flag, what is wrong with an endpoint;
// empty, tracing off, is fine.
func CheckEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	if err := discovery.CheckAddr(endpoint, discovery.DialAddr); err != nil {
		return fmt.Errorf("--%s: %w", EndpointFlag, err)
	}
	return nil
}

// Config says where a process exports its traces, and as what.
type Config struct {
	// Endpoint is the host:port of an OTLP/gRPC collector. Empty turns
	// tracing off.
	Endpoint string
	// ServiceName is the service.name of every span: routeguide-node or
	// routeguide-client.
	ServiceName string
	// InstanceID, when set, is the service.instance.id: a node's id.
	InstanceID string
	// Version, when set, is the service.version.
	Version string
	// TLS, when set, secures the connection to the collector; nil is
	// plaintext.
	TLS *tls.Config
	// Logger hears when exports fail and when they work again; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Provider traces the calls of the gRPC servers and clients that take its
// options, and exports the spans in batches. A nil *Provider is tracing
// off: its options are empty, so that no stats handler costs anything.
type Provider struct {
	tp             *sdktrace.TracerProvider
	server, client stats.Handler
}

// Start returns the Provider for cfg, or nil when cfg.Endpoint is empty.
// It does not wait for the collector: spans go out in the background, and
// a collector out of reach costs the spans, never a call.
func Start(cfg Config) (*Provider, error) {
	if cfg.Endpoint == "" {
		return nil, nil
	}
	if err := CheckEndpoint(cfg.Endpoint); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	security := otlptracegrpc.WithInsecure()
	if cfg.TLS != nil {
		security = otlptracegrpc.WithTLSCredentials(credentials.NewTLS(cfg.TLS))
	}
	// New only makes a lazy gRPC client: the context waits for nothing.
	exporter, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(cfg.Endpoint), security)
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter for %s: %w", cfg.Endpoint, err)
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName)}
	if cfg.InstanceID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(cfg.InstanceID))
	}
	if cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.Version))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(&loggingExporter{SpanExporter: exporter, logger: logger, endpoint: cfg.Endpoint}),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, attrs...)),
	)
	// The handlers take the provider and the propagator as options, so no
	// global of otel's is set: two nodes in one process (node -dev, tests)
	// trace apart. gRPC health is left out: probes every few seconds and
	// the clients' long health watches would bury the calls in traces.
	handlerOpts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(propagation.TraceContext{}),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()), // Prometheus has the metrics
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	}
	return &Provider{
		tp:     tp,
		server: otelgrpc.NewServerHandler(handlerOpts...),
		client: otelgrpc.NewClientHandler(handlerOpts...),
	}, nil
}

// ServerOptions trace every call a gRPC server serves, as a child of the
// caller's span when the call carries one.
func (p *Provider) ServerOptions() []grpc.ServerOption {
	if p == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(p.server)}
}

// DialOptions trace every call a gRPC client makes, as a child of the span
// in the call's context, and send the trace context along.
func (p *Provider) DialOptions() []grpc.DialOption {
	if p == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(p.client)}
}

// Tracer makes spans of the caller's own, around calls; with tracing off,
// spans that record nothing.
func (p *Provider) Tracer(name string) trace.Tracer {
	if p == nil {
		return tracenoop.NewTracerProvider().Tracer(name)
	}
	return p.tp.Tracer(name)
}

// Shutdown exports the spans still waiting, within ctx, and stops.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}
