// Package otlptest is an OTLP trace collector for tests: a real gRPC server
// of the OTLP trace service, on an ephemeral 127.0.0.1 port, that keeps
// every span it receives.
package otlptest

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is what a test asks of a received span. Ids are hex; ParentID is
// empty for a root span.
type Span struct {
	Service  string // the resource's service.name
	Instance string // the resource's service.instance.id
	Name     string
	Kind     tracepb.Span_SpanKind
	TraceID  string
	SpanID   string
	ParentID string
}

func (s Span) String() string {
	return fmt.Sprintf("%s %q (%s) trace %s span %s parent %q", s.Service, s.Name, s.Kind, s.TraceID, s.SpanID, s.ParentID)
}

// Collector receives spans over OTLP/gRPC until the test ends.
type Collector struct {
	collectorpb.UnimplementedTraceServiceServer
	addr string

	mu      sync.Mutex
	spans   []Span
	exports int
	fail    error // returned to every export while set
}

// Start serves a Collector on 127.0.0.1:0 until tb ends.
func Start(tb testing.TB) *Collector {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Collector{addr: l.Addr().String()}
	s := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(s, c)
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(l)
	}()
	tb.Cleanup(func() {
		s.Stop()
		<-served
	})
	return c
}

// Addr is the host:port to export to.
func (c *Collector) Addr() string { return c.addr }

// Spans returns the spans received so far, in the order they came.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Exports is the number of export requests received, failed ones included.
func (c *Collector) Exports() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exports
}

// FailWith makes every export fail with err (a gRPC status error), and
// keep nothing, until it is called with nil.
func (c *Collector) FailWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = err
}

// Export implements the OTLP trace service.
func (c *Collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exports++
	if c.fail != nil {
		return nil, c.fail
	}
	for _, rs := range req.GetResourceSpans() {
		var service, instance string
		for _, kv := range rs.GetResource().GetAttributes() {
			switch kv.GetKey() {
			case "service.name":
				service = kv.GetValue().GetStringValue()
			case "service.instance.id":
				instance = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, Span{
					Service:  service,
					Instance: instance,
					Name:     s.GetName(),
					Kind:     s.GetKind(),
					TraceID:  hex.EncodeToString(s.GetTraceId()),
					SpanID:   hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()),
				})
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Find returns the spans of service named name.
func Find(spans []Span, service, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Service == service && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}
