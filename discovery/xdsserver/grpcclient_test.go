package xdsserver_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/xds"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// TestGRPCClientTakesTheResourcesAndBalancesRoundRobin dials xds:///routeguide
// with grpc-go's xDS client, whose nodes are three real gRPC servers in the
// registry: it accepts every resource (one it rejected would fail every
// call) and sends 30 calls in a row 10 to each node.
func TestGRPCClientTakesTheResourcesAndBalancesRoundRobin(t *testing.T) {
	_, cli, _, addr := setup(t)
	var backends []string
	for _, id := range []string{"n1", "n2", "n3"} {
		backend := serveHealth(t)
		register(t, cli, id, backend)
		backends = append(backends, backend)
	}
	conn := grpctest.Dial(t, "xds:///"+service, grpc.WithResolvers(xdsResolver(t, addr)))
	client := healthpb.NewHealthClient(conn)
	check := func() string {
		// Calls wait for the resources, and fail once that takes too long.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var p peer.Peer
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
		return p.Addr.String()
	}
	answered := map[string]bool{}
	poll.Until(t, 10*time.Second, "every node to answer", func() bool {
		answered[check()] = true
		return len(answered) == len(backends)
	})
	calls := map[string]int{}
	for range 30 {
		calls[check()]++
	}
	for _, b := range backends {
		if calls[b] != 10 {
			t.Fatalf("calls per node %v, want 10 to each of %v", calls, backends)
		}
	}
}

// serveHealth serves gRPC's health service on a port of 127.0.0.1 until t
// ends, and returns its address.
func serveHealth(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	return grpctest.Serve(t, srv)
}

// TestGoClientsBalanceWithThePolicyTheServerNames: a Go client that links
// package balancer takes its policy from the cluster (EndpointPolicy), so its
// attempt timeouts skip the nodes that hung on the same call, as they do for
// etcd:/// clients. Two of three nodes hang: under round robin alone, with
// callers at once, calls meet a hung node again; here each hung node sees
// each call at most once, and every call succeeds.
func TestGoClientsBalanceWithThePolicyTheServerNames(t *testing.T) {
	_, cli, _, addr := setupWith(t, balancer.Name)
	live := &callsSeen{name: "live"}
	hung1, hung2 := &callsSeen{name: "hung1", hangs: true}, &callsSeen{name: "hung2", hangs: true}
	for _, node := range []*callsSeen{live, hung1, hung2} {
		srv := grpc.NewServer()
		pb.RegisterRouteGuideServer(srv, node)
		register(t, cli, node.name, grpctest.Serve(t, srv))
	}
	const attemptTimeout = 200 * time.Millisecond
	opts, err := balancer.DialOptions(balancer.WithAttemptTimeout(attemptTimeout))
	if err != nil {
		t.Fatal(err)
	}
	conn := grpctest.Dial(t, "xds:///"+service, append(opts, grpc.WithResolvers(xdsResolver(t, addr)))...)
	client := pb.NewRouteGuideClient(conn)
	// Callers at once, so that round robin's picks for one call come
	// between another's: alone, a caller would go round the nodes in turn.
	const callers, callsEach = 8, 5
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range callsEach {
				id := fmt.Sprintf("%d.%d", c, i)
				ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "call", id), 10*time.Second)
				f, err := client.GetFeature(ctx, &pb.Point{}, grpc.WaitForReady(true))
				cancel()
				if err != nil || f.GetName() != "live" {
					t.Errorf("call %s: %v, %v; want the live node's feature", id, f, err)
				}
			}
		})
	}
	wg.Wait()
	for _, node := range []*callsSeen{hung1, hung2} {
		if again := node.seenTwice(); len(again) > 0 {
			t.Errorf("calls %v came to %s twice: the client did not skip a node that hung on them", again, node.name)
		}
	}
	if hung1.count()+hung2.count() == 0 {
		t.Error("no call went to a hung node")
	}
}

// callsSeen is a RouteGuide node that answers GetFeature, or hangs until the
// call is cancelled, and counts the calls it saw by their "call" metadata.
type callsSeen struct {
	pb.UnimplementedRouteGuideServer
	name  string
	hangs bool
	mu    sync.Mutex
	seen  map[string]int
}

func (n *callsSeen) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	n.mu.Lock()
	if n.seen == nil {
		n.seen = map[string]int{}
	}
	n.seen[strings.Join(md.Get("call"), ",")]++
	n.mu.Unlock()
	if n.hangs {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &pb.Feature{Name: n.name}, nil
}

func (n *callsSeen) seenTwice() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var again []string
	for call, times := range n.seen {
		if times > 1 {
			again = append(again, call)
		}
	}
	return again
}

func (n *callsSeen) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.seen)
}

// xdsResolver is grpc-go's xds:/// resolver with a bootstrap that names the
// xDS server at addr only.
func xdsResolver(t *testing.T, addr string) resolver.Builder {
	t.Helper()
	bootstrap, err := xdsserver.Bootstrap(xdsserver.BootstrapConfig{Servers: []string{addr}, NodeID: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
