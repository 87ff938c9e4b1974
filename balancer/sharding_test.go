package balancer

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/unreachable"
)

// refused returns n endpoints where nothing listens, so that every
// connection is refused at once.
func refused(t *testing.T, n int) []resolver.Endpoint {
	t.Helper()
	var eps []resolver.Endpoint
	for _, addr := range unreachable.Addrs(t, n) {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}})
	}
	return eps
}

// countingName is the policy wrapped so that a test counts the states it
// hands the channel.
const countingName = "test_counting_" + Name

var channelUpdates atomic.Int64

func init() { grpcbalancer.Register(countingBuilder{}) }

type countingBuilder struct{ builder }

func (countingBuilder) Name() string { return countingName }

func (b countingBuilder) Build(cc grpcbalancer.ClientConn, opts grpcbalancer.BuildOptions) grpcbalancer.Balancer {
	return b.builder.Build(countingConn{cc}, opts)
}

type countingConn struct{ grpcbalancer.ClientConn }

func (c countingConn) UpdateState(s grpcbalancer.State) {
	channelUpdates.Add(1)
	c.ClientConn.UpdateState(s)
}

// dialEndpoints connects through a manual resolver holding eps, with the
// service config of every client but for the policy's name.
func dialEndpoints(t *testing.T, policy string, eps []resolver.Endpoint) (*grpc.ClientConn, *manual.Resolver) {
	t.Helper()
	r := manual.NewBuilderWithScheme("test")
	r.InitialState(resolver.State{Endpoints: eps})
	opts := append(dialOptions(t), grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(strings.Replace(ServiceConfig, `"`+Name+`"`, `"`+policy+`"`, 1)))
	conn, err := grpc.NewClient("test:///routeguide", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, r
}

// TestRefusedEndpointsDoNotEachUpdateTheChannel: with 1,000 endpoints that
// refuse connections beside one live backend, the policy hands the channel
// a handful of states before the first call succeeds, not one per refusal.
// gRPC's round_robin sends one per refusal, each built over all 1,001
// endpoints, and the live backend's READY waits behind them all.
func TestRefusedEndpointsDoNotEachUpdateTheChannel(t *testing.T) {
	checkNoGoroutineLeft(t)
	live := startBackends(t, 1)[0]
	eps := append(refused(t, 1000), resolver.Endpoint{Addresses: []resolver.Address{{Addr: live.addr}}})
	channelUpdates.Store(0)
	conn, _ := dialEndpoints(t, countingName, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	if got := channelUpdates.Load(); got > 10 {
		t.Errorf("%d states handed to the channel before the first call among 1,000 refusing endpoints, want at most 10", got)
	}
}

// TestEndpointsThatAllRefuseFailCallsFast: when every endpoint refuses, the
// policy is in TRANSIENT_FAILURE and a call fails at once with UNAVAILABLE
// instead of waiting for its deadline; once a live backend is added, calls
// go to it.
func TestEndpointsThatAllRefuseFailCallsFast(t *testing.T) {
	checkNoGoroutineLeft(t)
	eps := refused(t, 50)
	conn, r := dialEndpoints(t, Name, eps)
	client := healthpb.NewHealthClient(conn)
	poll.Until(t, 10*time.Second, "calls failing UNAVAILABLE, connection refused", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) == codes.DeadlineExceeded {
			t.Fatalf("a call waited for its deadline while every endpoint refused: %v", err)
		}
		return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "connection refused")
	})

	live := startBackends(t, 1)[0]
	r.UpdateState(resolver.State{Endpoints: append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: live.addr}}})})
	poll.Until(t, 10*time.Second, "a call on the live backend", func() bool { return callsPerBackend(t, conn, 1)[live.addr] == 1 })
}
