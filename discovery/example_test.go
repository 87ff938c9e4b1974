package discovery_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
)

// Example registers a node of a service other than RouteGuide, gRPC's
// health service, under a lease, and calls it through etcd:///health.
func Example() {
	// A real etcd server in this process; any etcd will do.
	etcd, err := localetcd.Start(localetcd.Config{})
	must(err)
	defer etcd.Close()
	cli, err := discovery.NewEtcdClient(discovery.EtcdConfig{Endpoints: []string{etcd.ClientURL()}})
	must(err)
	defer cli.Close()

	// The node: a gRPC server, registered for as long as it serves.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	defer srv.Stop()
	reg, err := discovery.StartRegistrar(discovery.Registration{
		Client:   cli,
		Service:  "health",
		Addr:     lis.Addr().String(),
		Metadata: discovery.Metadata{NodeID: "node-1"},
		TTL:      10 * time.Second,
	})
	must(err)
	defer reg.Deregister(context.Background())
	<-reg.Registered()

	// The client: every node registered as "health", balanced by package
	// balancer, checked by the health of the server as a whole ("").
	opts, err := balancer.DialOptions(balancer.WithHealthService(""), balancer.WithIdempotentMethods(healthpb.Health_Check_FullMethodName))
	must(err)
	conn, err := grpc.NewClient("etcd:///health", append(opts,
		grpc.WithResolvers(discovery.NewBuilder(cli)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	must(err)
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	must(err)
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
