package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/otlptest"
	"github.com/routeguide-cluster/routeguide/internal/tracing"
)

// tracedCaller is a tracing provider for the client side of a test, with
// service name caller, exporting to collector.
func tracedCaller(t *testing.T, collector *otlptest.Collector) *tracing.Provider {
	t.Helper()
	p, err := tracing.Start(tracing.Config{Endpoint: collector.Addr(), ServiceName: "caller", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	return p
}

// flush exports the spans the caller still holds.
func flush(t *testing.T, p *tracing.Provider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestARouteChatsEtcdCallsAreChildrenOfItsServerSpan(t *testing.T) {
	etcd := etcdtest.Start(t)
	collector := otlptest.Start(t)
	caller := tracedCaller(t, collector)
	cfg := DefaultConfig()
	cfg.NodeID = testNodeID
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.DrainDelay = 0
	cfg.Etcd = []string{etcd.ClientURL()}
	cfg.OTLPEndpoint = collector.Addr()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("Run returned before the node was ready: %v", err)
	}
	conn := dial(t, n.Addr().String(), caller.DialOptions()...)
	defer conn.Close()

	if err := chat(grpctest.CallContext(t), pb.NewRouteGuideClient(conn), 1); err != nil {
		t.Fatal(err)
	}
	flush(t, caller)
	stop()
	if err := <-done; err != nil { // the node exports its last spans as it stops
		t.Fatal(err)
	}

	routeChat := strings.TrimPrefix(pb.RouteGuide_RouteChat_FullMethodName, "/")
	spans := collector.Spans()
	calls, served := otlptest.Find(spans, "caller", routeChat), otlptest.Find(spans, TracingService, routeChat)
	if len(calls) != 1 || len(served) != 1 {
		t.Fatalf("spans %v; want one RouteChat of the caller and one of the node", spans)
	}
	call, srv := calls[0], served[0]
	if srv.TraceID != call.TraceID || srv.ParentID != call.SpanID {
		t.Errorf("the node's RouteChat span %v is not a child of the caller's %v", srv, call)
	}
	if srv.Instance != testNodeID {
		t.Errorf("the node's spans carry service.instance.id %q, want the node id %q", srv.Instance, testNodeID)
	}
	var txns []otlptest.Span
	for _, s := range otlptest.Find(spans, TracingService, strings.TrimPrefix(etcdserverpb.KV_Txn_FullMethodName, "/")) {
		if s.TraceID == srv.TraceID {
			txns = append(txns, s)
		}
	}
	if len(txns) == 0 {
		t.Fatalf("no etcd Txn span in the RouteChat's trace %s; spans: %v", srv.TraceID, spans)
	}
	for _, txn := range txns {
		if txn.ParentID != srv.SpanID || txn.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("etcd Txn span %v is not a client span child of the RouteChat server span %s", txn, srv.SpanID)
		}
	}
	// The registry's client is not traced: no lease keepalive, no grant.
	for _, s := range spans {
		if strings.Contains(s.Name, "Lease") && s.TraceID != srv.TraceID {
			t.Errorf("a span of the registry's etcd client was exported: %v", s)
		}
	}
}

func TestANodeWithoutAnEndpointTracesNothing(t *testing.T) {
	collector := otlptest.Start(t)
	caller := tracedCaller(t, collector)
	tn := startNode(t, nil, nil)
	if tn.tracing != nil {
		t.Fatal("a node without --otlp-endpoint has a tracer")
	}
	conn := dial(t, tn.Addr().String(), caller.DialOptions()...)
	defer conn.Close()
	if _, err := pb.NewRouteGuideClient(conn).GetFeature(grpctest.CallContext(t), &pb.Point{}); err != nil {
		t.Fatal(err)
	}
	flush(t, caller)
	if err := tn.stop(t); err != nil {
		t.Fatal(err)
	}
	// The caller's span shows that the export works.
	spans := collector.Spans()
	if len(spans) != 1 || spans[0].Service != "caller" {
		t.Errorf("spans %v; want only the caller's", spans)
	}
}
