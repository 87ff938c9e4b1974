package load

import (
	"fmt"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// BenchmarkRun measures one node on this machine through the whole client
// stack, as `client load` would: every b.N is one call. It reports the
// throughput and latency percentiles of the run:
//
//	go test -run '^$' -bench Run -benchtime 20000x ./internal/load/
func BenchmarkRun(b *testing.B) {
	n := nodetest.Start(b, "n1")
	conn := dial(b, n.Addr().String(), true)
	for _, rpc := range []RPC{Get, Mix} {
		for _, concurrency := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("rpc=%s/concurrency=%d", rpc, concurrency), func(b *testing.B) {
				b.ReportAllocs()
				res, err := Run(b.Context(), conn, Config{RPC: rpc, Concurrency: concurrency, Requests: b.N, Timeout: 10 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				if res.Failed != 0 {
					b.Fatalf("%d calls failed: %v", res.Failed, res.Errors)
				}
				b.ReportMetric(res.QPS, "qps")
				b.ReportMetric(float64(res.P50)/float64(time.Millisecond), "p50_ms")
				b.ReportMetric(float64(res.P99)/float64(time.Millisecond), "p99_ms")
			})
		}
	}
}
