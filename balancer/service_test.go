package balancer

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
)

// echoNode serves test.Echo, a service other than RouteGuide described by
// hand: Get and Put answer with their request, except that the first call of
// each fails as the node's failure says. It reports health for test.Echo.
type echoNode struct {
	failure  failure
	addr     string
	health   *health.Server
	get, put atomic.Int64 // calls that reached the handler
}

type failure int

const (
	unavailable failure = iota // the first call answers UNAVAILABLE
	hang                       // the first call waits until it is cancelled
)

const echoService = "test.Echo"

var echoDesc = grpc.ServiceDesc{
	ServiceName: echoService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Get", Handler: echoHandler(func(n *echoNode) *atomic.Int64 { return &n.get })},
		{MethodName: "Put", Handler: echoHandler(func(n *echoNode) *atomic.Int64 { return &n.put })},
	},
}

func echoHandler(counter func(*echoNode) *atomic.Int64) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, decode func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		n := srv.(*echoNode)
		req := new(wrapperspb.StringValue)
		if err := decode(req); err != nil {
			return nil, err
		}
		if counter(n).Add(1) == 1 {
			if n.failure == unavailable {
				return nil, status.Error(codes.Unavailable, "the first call fails")
			}
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return req, nil
	}
}

func startEchoNode(t *testing.T, f failure) *echoNode {
	t.Helper()
	n := &echoNode{failure: f, health: health.NewServer()}
	srv := grpc.NewServer(ServerOptions()...)
	srv.RegisterService(&echoDesc, n)
	n.health.SetServingStatus(echoService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, n.health)
	n.addr = grpctest.Serve(t, srv)
	return n
}

// dialEcho dials nodes through a resolver that names them, with the dial
// options of an echo client: its health service, Get idempotent.
func dialEcho(t *testing.T, nodes ...*echoNode) *grpc.ClientConn {
	t.Helper()
	var backends []*backend
	for _, n := range nodes {
		backends = append(backends, &backend{addr: n.addr})
	}
	r := manual.NewBuilderWithScheme("test")
	r.InitialState(stateOf(backends))
	opts := dialOptions(t, WithHealthService(echoService), WithIdempotentMethods("/"+echoService+"/Get"), WithAttemptTimeout(testAttemptTimeout))
	return grpctest.Dial(t, "test:///echo", append(opts, grpc.WithResolvers(r))...)
}

// TestIdempotentMethodsOfAnyServiceAreRetried: a client of another service
// names its idempotent methods, and only those are made again, whether the
// first attempt answered UNAVAILABLE or hung past its attempt timeout.
func TestIdempotentMethodsOfAnyServiceAreRetried(t *testing.T) {
	for _, f := range []struct {
		name    string
		failure failure
		wantErr codes.Code // of a call not retried
	}{
		{"unavailable", unavailable, codes.Unavailable},
		{"hung", hang, codes.DeadlineExceeded},
	} {
		t.Run(f.name, func(t *testing.T) {
			n := startEchoNode(t, f.failure)
			conn := dialEcho(t, n)
			for _, m := range []struct {
				name     string
				calls    *atomic.Int64
				wantCode codes.Code
			}{
				{"Get", &n.get, codes.OK},
				{"Put", &n.put, f.wantErr},
			} {
				ctx, cancel := context.WithTimeout(t.Context(), 10*testAttemptTimeout)
				reply := new(wrapperspb.StringValue)
				err := conn.Invoke(ctx, "/"+echoService+"/"+m.name, wrapperspb.String("x"), reply, grpc.WaitForReady(true))
				cancel()
				if status.Code(err) != m.wantCode {
					t.Errorf("%s ended with %v, want %v", m.name, err, m.wantCode)
				}
				retried := m.calls.Load() > 1
				if wantRetried := m.name == "Get"; retried != wantRetried {
					t.Errorf("%s reached the node %d times; retried = %v, want %v", m.name, m.calls.Load(), retried, wantRetried)
				}
				if err == nil && reply.GetValue() != "x" {
					t.Errorf("%s answered %q, want the request back", m.name, reply.GetValue())
				}
			}
		})
	}
}

// TestHealthServiceOfAnyServicePicksNodes: the health service a client names
// is the one whose status decides which nodes are picked.
func TestHealthServiceOfAnyServicePicksNodes(t *testing.T) {
	serving, draining := startEchoNode(t, unavailable), startEchoNode(t, unavailable)
	draining.health.SetServingStatus(echoService, healthpb.HealthCheckResponse_NOT_SERVING)
	conn := dialEcho(t, serving, draining)
	for range 6 {
		var p peer.Peer
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := conn.Invoke(ctx, "/"+echoService+"/Get", wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got := p.Addr.String(); got != serving.addr {
			t.Fatalf("Get answered by %s, want only %s, the node SERVING %s", got, serving.addr, echoService)
		}
	}
	if draining.get.Load() != 0 {
		t.Errorf("the node NOT_SERVING %s got %d calls", echoService, draining.get.Load())
	}
}

func TestDialOptionsRejectMethodsThatAreNotFullNames(t *testing.T) {
	for _, methods := range [][]string{
		{"GetFeature"},
		{"test.Echo/Get"},
		{"/test.Echo"},
		{"/test.Echo/"},
		{"//Get"},
		{"/test.Echo/Get/x"},
		{"/test.Echo/Get", "/test.Echo/Get"},
	} {
		_, err := DialOptions(WithIdempotentMethods(methods...))
		if err == nil || !strings.Contains(err.Error(), "WithIdempotentMethods") {
			t.Errorf("WithIdempotentMethods(%q): error %v, want one that names the option", methods, err)
		}
	}
	if _, err := DialOptions(WithIdempotentMethods("/test.Echo/Get", "/pkg.v1.Other/List")); err != nil {
		t.Errorf("full method names rejected: %v", err)
	}
	if _, err := DialOptions(WithIdempotentMethods()); err != nil {
		t.Errorf("no idempotent methods rejected: %v", err)
	}
}
