package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
)

// newLibraryGRPCMetrics is go-grpc-middleware's provider as the node
// configured it before it counted its calls itself.
func newLibraryGRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(grpcHandlingBuckets),
	))
}

// kindsService has a method of every kind. Its calls end as their requests
// say (see endAs).
var kindsService = grpc.ServiceDesc{
	ServiceName: "routeguide.test.Kinds",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: endingAs(endAs)}},
	Streams: []grpc.StreamDesc{
		{StreamName: "ClientStream", Handler: kindsClientStream, ClientStreams: true},
		{StreamName: "ServerStream", Handler: kindsServerStream, ServerStreams: true},
		{StreamName: "Bidi", Handler: echoUntil(endAs), ClientStreams: true, ServerStreams: true},
	},
}

// lateService is registered after the metrics are initialised, so that its
// calls are counted as those of a method the node did not know of.
var lateService = grpc.ServiceDesc{
	ServiceName: "routeguide.test.Late",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: endingAs(endAs)}},
	Streams:     []grpc.StreamDesc{{StreamName: "Bidi", Handler: echoUntil(endAs), ClientStreams: true, ServerStreams: true}},
}

// endAs is how a call asked to end with what ends: "ok", "code=N" (a status
// of code N, standard or not), a bare context error, a wrapped status, a
// plain error, or a panic.
func endAs(what string) error {
	switch what {
	case "ok":
		return nil
	case "canceled":
		return context.Canceled
	case "deadline":
		return context.DeadlineExceeded
	case "wrapped":
		return fmt.Errorf("wrapped: %w", status.Error(codes.NotFound, "asked"))
	case "plain":
		return errors.New("asked for a plain error")
	case "panic":
		panic("asked to panic")
	}
	if n, ok := strings.CutPrefix(what, "code="); ok {
		code, err := strconv.Atoi(n)
		if err != nil {
			panic(err)
		}
		return status.Error(codes.Code(code), "asked")
	}
	panic("no behaviour " + what)
}

// kindsClientStream reads every request, ends at the first that is not
// "ok", and answers once at the end.
func kindsClientStream(_ any, stream grpc.ServerStream) error {
	for {
		req := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(req); err == io.EOF {
			return stream.SendMsg(wrapperspb.String("done"))
		} else if err != nil {
			return err
		}
		if err := endAs(req.GetValue()); err != nil {
			return err
		}
	}
}

// kindsServerStream answers its one request three times, then ends as it
// says.
func kindsServerStream(_ any, stream grpc.ServerStream) error {
	req := new(wrapperspb.StringValue)
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	for range 3 {
		if err := stream.SendMsg(req); err != nil {
			return err
		}
	}
	return endAs(req.GetValue())
}

