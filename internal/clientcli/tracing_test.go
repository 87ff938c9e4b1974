package clientcli

import (
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/otlptest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// tracedNode is a standalone node that exports its spans to collector
// every 10ms.
func tracedNode(t *testing.T, collector *otlptest.Collector) string {
	t.Helper()
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // milliseconds; the SDK's batcher reads it
	return nodetest.Start(t, "n1", func(cfg *node.Config) { cfg.OTLPEndpoint = collector.Addr() }).Addr().String()
}

// served returns, once the node has exported them, its spans in trace.
func served(t *testing.T, collector *otlptest.Collector, trace string, want int) []otlptest.Span {
	t.Helper()
	var spans []otlptest.Span
	poll.Until(t, 10*time.Second, "the node's spans", func() bool {
		spans = spans[:0]
		for _, s := range collector.Spans() {
			if s.Service == node.TracingService && s.TraceID == trace {
				spans = append(spans, s)
			}
		}
		return len(spans) >= want
	})
	return spans
}

func TestATourIsOneTraceWithTheNodesSpansUnderTheClients(t *testing.T) {
	collector := otlptest.Start(t)
	addr := tracedNode(t, collector)
	out := run(t, invocation{args: args(addr, "--otlp-endpoint", collector.Addr(), "tour")})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}

	// The client has exported everything before it exits.
	var root otlptest.Span
	calls := map[string]otlptest.Span{} // by span id
	for _, s := range collector.Spans() {
		switch {
		case s.Service != TracingService:
		case s.Name == "client tour":
			root = s
		default:
			calls[s.SpanID] = s
		}
	}
	if root.SpanID == "" || root.ParentID != "" {
		t.Fatalf("no root span \"client tour\" among %v", collector.Spans())
	}
	for _, call := range calls {
		if call.TraceID != root.TraceID || call.ParentID != root.SpanID {
			t.Errorf("client span %v is not a child of the tour's %v", call, root)
		}
	}
	methods := []string{pb.RouteGuide_GetFeature_FullMethodName, pb.RouteGuide_ListFeatures_FullMethodName,
		pb.RouteGuide_RecordRoute_FullMethodName, pb.RouteGuide_RouteChat_FullMethodName}
	spans := served(t, collector, root.TraceID, len(calls))
	var seen []string
	for _, s := range spans {
		if parent, ok := calls[s.ParentID]; !ok || parent.Name != s.Name {
			t.Errorf("the node's span %v has no client span of the same call for parent", s)
		}
		seen = append(seen, "/"+s.Name)
	}
	for _, m := range methods {
		if !slices.Contains(seen, m) {
			t.Errorf("no span of the node for %s in the tour's trace; it has %v", m, seen)
		}
	}
}

func TestEachCallOfALoadIsATraceOfItsOwn(t *testing.T) {
	collector := otlptest.Start(t)
	addr := tracedNode(t, collector)
	out := run(t, invocation{args: args(addr, "--otlp-endpoint", collector.Addr(), "load", "--requests", "5", "--concurrency", "1")})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}
	traces := map[string]bool{}
	for _, s := range collector.Spans() {
		if s.Service == TracingService {
			if s.ParentID != "" || !strings.HasPrefix(s.Name, "routeguide.RouteGuide/") {
				t.Errorf("a load's span %v is not a root span of a call", s)
			}
			traces[s.TraceID] = true
		}
	}
	if len(traces) != 5 {
		t.Errorf("5 calls made %d traces, want 5", len(traces))
	}
}

func TestWithoutAnEndpointTheClientSendsNoTraceContext(t *testing.T) {
	collector := otlptest.Start(t)
	addr := tracedNode(t, collector)
	named := firstFeature(t, true)
	out := run(t, invocation{args: args(addr, append([]string{"get"}, degrees(named.Location)...)...)})
	if out.code != ExitOK {
		t.Fatalf("exit %d, stderr %q", out.code, out.stderr)
	}
	var spans []otlptest.Span
	poll.Until(t, 10*time.Second, "the node's span of the call", func() bool {
		spans = collector.Spans()
		return len(spans) > 0
	})
	// The node's span is the root of its trace: no traceparent came with the call.
	if len(spans) != 1 || spans[0].Service != node.TracingService || spans[0].ParentID != "" {
		t.Errorf("spans %v; want only the node's, a root span", spans)
	}
}
