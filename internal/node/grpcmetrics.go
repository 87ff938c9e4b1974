package node

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// grpcMetrics are the gRPC server metrics of go-grpc-middleware's Prometheus
// provider, with the same names, labels, help texts and buckets, so that
// dashboards and rules read them unchanged. The provider looks up five
// labelled series on every call; these are resolved once per method, when
// initialize learns the server's methods, so that a call only adds to them.
// TestGRPCMetricsExposeWhatTheLibraryProviderDoes compares the two.
type grpcMetrics struct {
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
	handling *prometheus.HistogramVec
	// methods holds the series of each method the server had when
	// initialize ran, by full method name.
	methods atomic.Pointer[map[string]*methodSeries]
}

// The grpc_type label of each kind of call, as the provider names them.
const (
	unaryCall        = "unary"
	clientStreamCall = "client_stream"
	serverStreamCall = "server_stream"
	bidiStreamCall   = "bidi_stream"
)

// allCodes is how many codes the provider creates grpc_server_handled_total
// series for when it initialises a method: codes.OK to codes.Unauthenticated.
const allCodes = int(codes.Unauthenticated) + 1

func newGRPCMetrics(buckets []float64) *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	return &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server.",
		}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, append(labels[:len(labels):len(labels)], "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total",
			Help: "Total number of RPC stream messages received on the server.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total",
			Help: "Total number of gRPC stream messages sent by the server.",
		}, labels),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: buckets,
		}, labels),
	}
}

func (m *grpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.received.Describe(ch)
	m.sent.Describe(ch)
	m.handling.Describe(ch)
}

func (m *grpcMetrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.received.Collect(ch)
	m.sent.Collect(ch)
	m.handling.Collect(ch)
}

// methodSeries are one method's series, for calls of its kind.
type methodSeries struct {
	typ, service, method    string
	started, received, sent prometheus.Counter
	handled                 [allCodes]prometheus.Counter
	handling                prometheus.Observer
}

// initialize creates every series of every method server has, at zero, as
// the provider's InitializeMetrics does, and keeps them for its calls.
func (m *grpcMetrics) initialize(server *grpc.Server) {
	methods := make(map[string]*methodSeries)
	for service, info := range server.GetServiceInfo() {
		for _, method := range info.Methods {
			typ := unaryCall
			switch {
			case method.IsClientStream && method.IsServerStream:
				typ = bidiStreamCall
			case method.IsClientStream:
				typ = clientStreamCall
			case method.IsServerStream:
				typ = serverStreamCall
			}
			s := &methodSeries{
				typ:      typ,
				service:  service,
				method:   method.Name,
				started:  m.started.WithLabelValues(typ, service, method.Name),
				received: m.received.WithLabelValues(typ, service, method.Name),
				sent:     m.sent.WithLabelValues(typ, service, method.Name),
				handling: m.handling.WithLabelValues(typ, service, method.Name),
			}
			for code := range s.handled {
				s.handled[code] = m.handled.WithLabelValues(typ, service, method.Name, codes.Code(code).String())
			}
			methods["/"+service+"/"+method.Name] = s
		}
	}
	m.methods.Store(&methods)
}

// callSeries is what one call adds to: its method's series when initialize
// saw the method (known), and otherwise the vectors, with the call's labels
// looked up when used, as the provider does. The zero callSeries, from a nil
// *grpcMetrics, counts nothing (metrics off).
type callSeries struct {
	known                *methodSeries
	m                    *grpcMetrics
	typ, service, method string
}

// streamCallType is the grpc_type of a call the stream interceptor sees.
func streamCallType(info *grpc.StreamServerInfo) string {
	switch {
	case info.IsClientStream && !info.IsServerStream:
		return clientStreamCall
	case !info.IsClientStream && info.IsServerStream:
		return serverStreamCall
	}
	return bidiStreamCall
}

// start counts a call of fullMethod of kind typ as started.
func (m *grpcMetrics) start(fullMethod, typ string) callSeries {
	if m == nil {
		return callSeries{}
	}
	if methods := m.methods.Load(); methods != nil {
		if s := (*methods)[fullMethod]; s != nil && s.typ == typ {
			s.started.Inc()
			return callSeries{known: s, m: m, typ: typ, service: s.service, method: s.method}
		}
	}
	c := callSeries{m: m, typ: typ, service: "unknown", method: "unknown"}
	name := strings.TrimPrefix(fullMethod, "/")
	if i := strings.Index(name, "/"); i >= 0 {
		c.service, c.method = name[:i], name[i+1:]
	}
	m.started.WithLabelValues(c.typ, c.service, c.method).Inc()
	return c
}

func (c callSeries) messageReceived() {
	switch {
	case c.known != nil:
		c.known.received.Inc()
	case c.m != nil:
		c.m.received.WithLabelValues(c.typ, c.service, c.method).Inc()
	}
}

func (c callSeries) messageSent() {
	switch {
	case c.known != nil:
		c.known.sent.Inc()
	case c.m != nil:
		c.m.sent.WithLabelValues(c.typ, c.service, c.method).Inc()
	}
}

// handled counts the call, started at start, as ended with code (callCode
// reads an error as the provider does).
func (c callSeries) handled(code codes.Code, start time.Time) {
	if c.m == nil {
		return
	}
	seconds := time.Since(start).Seconds()
	if c.known == nil {
		c.m.handled.WithLabelValues(c.typ, c.service, c.method, code.String()).Inc()
		c.m.handling.WithLabelValues(c.typ, c.service, c.method).Observe(seconds)
		return
	}
	if int(code) < allCodes {
		c.known.handled[code].Inc()
	} else {
		c.m.handled.WithLabelValues(c.typ, c.service, c.method, code.String()).Inc()
	}
	c.known.handling.Observe(seconds)
}