// serveKinds serves the kinds service, health and, registered after
// initialize ran, the late service, with opts; it returns a client
// connection to it.
func serveKinds(t *testing.T, initialize func(*grpc.Server), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&kindsService, struct{}{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	initialize(srv)
	srv.RegisterService(&lateService, struct{}{})
	return grpctest.Dial(t, grpctest.Serve(t, srv))
}

// kindsCall is one call: a method and the requests it sends.
type kindsCall struct {
	method   string
	desc     *grpc.StreamDesc // nil for a unary call
	requests []string
}

// kindsCalls are calls of every kind, ending in every way endAs knows.
func kindsCalls() []kindsCall {
	ends := []string{"ok", "code=3", "code=5", "code=14", "code=20", "canceled", "deadline", "wrapped", "plain", "panic"}
	var calls []kindsCall
	for _, end := range ends {
		calls = append(calls,
			kindsCall{"/routeguide.test.Kinds/Unary", nil, []string{end}},
			kindsCall{"/routeguide.test.Late/Unary", nil, []string{end}},
			kindsCall{"/routeguide.test.Kinds/ServerStream", &kindsService.Streams[1], []string{end}},
		)
		for _, stream := range []struct {
			method string
			desc   *grpc.StreamDesc
		}{
			{"/routeguide.test.Kinds/ClientStream", &kindsService.Streams[0]},
			{"/routeguide.test.Kinds/Bidi", &kindsService.Streams[2]},
			{"/routeguide.test.Late/Bidi", &lateService.Streams[0]},
		} {
			calls = append(calls,
				kindsCall{stream.method, stream.desc, []string{"ok", "ok", end}},
				kindsCall{stream.method, stream.desc, []string{end}},
			)
		}
	}
	return append(calls,
		kindsCall{"/routeguide.test.Kinds/Bidi", &kindsService.Streams[2], nil},
		kindsCall{"/routeguide.test.Kinds/ClientStream", &kindsService.Streams[0], nil},
		kindsCall{"/routeguide.test.Nowhere/Unary", nil, []string{"ok"}}, // Unimplemented, never intercepted
	)
}

// call makes c on conn and returns its code.
func (c kindsCall) call(t *testing.T, conn *grpc.ClientConn) codes.Code {
	t.Helper()
	ctx := grpctest.CallContext(t)
	resp := new(wrapperspb.StringValue)
	if c.desc == nil {
		return status.Code(conn.Invoke(ctx, c.method, wrapperspb.String(c.requests[0]), resp))
	}
	stream, err := conn.NewStream(ctx, c.desc, c.method)
	if err != nil {
		return status.Code(err)
	}
	for _, r := range c.requests {
		if err := stream.SendMsg(wrapperspb.String(r)); err != nil {
			break // the call ended; RecvMsg tells how
		}
	}
	stream.CloseSend()
	for err == nil {
		err = stream.RecvMsg(resp)
	}
	if err == io.EOF {
		err = nil
	}
	return status.Code(err)
}

// timedLine is a line of the exposition whose value depends on how long calls
// took: a bucket of the handling-time histogram, or its sum.
var timedLine = regexp.MustCompile(`^(grpc_server_handling_seconds_(?:bucket|sum)\{.*\}) \S+$`)

// exposition is reg in the text format, as the node's /metrics serves it,
// with the values that depend on timing replaced by "_".
func exposition(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(buf.String(), "\n")
	for i, line := range lines {
		lines[i] = timedLine.ReplaceAllString(line, "$1 _")
	}
	return strings.Join(lines, "\n")
}

func TestGRPCMetricsExposeWhatTheLibraryProviderDoes(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	library := newLibraryGRPCMetrics()
	libraryReg := prometheus.NewRegistry()
	libraryReg.MustRegister(library)
	// As the node was: the provider's interceptors outermost, then the
	// node's header, log and recovery.
	unary, stream := callInterceptors(logger, testNodeID, nil, requestBound{})
	libraryConn := serveKinds(t, func(s *grpc.Server) { library.InitializeMetrics(s) },
		grpc.ChainUnaryInterceptor(library.UnaryServerInterceptor(), unary),
		grpc.ChainStreamInterceptor(library.StreamServerInterceptor(), stream))

	ours := newGRPCMetrics(grpcHandlingBuckets)
	ourReg := prometheus.NewRegistry()
	ourReg.MustRegister(ours)
	unary, stream = callInterceptors(logger, testNodeID, ours, requestBound{})
	ourConn := serveKinds(t, ours.initialize, grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))

	if got, want := exposition(t, ourReg), exposition(t, libraryReg); got != want {
		t.Errorf("before any call, the series differ:\n%s", lineDiff(want, got))
	}
	for _, c := range kindsCalls() {
		if got, want := c.call(t, ourConn), c.call(t, libraryConn); got != want {
			t.Fatalf("%s %q ended with %v on the node's metrics, %v on the provider's", c.method, c.requests, got, want)
		}
	}
	health := healthpb.NewHealthClient(ourConn)
	libraryHealth := healthpb.NewHealthClient(libraryConn)
	for _, service := range []string{"", "nowhere"} {
		req := &healthpb.HealthCheckRequest{Service: service}
		_, err := health.Check(grpctest.CallContext(t), req)
		_, libraryErr := libraryHealth.Check(grpctest.CallContext(t), req)
		if status.Code(err) != status.Code(libraryErr) {
			t.Fatalf("health check of %q: %v against %v", service, err, libraryErr)
		}
	}

	got, want := exposition(t, ourReg), exposition(t, libraryReg)
	if got != want {
		t.Errorf("after the same calls, the node's metrics (+) differ from the provider's (-):\n%s", lineDiff(want, got))
	}
	// The calls reached every path: methods of every kind, a method
	// registered late, and a code outside the standard ones.
	for _, series := range []string{
		`grpc_server_handled_total{grpc_code="Code(20)",grpc_method="Bidi",grpc_service="routeguide.test.Kinds",grpc_type="bidi_stream"} 2`,
		`grpc_server_handled_total{grpc_code="Code(20)",grpc_method="Unary",grpc_service="routeguide.test.Kinds",grpc_type="unary"} 1`,
		`grpc_server_msg_received_total{grpc_method="ClientStream",grpc_service="routeguide.test.Kinds",grpc_type="client_stream"} 40`,
		`grpc_server_msg_sent_total{grpc_method="Bidi",grpc_service="routeguide.test.Late",grpc_type="bidi_stream"} 22`,
		`grpc_server_handled_total{grpc_code="Canceled",grpc_method="Unary",grpc_service="routeguide.test.Late",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="Internal",grpc_method="ServerStream",grpc_service="routeguide.test.Kinds",grpc_type="server_stream"} 1`,
		`grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary",le="0.0005"} _`,
		`grpc_server_handling_seconds_count{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 2`,
	} {
		if !slices.Contains(strings.Split(want, "\n"), series) {
			t.Errorf("the provider's exposition lacks %s", series)
		}
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	wantLines, gotLines := strings.Split(want, "\n"), strings.Split(got, "\n")
	var diff strings.Builder
	for _, l := range wantLines {
		if !slices.Contains(gotLines, l) {
			fmt.Fprintf(&diff, "- %s\n", l)
		}
	}
	for _, l := range gotLines {
		if !slices.Contains(wantLines, l) {
			fmt.Fprintf(&diff, "+ %s\n", l)
		}
	}
	if diff.Len() == 0 {
		return "(the same lines in another order)"
	}
	return diff.String()
}
