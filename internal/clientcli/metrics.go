package clientcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// clientMetrics are everything a client exports with --metrics-listen, in a
// registry of its own, so that nothing else in the process adds to them.
type clientMetrics struct {
	registry *prometheus.Registry
	grpc     *grpcprom.ClientMetrics
	resolver *discovery.ResolverMetrics
	balancer *balancer.Metrics
	calls    *callCounter
}

func newClientMetrics() (*clientMetrics, error) {
	reg := prometheus.NewRegistry()
	m := &clientMetrics{
		registry: reg,
		// go-grpc-middleware's standard gRPC client metrics, with the
		// handling-time histogram, in the node's buckets.
		grpc: grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		)),
		calls: newCallCounter(),
	}
	for _, c := range []prometheus.Collector{
		m.grpc, m.calls.counter,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	// Registered whatever the target, though only etcd:/// targets have a
	// resolver that reports to them.
	var err error
	if m.resolver, err = discovery.NewResolverMetrics(reg); err != nil {
		return nil, err
	}
	if m.balancer, err = balancer.NewMetrics(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// dialOptions make a connection report its calls and its resolver into m.
func (m *clientMetrics) dialOptions() []DialOption {
	return []DialOption{
		// Counted once per call, as users see them: a timed-out attempt
		// that balancer makes again on another node is no failed call.
		withCallInterceptors(m.grpc.UnaryClientInterceptor(), m.grpc.StreamClientInterceptor()),
		withCallInterceptors(m.calls.unary, m.calls.stream),
		WithResolverEvents(m.resolver),
		WithBalancerMetrics(m.balancer),
	}
}

// unknownNode is the node_id of calls that no node answered: the call never
// reached one, or the answer did not say.
const unknownNode = "unknown"

// callCounter counts finished calls by the node that answered them, as the
// routeguide-node response header names it, by method and by code. It is a
// pair of client interceptors.
type callCounter struct {
	counter *prometheus.CounterVec
}

func newCallCounter() *callCounter {
	return &callCounter{
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "routeguide_client_calls_total",
			Help: "Calls this client finished, by the node that answered (from the " + contract.NodeHeader + " response header; " + unknownNode + " when no node did), method and code.",
		}, []string{"node_id", "grpc_method", "grpc_code"}),
	}
}

// count counts one finished call of fullMethod (/package.Service/Method).
// WithLabelValues finds the series of a (node, method, code) seen before by
// hashing the values, without allocating.
func (c *callCounter) count(fullMethod, node string, code codes.Code) {
	if node == "" {
		node = unknownNode
	}
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	c.counter.WithLabelValues(node, method, code.String()).Inc()
}

// unaryCall is what the unary interceptor needs to read a call's header and
// trailer: the caller's options with two more that fill them in. It is
// pooled, so that counting a call adds no allocation of its own to the
// copies of the header and trailer that gRPC makes.
type unaryCall struct {
	header, trailer metadata.MD
	capture         [2]grpc.CallOption // fill in header and trailer
	opts            []grpc.CallOption
}

var unaryCalls = sync.Pool{New: func() any {
	c := new(unaryCall)
	c.capture = [2]grpc.CallOption{grpc.Header(&c.header), grpc.Trailer(&c.trailer)}
	return c
}}

func (c *callCounter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	call := unaryCalls.Get().(*unaryCall)
	call.opts = append(append(call.opts[:0], opts...), call.capture[:]...)
	err := invoker(ctx, method, req, reply, cc, call.opts...)
	c.count(method, load.NodeOf(call.header, call.trailer), status.Code(err))
	clear(call.opts) // keeps nothing of the caller's alive
	call.header, call.trailer = nil, nil
	unaryCalls.Put(call)
	return err
}

func (c *callCounter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		c.count(method, "", status.Code(err))
		return nil, err
	}
	return &countedStream{ClientStream: s, counter: c, method: method, serverStreams: desc.ServerStreams}, nil
}

// countedStream counts its call once, when RecvMsg says it is over: at the
// end of the stream or an error, or after the one response of a call whose
// server does not stream. A stream abandoned before then is not counted, as
// go-grpc-middleware does not count it as handled either.
type countedStream struct {
	grpc.ClientStream
	counter       *callCounter
	method        string
	serverStreams bool
	counted       bool // RecvMsg is never called concurrently with itself
}

func (s *countedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if s.counted || (err == nil && s.serverStreams) {
		return err
	}
	s.counted = true
	code := codes.OK
	if err != nil && !errors.Is(err, io.EOF) {
		code = status.Code(err)
	}
	// The stream is over, so neither blocks.
	header, _ := s.Header()
	s.counter.count(s.method, load.NodeOf(header, s.Trailer()), code)
	return err
}

// metricsServer serves a registry at /metrics until Close.
type metricsServer struct {
	listener net.Listener
	server   *http.Server
	served   chan struct{} // closed when Serve has returned
}

// serveMetrics listens on addr and serves reg there. It returns once the
// listener is up, so that a port in use is reported before anything else
// starts.
func serveMetrics(addr string, reg *prometheus.Registry) (*metricsServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s := &metricsServer{
		listener: l,
		server:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		served:   make(chan struct{}),
	}
	go func() {
		defer close(s.served)
		s.server.Serve(l) // returns ErrServerClosed after Close
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *metricsServer) Addr() net.Addr { return s.listener.Addr() }

// Close stops the server, letting a scrape in progress finish for up to a
// second, and returns once it has stopped.
func (s *metricsServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.server.Shutdown(ctx); err != nil {
		s.server.Close()
	}
	<-s.served
}
