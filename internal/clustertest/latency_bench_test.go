package clustertest

import (
	"fmt"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/clientcli"
	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/localetcd"
	"github.com/routeguide-cluster/routeguide/internal/testutils/loadtest"
)

// BenchmarkLatencyAtLoad is latency under load rather than throughput: node
// processes registered in a real etcd, and this process as their client
// through etcd:///routeguide, as `client load` is. For 1 and 3 nodes it first
// measures their capacity for GetFeature (a closed loop of 64 callers), then
// sends open-loop load at 25%, 50% and 75% of it and reports p50, p99 and
// p99.9 measured from when each call was due:
//
//	go test -run '^$' -bench LatencyAtLoad -benchtime 1x ./internal/clustertest/
//
// Every step, a warm-up of 16 callers first, lasts latencyStep; -benchtime
// 1x is the point, as each step is one timed run, not b.N calls. The open
// steps need the closed one: filter by nodes, not by load.
func BenchmarkLatencyAtLoad(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			conn := latencyCluster(b, nodes)
			run := func(b *testing.B, cfg load.Config) load.Result {
				cfg.RPC, cfg.Duration, cfg.Timeout, cfg.Seed = load.Get, latencyStep, 10*time.Second, 1
				res, err := load.Run(b.Context(), conn, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if res.Failed != 0 {
					b.Fatalf("%d calls failed: %v", res.Failed, res.Errors)
				}
				return res
			}
			run(b, load.Config{Concurrency: 16}) // warm up: connections, caches, the nodes' heaps
			var capacity float64
			b.Run("load=closed", func(b *testing.B) {
				res := run(b, load.Config{Concurrency: 64})
				capacity = res.QPS
				reportLatency(b, res)
			})
			if capacity == 0 {
				b.Fatal("no capacity measured: the load=closed step did not run (a -bench filter?)")
			}
			for _, percent := range []int{25, 50, 75} {
				b.Run(fmt.Sprintf("load=%d%%", percent), func(b *testing.B) {
					// Room for 256 calls in flight: at 75% of about 30,000
					// calls a second, only a stall of some 10ms fills it and
					// makes a call wait for a worker.
					res := run(b, load.Config{Concurrency: 256, Rate: capacity * float64(percent) / 100})
					reportLatency(b, res)
					b.ReportMetric(float64(res.Late), "late")
					b.ReportMetric(float64(res.Unsent), "unsent")
				})
			}
		})
	}
}

// latencyStep is how long each step of BenchmarkLatencyAtLoad runs.
const latencyStep = 10 * time.Second

func reportLatency(b *testing.B, res load.Result) {
	b.ReportMetric(res.QPS, "qps")
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"p50-ms", res.P50}, {"p99-ms", res.P99}, {"p99.9-ms", res.P999}} {
		b.ReportMetric(float64(p.d)/float64(time.Millisecond), p.name)
	}
}

// latencyCluster starts a real etcd and nodes node processes registered in
// it, and returns a client of theirs once every node has answered.
func latencyCluster(b *testing.B, nodes int) *clientcli.Conn {
	b.Helper()
	etcd, err := localetcd.Start(localetcd.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(etcd.Close)
	var started []*clusterNode
	for i := range nodes {
		started = append(started, startClusterNode(b, etcd.ClientURL(), fmt.Sprintf("n%d", i+1)))
	}
	conn := etcdClient.dial(b, etcd.ClientURL(), started)
	waitEveryNodeAnswers(b, loadtest.NewLog(conn), started)
	return conn
}
