package tracing

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/otlptest"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

var getFeature = strings.TrimPrefix(pb.RouteGuide_GetFeature_FullMethodName, "/")

func TestWithoutAnEndpointTracingIsOffAndInstallsNothing(t *testing.T) {
	p, err := Start(Config{ServiceName: "off"})
	if err != nil || p != nil {
		t.Fatalf("Start without an endpoint = %v, %v; want nil, nil", p, err)
	}
	if opts := p.ServerOptions(); len(opts) != 0 {
		t.Errorf("tracing off: %d server options, want none (no stats handler)", len(opts))
	}
	if opts := p.DialOptions(); len(opts) != 0 {
		t.Errorf("tracing off: %d dial options, want none (no stats handler)", len(opts))
	}
	_, span := p.Tracer("test").Start(context.Background(), "nothing")
	if span.IsRecording() {
		t.Error("tracing off: a span records")
	}
	span.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown with tracing off: %v", err)
	}
}

func TestEndpointMustBeAHostAndPort(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		ok       bool
	}{
		{"", true},
		{"jaeger:4317", true},
		{"127.0.0.1:4317", true},
		{"jaeger", false},
		{":4317", false},
		{"http://jaeger:4317", false},
		{"jaeger:0", false},
	} {
		err := CheckEndpoint(tc.endpoint)
		if (err == nil) != tc.ok {
			t.Errorf("CheckEndpoint(%q) = %v, want ok %t", tc.endpoint, err, tc.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "--otlp-endpoint: ") {
			t.Errorf("CheckEndpoint(%q) = %q, which does not name the flag", tc.endpoint, err)
		}
	}
}

// serve runs a RouteGuide server and gRPC health with opts on an ephemeral
// port until the test ends, and returns a connection to it with dialOpts.
func serve(t *testing.T, opts []grpc.ServerOption, dialOpts []grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	s := grpc.NewServer(opts...)
	pb.RegisterRouteGuideServer(s, routeguide.NewServer(routeguide.Config{Features: features.Default(), Notes: notes.NewMemory(notes.DefaultLimits())}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	return grpctest.Dial(t, grpctest.Serve(t, s), dialOpts...)
}

func start(t *testing.T, cfg Config) *Provider {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p
}

func shutdown(t *testing.T, providers ...*Provider) {
	t.Helper()
	for _, p := range providers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		cancel()
	}
}

func TestTheServersSpanIsAChildOfTheCallersAcrossTheWire(t *testing.T) {
	collector := otlptest.Start(t)
	client := start(t, Config{Endpoint: collector.Addr(), ServiceName: "caller"})
	server := start(t, Config{Endpoint: collector.Addr(), ServiceName: "callee", InstanceID: "n1", Version: "v9"})
	conn := serve(t, server.ServerOptions(), client.DialOptions())

	ctx, root := client.Tracer("test").Start(t.Context(), "tour")
	if _, err := pb.NewRouteGuideClient(conn).GetFeature(ctx, &pb.Point{Latitude: 409146138, Longitude: -746188906}); err != nil {
		t.Fatal(err)
	}
	root.End()
	shutdown(t, client, server)

	spans := collector.Spans()
	roots, calls, served := otlptest.Find(spans, "caller", "tour"), otlptest.Find(spans, "caller", getFeature), otlptest.Find(spans, "callee", getFeature)
	if len(roots) != 1 || len(calls) != 1 || len(served) != 1 {
		t.Fatalf("got spans %v; want one tour, one client and one server %s", spans, getFeature)
	}
	call, srv := calls[0], served[0]
	if call.Kind != tracepb.Span_SPAN_KIND_CLIENT || srv.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("kinds: caller's %s, callee's %s; want client and server", call.Kind, srv.Kind)
	}
	if call.TraceID != roots[0].TraceID || srv.TraceID != call.TraceID {
		t.Errorf("trace ids: tour %s, client %s, server %s; want one trace", roots[0].TraceID, call.TraceID, srv.TraceID)
	}
	if call.ParentID != roots[0].SpanID || srv.ParentID != call.SpanID {
		t.Errorf("the server span's parent is %s and the client span's %s; want the client span %s and the tour %s",
			srv.ParentID, call.ParentID, call.SpanID, roots[0].SpanID)
	}
	if srv.Instance != "n1" {
		t.Errorf("server span's service.instance.id = %q, want n1", srv.Instance)
	}
}

func TestHealthChecksAreNotTraced(t *testing.T) {
	collector := otlptest.Start(t)
	client := start(t, Config{Endpoint: collector.Addr(), ServiceName: "caller"})
	server := start(t, Config{Endpoint: collector.Addr(), ServiceName: "callee"})
	conn := serve(t, server.ServerOptions(), client.DialOptions())

	if _, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewRouteGuideClient(conn).GetFeature(t.Context(), &pb.Point{}); err != nil {
		t.Fatal(err)
	}
	shutdown(t, client, server)
	// The GetFeature's two spans show that the export worked.
	if spans := collector.Spans(); len(spans) != 2 || len(otlptest.Find(spans, "callee", getFeature)) != 1 {
		t.Errorf("got spans %v; want only the client and server spans of %s", spans, getFeature)
	}
}

func TestFailedExportsAreLoggedOnceAndTheRecoveryOnce(t *testing.T) {
	collector := otlptest.Start(t)
	var logs bytes.Buffer
	p := start(t, Config{Endpoint: collector.Addr(), ServiceName: "s", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	export := func() {
		t.Helper()
		_, span := p.Tracer("test").Start(t.Context(), "work")
		span.End()
		if err := p.tp.ForceFlush(t.Context()); err != nil {
			t.Fatalf("ForceFlush: %v", err)
		}
	}
	// InvalidArgument, as the exporter does not retry it.
	collector.FailWith(status.Error(codes.InvalidArgument, "refused by the test"))
	export()
	export()
	export()
	collector.FailWith(nil)
	export()
	export()

	if got := collector.Exports(); got != 5 {
		t.Errorf("the collector saw %d exports, want 5", got)
	}
	if got := strings.Count(logs.String(), "cannot export traces"); got != 1 {
		t.Errorf("%d warnings for 3 failed exports in a row, want 1:\n%s", got, logs.String())
	}
	if got := strings.Count(logs.String(), "exporting traces again"); got != 1 {
		t.Errorf("%d notices of recovery, want 1:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "refused by the test") {
		t.Errorf("the warning does not say why:\n%s", logs.String())
	}
}
