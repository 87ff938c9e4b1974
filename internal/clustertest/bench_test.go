package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/routeguide-cluster/routeguide/balancer"
	"github.com/routeguide-cluster/routeguide/discovery"
	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/internal/tlsfiles"
	"github.com/routeguide-cluster/routeguide/routeguide"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
	"github.com/routeguide-cluster/routeguide/routeguide/features"
	"github.com/routeguide-cluster/routeguide/routeguide/notes"
)

// benchCluster starts an embedded etcd and nodes nodes from the tests'
// nodetest.Config, logging nowhere, until b ends.
func benchCluster(b *testing.B, nodes int) (*devcluster.Cluster, node.Config) {
	b.Helper()
	cfg := nodetest.Config(b)
	cfg.Logger = slog.New(slog.DiscardHandler)
	return nodetest.StartCluster(b, nodes, cfg), cfg
}

func benchDial(b *testing.B, target, etcdURL string, opts ...clientcli.DialOption) *clientcli.Conn {
	b.Helper()
	conn, err := clientcli.Dial(context.Background(), target, append([]clientcli.DialOption{clientcli.WithEtcdConfig(discovery.EtcdConfig{Endpoints: []string{etcdURL}})}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// BenchmarkClusterGetFeature compares GetFeature throughput and latency
// through etcd:///routeguide over three nodes (round robin) with one node
// dialled directly, from the same client (the client command's: service
// config, retries, health checking) with the same number of workers, each
// with one call in flight (the load generator of `client load`). ns/op is
// the inverse of throughput; qps and p50-ms and p99-ms are the load
// generator's.
//
// Two more targets say where a difference comes from:
//
//   - nodes=3/static: the same three nodes from a fixed address list, no
//     etcd. Against nodes=3 it is the cost of discovery itself.
//
//   - server=1/conns=3: one server reached at three addresses (it listens on
//     three ports), so the client holds three connections to it and round
//     robin spreads the calls over them. Against server=1/conns=1, the same
//     server at one of them, it is the cost of spreading calls over three
//     connections, with no second node at all. The server has a node's
//     services and options but not its interceptors, so its calls are a
//     little cheaper and the connections' share of them a little larger.
//
//     go test -run '^$' -bench ClusterGetFeature -benchtime 5000x -count 3 ./internal/clustertest/
//
// On one machine the three nodes share its cores with the client, so the
// ratio measures what discovery and balancing cost, not how a cluster scales.
func BenchmarkClusterGetFeature(b *testing.B) {
	cluster, _ := benchCluster(b, 3)
	nodes := cluster.Nodes()
	threePorts := serveOnPorts(b, 3)
	targets := []struct {
		name, target string
		answering    int      // nodes that must answer before the clock starts (the bare server names none)
		static       []string // the addresses of a static:/// target
	}{
		{"nodes=1", nodes[0].AdvertisedAddr(), 1, nil},
		{"nodes=3", "etcd:///routeguide", 3, nil},
		{"nodes=3/static", "static:///routeguide", 3, []string{nodes[0].AdvertisedAddr(), nodes[1].AdvertisedAddr(), nodes[2].AdvertisedAddr()}},
		{"server=1/conns=1", "static:///routeguide", 0, threePorts[:1]},
		{"server=1/conns=3", "static:///routeguide", 0, threePorts},
	}
	for _, concurrency := range []int{1, 4, 16, 64} {
		for _, tc := range targets {
			b.Run(fmt.Sprintf("concurrency=%d/%s", concurrency, tc.name), func(b *testing.B) {
				var opts []clientcli.DialOption
				if tc.static != nil {
					opts = append(opts, clientcli.WithGRPCOptions(grpc.WithResolvers(staticResolver(tc.static...))))
				}
				conn := benchDial(b, tc.target, cluster.EtcdURL(), opts...)
				benchGetFeature(b, conn, tc.answering, concurrency)
			})
		}
	}
}

// BenchmarkTargetGetFeature compares an xds:///routeguide client, which has
// the nodes, round robin and retries from the first node's xDS server, with
// the etcd:///routeguide client, over the same three nodes, with the same
// load (GetFeature from concurrency workers, each with one call in flight).
// The ratio of their qps is docs/BENCHMARKS.md's "xDS".
//
//	go test -run '^$' -bench TargetGetFeature -benchtime 20000x -count 5 ./internal/clustertest/
func BenchmarkTargetGetFeature(b *testing.B) {
	cluster, _ := benchCluster(b, 3)
	bootstrap := xdsBootstrap(b, cluster, tlsfiles.Client{})
	for _, concurrency := range []int{16} {
		for _, target := range []string{"etcd", "xds"} {
			b.Run(fmt.Sprintf("concurrency=%d/target=%s", concurrency, target), func(b *testing.B) {
				conn := benchDial(b, target+":///routeguide", cluster.EtcdURL(), bootstrap)
				benchGetFeature(b, conn, 3, concurrency)
			})
		}
	}
}

// benchGetFeature waits for answering nodes to answer, warms conn up, and
// times b.N GetFeature calls from concurrency workers. cpu-ns/op is the
// process's CPU per call, the nodes' included: it hardly depends on what
// else the machine runs.
func benchGetFeature(b *testing.B, conn grpc.ClientConnInterface, answering, concurrency int) {
	b.Helper()
	waitNodesAnswer(b, conn, answering)
	warmUp(b, conn)
	b.ResetTimer()
	cpuBefore := testutils.ProcessCPUTime(b)
	res, err := load.Run(context.Background(), conn, load.Config{
		RPC: load.Get, Concurrency: concurrency, Requests: b.N, Timeout: 10 * time.Second, Seed: 1,
	})
	cpu := testutils.ProcessCPUTime(b) - cpuBefore
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if res.Failed != 0 {
		b.Fatalf("%d calls failed: %v", res.Failed, res.Errors)
	}
	b.ReportMetric(res.QPS, "qps")
	b.ReportMetric(float64(res.P50)/1e6, "p50-ms")
	b.ReportMetric(float64(res.P99)/1e6, "p99-ms")
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkClientGetFeature is what our client costs against plain grpc-go
// round robin, over the same three nodes from a fixed list (no etcd), with
// the same load; cpu-ns/op is the process's, the nodes' included:
//
//   - client=ours: the client command's connection (service config with
//     health checking and retries, attempt timeouts, our policy);
//
//   - client=ours/round_robin: the same with gRPC's round_robin in place of
//     our policy, which is what picking by load and ejecting cost;
//
//   - client=ours/no-attempt-timeouts: the same without attempt timeouts,
//     which cost a timer and two contexts per call;
//
//   - client=round_robin: grpc.NewClient with gRPC's round_robin and
//     nothing else, as docs/BENCHMARKS.md's Peers builds plain grpc-go.
//
//     go test -run '^$' -bench ClientGetFeature -benchtime 20000x -count 1 ./internal/clustertest/
func BenchmarkClientGetFeature(b *testing.B) {
	cluster, _ := benchCluster(b, 3)
	var addrs []string
	for _, n := range cluster.Nodes() {
		addrs = append(addrs, n.AdvertisedAddr())
	}
	noAttemptTimeouts, err := balancer.DialOptions(balancer.WithAttemptTimeout(0))
	if err != nil {
		b.Fatal(err)
	}
	plain := func(opts ...grpc.DialOption) func(b *testing.B) grpc.ClientConnInterface {
		return func(b *testing.B) grpc.ClientConnInterface {
			opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(staticResolver(addrs...)))
			conn, err := grpc.NewClient("static:///routeguide", opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			return conn
		}
	}
	clients := []struct {
		name string
		dial func(b *testing.B) grpc.ClientConnInterface
	}{
		{"ours", func(b *testing.B) grpc.ClientConnInterface {
			return benchDial(b, "static:///routeguide", cluster.EtcdURL(), clientcli.WithGRPCOptions(grpc.WithResolvers(staticResolver(addrs...))))
		}},
		{"ours/round_robin", func(b *testing.B) grpc.ClientConnInterface {
			roundRobin := strings.Replace(balancer.ServiceConfig, `"`+balancer.Name+`":{}`, `"round_robin":{}`, 1)
			return benchDial(b, "static:///routeguide", cluster.EtcdURL(), clientcli.WithGRPCOptions(grpc.WithResolvers(staticResolver(addrs...)), grpc.WithDefaultServiceConfig(roundRobin)))
		}},
		{"ours/no-attempt-timeouts", plain(noAttemptTimeouts...)},
		{"round_robin", plain(grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))},
	}
	for _, c := range clients {
		b.Run(fmt.Sprintf("concurrency=16/client=%s", c.name), func(b *testing.B) {
			benchGetFeature(b, c.dial(b), 3, 16)
		})
	}
}

// staticResolver resolves static:///routeguide to addrs, one endpoint each,
// and never changes. A manual resolver serves one ClientConn only, so each
// connection gets its own.
func staticResolver(addrs ...string) resolver.Builder {
	r := manual.NewBuilderWithScheme("static")
	endpoints := make([]resolver.Endpoint, len(addrs))
	for i, addr := range addrs {
		endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}}
	}
	r.InitialState(resolver.State{Endpoints: endpoints})
	return r
}

// serveOnPorts serves a node's RouteGuide and health services, with its
// server options but without its interceptors, on ports ports of 127.0.0.1
// until b ends, and returns their addresses: one server that a client can
// reach over as many connections.
func serveOnPorts(b *testing.B, ports int) []string {
	b.Helper()
	db := features.Default()
	srv := grpc.NewServer(append(balancer.ServerOptions(), node.TransportOptions(db)...)...)
	pb.RegisterRouteGuideServer(srv, routeguide.NewServer(routeguide.Config{Features: db, Notes: notes.NewMemory(notes.Limits{})}))
	healthSrv := health.NewServer()
	healthSrv.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, healthSrv)
	addrs := make([]string, ports)
	for i := range addrs {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(lis)
		addrs[i] = lis.Addr().String()
	}
	b.Cleanup(srv.Stop)
	return addrs
}

