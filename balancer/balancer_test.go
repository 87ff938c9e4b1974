package balancer

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

// backend is a real gRPC server whose health the test controls.
type backend struct {
	addr   string
	health *health.Server
}

func startBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var backends []*backend
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		server := grpc.NewServer(ServerOptions()...)
		hs := health.NewServer()
		hs.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(server, hs)
		go server.Serve(lis)
		t.Cleanup(server.Stop)
		backends = append(backends, &backend{addr: lis.Addr().String(), health: hs})
	}
	return backends
}

// dialOptions is DialOptions(opts...), which must be valid.
func dialOptions(t testing.TB, opts ...Option) []grpc.DialOption {
	t.Helper()
	dialOpts, err := DialOptions(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return dialOpts
}

// dial connects through a manual resolver that the test feeds, with the
// dial options every RouteGuide client uses.
func dial(t *testing.T, backends []*backend) (*grpc.ClientConn, *manual.Resolver) {
	t.Helper()
	r := manual.NewBuilderWithScheme("test")
	r.InitialState(stateOf(backends))
	opts := append(dialOptions(t), grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient("test:///routeguide", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, r
}

func stateOf(backends []*backend) resolver.State {
	var s resolver.State
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: b.addr}}})
	}
	return s
}

// callsPerBackend makes n calls and counts where they went.
func callsPerBackend(t *testing.T, conn *grpc.ClientConn, n int) map[string]int {
	t.Helper()
	client := healthpb.NewHealthClient(conn)
	counts := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var p peer.Peer
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("call failed: %v", err)
		}
		counts[p.Addr.String()]++
	}
	return counts
}

func TestCallsSpreadEvenlyOverEveryBackend(t *testing.T) {
	backends := startBackends(t, 3)
	conn, _ := dial(t, backends)
	// Wait until every backend is connected, so the split is the policy's.
	poll.Until(t, 10*time.Second, "calls on all 3 backends", func() bool { return len(callsPerBackend(t, conn, 30)) == 3 })

	const calls = 3000
	counts := callsPerBackend(t, conn, calls)
	for _, b := range backends {
		share := float64(counts[b.addr]) / (calls / 3)
		if share < 0.9 || share > 1.1 {
			t.Errorf("backend %s got %d of %d calls (%.2f of a fair share), want within 10%%", b.addr, counts[b.addr], calls, share)
		}
	}
}

func TestBackendThatIsNotServingDropsOut(t *testing.T) {
	backends := startBackends(t, 3)
	conn, _ := dial(t, backends)
	poll.Until(t, 10*time.Second, "calls on all 3 backends", func() bool { return len(callsPerBackend(t, conn, 30)) == 3 })

	backends[0].health.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	// The health watch tells the client at once; after that, no call goes there.
	poll.Until(t, 10*time.Second, "no call on the backend that is not serving", func() bool { return callsPerBackend(t, conn, 30)[backends[0].addr] == 0 })
	if got := callsPerBackend(t, conn, 300)[backends[0].addr]; got != 0 {
		t.Errorf("%d calls went to a backend that is not serving", got)
	}
}

func TestNoEndpointsFailFastNamingTheTarget(t *testing.T) {
	backends := startBackends(t, 1)
	conn, r := dial(t, backends)
	poll.Until(t, 10*time.Second, "a call on the backend", func() bool { return len(callsPerBackend(t, conn, 1)) == 1 })

	r.UpdateState(resolver.State{})
	client := healthpb.NewHealthClient(conn)
	poll.Until(t, 10*time.Second, "calls failing UNAVAILABLE", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unavailable {
			return false
		}
		if time.Since(start) > time.Second {
			t.Fatalf("call took %v to fail; it must fail at once", time.Since(start))
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "test:///routeguide") || !strings.Contains(msg, "no node") {
			t.Fatalf("error %q does not name the target and say that no node is registered", msg)
		}
		return true
	})
}

func TestServiceConfigParses(t *testing.T) {
	// grpc.NewClient parses the default service config and fails on an error.
	_, err := grpc.NewClient("passthrough:///x", append(dialOptions(t), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatalf("dial options rejected: %v", err)
	}
	if !strings.Contains(ServiceConfig, fmt.Sprintf("%q", Name)) {
		t.Errorf("service config does not choose the %s policy", Name)
	}
}
