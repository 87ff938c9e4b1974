// Command grpcnode serves RouteGuide on plain grpc-go and registers it with
// etcd's own naming package, as etcd documents it: an endpoint under a
// lease kept alive, added with endpoints.Manager under SERVICE/ADDR. SIGINT
// or SIGTERM revokes the lease (the key goes at once) and stops the server
// gracefully. The handler is routeguide.Server, the one the nodes serve.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"google.golang.org/grpc"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/benchpeers/handler"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:50051", "gRPC listen `address`, also the one registered")
	etcd := flag.String("etcd", "127.0.0.1:2379", "comma-separated etcd `endpoints`")
	service := flag.String("service", "routeguide", "service `name`: the key is NAME/ADDR")
	ttl := flag.Int64("ttl", 10, "lease TTL in `seconds`")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, strings.Split(*etcd, ","), *service, *ttl); err != nil {
		fmt.Fprintf(os.Stderr, "grpcnode: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string, etcd []string, service string, ttl int64) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	pb.RegisterRouteGuideServer(s, handler.New())
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()

	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("lease grant: %w", err)
	}
	alive, err := cli.KeepAlive(context.Background(), lease.ID)
	if err != nil {
		return fmt.Errorf("lease keepalive: %w", err)
	}
	go func() {
		for range alive { // the client's keepalive loop needs a reader
		}
	}()
	em, err := endpoints.NewManager(cli, service)
	if err != nil {
		return err
	}
	addr := lis.Addr().String()
	if err := em.AddEndpoint(ctx, service+"/"+addr, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("add endpoint: %w", err)
	}

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	revoke, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := cli.Revoke(revoke, lease.ID); err != nil {
		fmt.Fprintf(os.Stderr, "grpcnode: revoke the lease: %v\n", err)
	}
	s.GracefulStop()
	return nil
}
