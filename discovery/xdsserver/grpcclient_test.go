package xdsserver_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"

	"github.com/routeguide-cluster/routeguide/discovery/xdsserver"
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
	bootstrap, err := xdsserver.Bootstrap(xdsserver.BootstrapConfig{Servers: []string{addr}, NodeID: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+service, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
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
