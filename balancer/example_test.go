package balancer_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
	etcd, stop := startEtcd()
	defer stop()
	node := &goingAway{Server: health.NewServer()}
	defer serveUnderLease(etcd, "health", node)()

	opts, err := balancer.DialOptions(
		balancer.WithHealthService(""), // the server as a whole
		balancer.WithIdempotentMethods(healthpb.Health_Check_FullMethodName),
	)
	must(err)
	opts = append(opts, grpc.WithResolvers(discovery.NewBuilder(etcd)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient("etcd:///health", opts...)
	must(err)
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	fmt.Println(resp.GetStatus(), err, "after", node.checks.Load(), "checks")
	// Output: SERVING <nil> after 2 checks
}

// startEtcd starts a real etcd server in this process (any etcd will do)
// and a client of it; stop stops both.
func startEtcd() (client *clientv3.Client, stop func()) {
	server, err := localetcd.Start(localetcd.Config{})
	must(err)
	client, err = discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{server.ClientURL()}})
	must(err)
	return client, func() { client.Close(); server.Close() }
}

// serveUnderLease serves health on a free port and registers it as a node
// of service until the returned function stops both.
func serveUnderLease(etcd *clientv3.Client, service string, health healthpb.HealthServer) (stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := grpc.NewServer(balancer.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health)
	go srv.Serve(lis)
	reg, err := discovery.StartRegistrar(discovery.Registration{Client: etcd, Service: service, Addr: lis.Addr().String(), Metadata: discovery.Metadata{NodeID: "node-1"}, TTL: 10 * time.Second})
	must(err)
	<-reg.Registered()
	return func() {
		reg.Deregister(context.Background())
		srv.Stop()
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
