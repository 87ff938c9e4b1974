package balancer_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
)

// goingAway is gRPC's health service on a node that answers its first
// Check with UNAVAILABLE, as a node does that is shutting down.
type goingAway struct {
	*health.Server
	checks atomic.Int32
}

func (g *goingAway) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if g.checks.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "going away")
	}
	return g.Server.Check(ctx, req)
}

// ExampleWithIdempotentMethods dials a service other than RouteGuide through
// etcd:///health: Check changes nothing, so the client may retry it, and the
// caller never sees the first answer's UNAVAILABLE.
func ExampleWithIdempotentMethods() {
	// A real etcd server in this process; any etcd will do.
	etcd, err := localetcd.Start(localetcd.Config{})
	must(err)
	defer etcd.Close()
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{etcd.ClientURL()}})
	must(err)
	defer cli.Close()

	// A node of the health service, registered under a lease.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	node := &goingAway{Server: health.NewServer()}
	srv := grpc.NewServer(balancer.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, node)
	go srv.Serve(lis)
	defer srv.Stop()
	reg, err := discovery.StartRegistrar(discovery.Registration{
		Client: cli, Service: "health", Addr: lis.Addr().String(),
		Metadata: discovery.Metadata{NodeID: "node-1"}, TTL: 10 * time.Second,
	})
	must(err)
	defer reg.Deregister(context.Background())
	<-reg.Registered()

	opts, err := balancer.DialOptions(
		balancer.WithHealthService(""), // the server as a whole
		balancer.WithIdempotentMethods(healthpb.Health_Check_FullMethodName),
	)
	must(err)
	conn, err := grpc.NewClient("etcd:///health", append(opts,
		grpc.WithResolvers(discovery.NewBuilder(cli)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	must(err)
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	fmt.Println(resp.GetStatus(), err, "after", node.checks.Load(), "checks")
	// Output: SERVING <nil> after 2 checks
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
