package devcluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/discovery"
	"github.com/routeguide-cluster/routeguide/internal/answerlog"
	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/devcluster"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/node"
	"github.com/routeguide-cluster/routeguide/internal/poll"
)

// benchCluster starts an embedded etcd and nodes nodes as the tests'
// nodeTemplate does, logging nowhere, until b ends.
func benchCluster(b *testing.B, nodes int) (*devcluster.Cluster, node.Config) {
	b.Helper()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.LeaseTTL = 3 * time.Second
	cfg.DrainDelay = 200 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Config{Nodes: nodes, Node: cfg, EtcdAddr: "127.0.0.1:0", Logger: cfg.Logger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, cfg
}

func benchDial(b *testing.B, target, etcdURL string) *clientcli.Conn {
	b.Helper()
	conn, err := clientcli.Dial(context.Background(), target, []string{etcdURL})
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
// the inverse of throughput; qps and p99-ms are the load generator's.
//
//	go test -run '^$' -bench ClusterGetFeature -count 6 ./internal/devcluster/
//
// On one machine the three nodes share its cores with the client, so the
// ratio measures what discovery and balancing cost, not how a cluster scales.
func BenchmarkClusterGetFeature(b *testing.B) {
	cluster, _ := benchCluster(b, 3)
	targets := []struct{ name, target string }{
		{"nodes=1", cluster.Nodes()[0].AdvertisedAddr()},
		{"nodes=3", "etcd:///routeguide"},
	}
	for _, concurrency := range []int{1, 4, 16, 64} {
		for _, tc := range targets {
			b.Run(fmt.Sprintf("concurrency=%d/%s", concurrency, tc.name), func(b *testing.B) {
				conn := benchDial(b, tc.target, cluster.EtcdURL())
				if tc.name == "nodes=3" {
					waitNodesAnswer(b, conn, 3)
				}
				b.ResetTimer()
				res, err := load.Run(context.Background(), conn, load.Config{
					RPC: load.Get, Concurrency: concurrency, Requests: b.N, Timeout: 10 * time.Second, Seed: 1,
				})
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
			})
		}
	}
}

// waitNodesAnswer makes calls until n nodes have answered: from then on the
// round robin holds them all.
func waitNodesAnswer(b *testing.B, conn *clientcli.Conn, n int) {
	b.Helper()
	calls := answerlog.New(conn)
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
//	go test -run '^$' -bench JoinLatency -benchtime 100x ./internal/devcluster/
func BenchmarkJoinLatency(b *testing.B) {
	cluster, template := benchCluster(b, 2)
	conn := benchDial(b, "etcd:///routeguide", cluster.EtcdURL())
	waitNodesAnswer(b, conn, 2)
	registry := watchRegistry(b, cluster.EtcdURL())
	calls := answerlog.New(conn)
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan load.Result, 1)
	go func() {
		res, _ := load.Run(ctx, calls, load.Config{RPC: load.Get, Concurrency: 8, Duration: time.Hour, Timeout: 5 * time.Second})
		loaded <- res
	}()
	b.Cleanup(func() { cancel(); <-loaded })

	var delays []time.Duration
	for i := 0; b.Loop(); i++ {
		cfg := template
		cfg.NodeID = fmt.Sprintf("join-%d", i+1)
		key := discovery.Prefix(cfg.Service) + cfg.NodeID
		n, err := cluster.StartNode(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		poll.Until(b, 5*time.Second, "the watch to see "+key, func() bool { return !registry.putAt(key).IsZero() })
		poll.Until(b, 5*time.Second, cfg.NodeID+" to answer a call", func() bool { return !calls.First(cfg.NodeID).IsZero() })
		delays = append(delays, calls.First(cfg.NodeID).Sub(registry.putAt(key)))
		if err := cluster.StopNode(n); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	if res := <-loaded; res.Failed != 0 {
		b.Errorf("%d calls failed while nodes joined and left: %v", res.Failed, res.Errors)
	}
	loaded <- load.Result{} // for the cleanup
	slices.Sort(delays)
	pct := func(p float64) float64 {
		return float64(delays[min(int(float64(len(delays))*p/100+0.999999)-1, len(delays)-1)]) / 1e6
	}
	b.ReportMetric(pct(50), "p50-ms")
	b.ReportMetric(pct(99), "p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1])/1e6, "max-ms")
}
