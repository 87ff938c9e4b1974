package xdsserver_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/testutils/xdstest"
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
	// failTenths of every ten calls fail UNAVAILABLE (the first ones).
	failTenths int
	mu         sync.Mutex
	seen       map[string]int
	calls      int
}

func (n *callsSeen) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	n.mu.Lock()
	if n.seen == nil {
		n.seen = map[string]int{}
	}
	n.seen[strings.Join(md.Get("call"), ",")]++
	fail := n.calls%10 < n.failTenths
	n.calls++
	n.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, n.name+" fails this one")
	}
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

// received is how many calls (attempts) the node has had.
func (n *callsSeen) received() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

// serveNodes serves each node on a real gRPC server and registers it.
func serveNodes(t *testing.T, cli *clientv3.Client, nodes ...*callsSeen) {
	t.Helper()
	for _, node := range nodes {
		srv := grpc.NewServer()
		pb.RegisterRouteGuideServer(srv, node)
		register(t, cli, node.name, grpctest.Serve(t, srv))
	}
}

// A grpc-go client without our policy takes the next one the cluster
// lists, least request: a node that holds its calls, with callers at once,
// gets far fewer than the third of them round robin would give it (about
// a ninth: least request draws two nodes at random, with replacement, and
// a draw of the hung node twice must take it).
func TestGoClientsWithoutOurPolicyTakeLeastRequest(t *testing.T) {
	_, cli, _, addr := setupConfig(t, func(c *xdsserver.Config) {
		c.EndpointPolicy, c.LeastRequest = "routeguide.test.policy_nobody_registered", true
	})
	live1, live2, hung := &callsSeen{name: "live1"}, &callsSeen{name: "live2"}, &callsSeen{name: "hung", hangs: true}
	serveNodes(t, cli, live1, live2, hung)
	client := pb.NewRouteGuideClient(grpctest.Dial(t, "xds:///"+service, grpc.WithResolvers(xdsResolver(t, addr))))
	// Every node connected first: a policy sees no load on a node it has
	// not yet connected to.
	poll.Until(t, 10*time.Second, "every node to answer", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		client.GetFeature(ctx, &pb.Point{}, grpc.WaitForReady(true))
		return live1.received() > 0 && live2.received() > 0 && hung.received() > 0
	})
	before := live1.received() + live2.received() + hung.received()
	beforeHung := hung.received()
	const callers, callsEach = 8, 40
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range callsEach {
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				client.GetFeature(ctx, &pb.Point{})
				cancel()
			}
		})
	}
	wg.Wait()
	total := live1.received() + live2.received() + hung.received() - before
	share := float64(hung.received()-beforeHung) / float64(total)
	t.Logf("the hung node had %d of %d calls (%.0f%%)", hung.received()-beforeHung, total, 100*share)
	if total < callers*callsEach || share > 0.2 {
		t.Errorf("the hung node had %.0f%% of %d calls; want at most 20%% (least request), where round robin gives 33%%", 100*share, total)
	}
}

// A grpc-go client ejects a node that fails 30% of its calls (outlier
// detection, gRFC A50, from the cluster) in a cluster of 3, under our
// policy and under least request alike, and the retries on UNAVAILABLE
// that the route names hide every failure from the caller.
func TestGoClientsEjectTheNodeThatFails(t *testing.T) {
	for _, policy := range []string{balancer.Name, "routeguide.test.policy_nobody_registered"} {
		t.Run("policy="+policy, func(t *testing.T) {
			_, cli, _, addr := setupConfig(t, func(c *xdsserver.Config) {
				c.EndpointPolicy, c.LeastRequest, c.OutlierDetection = policy, true, &testEjection
			})
			live1, live2, failing := &callsSeen{name: "live1"}, &callsSeen{name: "live2"}, &callsSeen{name: "failing", failTenths: 3}
			serveNodes(t, cli, live1, live2, failing)
			opts, err := balancer.DialOptions()
			if err != nil {
				t.Fatal(err)
			}
			client := pb.NewRouteGuideClient(grpctest.Dial(t, "xds:///"+service, append(opts, grpc.WithResolvers(xdsResolver(t, addr)))...))
			start := time.Now()
			failed, calls := 0, 0
			call := func() {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				calls++
				if _, err := client.GetFeature(ctx, &pb.Point{}, grpc.WaitForReady(true)); err != nil {
					failed++
					t.Logf("call %d: %v", calls, err)
				}
			}
			// Ejected: a hundred calls in a row, none of them to the failing node.
			poll.UntilReported(t, 10*time.Second, 0, "the failing node ejected", func() (bool, string) {
				seen := failing.received()
				for range 100 {
					call()
				}
				return failing.received() == seen && seen > 0, fmt.Sprintf("%d of %d calls reached the failing node", seen, calls)
			})
			t.Logf("ejected within %v, after %d calls", time.Since(start).Round(10*time.Millisecond), calls)
			if failed != 0 {
				t.Errorf("%d of %d calls failed; want 0: GetFeature is retried on UNAVAILABLE", failed, calls)
			}
		})
	}
}

// xdsResolver is grpc-go's xds:/// resolver with a bootstrap that names the
// xDS server at addr only.
func xdsResolver(t *testing.T, addr string) resolver.Builder {
	t.Helper()
	return xdstest.Resolver(t, xdsserver.BootstrapConfig{Servers: []string{addr}, NodeID: t.Name()})
}