// warmUp makes a few hundred calls, so that every connection is up and has
// served before the clock starts.
func warmUp(b *testing.B, conn grpc.ClientConnInterface) {
	b.Helper()
	res, err := load.Run(context.Background(), conn, load.Config{RPC: load.Get, Concurrency: 4, Requests: 300, Timeout: 10 * time.Second})
	if err != nil || res.Failed != 0 {
		b.Fatalf("warm-up: %v, %d failed: %v", err, res.Failed, res.Errors)
	}
}

// waitNodesAnswer makes calls until n nodes have answered: from then on the
// round robin holds them all.
func waitNodesAnswer(b testing.TB, conn grpc.ClientConnInterface, n int) {
	b.Helper()
	if n == 0 {
		return
	}
	calls := loadtest.NewLog(conn)
	poll.Until(b, 10*time.Second, fmt.Sprintf("%d nodes to answer", n), func() bool {
		res, _ := load.Run(context.Background(), calls, load.Config{RPC: load.Get, Concurrency: 1, Requests: 3 * n, Timeout: 5 * time.Second})
		return len(res.ByNode) >= n
	})
}

// BenchmarkJoinLatency measures, under load, the time from a new node's key
// appearing in etcd (as a watch of the registry sees it) to the first
// response from that node, over many joins: each op starts a node, waits
// for its first answer, and drains it again. It reports the percentiles.
//
// The client resolves etcd:///routeguide, or xds:///routeguide from the
// first node's xDS server.
//
//	go test -run '^$' -bench JoinLatency -benchtime 100x ./internal/clustertest/
func BenchmarkJoinLatency(b *testing.B) {
	for _, target := range []string{"etcd", "xds"} {
		b.Run("target="+target, func(b *testing.B) {
			cluster, template := benchCluster(b, 2)
			conn := benchDial(b, target+":///routeguide", cluster.EtcdURL(), xdsBootstrap(b, cluster, tlsfiles.Client{}))
			delays := joinDelays(b, cluster, template, conn, b.Loop)
			b.ReportMetric(percentile(delays, 50), "p50-ms")
			b.ReportMetric(percentile(delays, 99), "p99-ms")
			b.ReportMetric(percentile(delays, 100), "max-ms")
		})
	}
}

// percentile is the p-th percentile of sorted delays, in milliseconds.
func percentile(delays []time.Duration, p float64) float64 {
	return float64(delays[min(int(float64(len(delays))*p/100+0.999999)-1, len(delays)-1)]) / 1e6
}
