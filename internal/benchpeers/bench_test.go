package benchpeers_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/routeguide-cluster/routeguide/internal/load"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/etcdtest"
)

var rounds = flag.Int("peers.rounds", 3, "rounds of BenchmarkPeers; each runs every framework once, in turn")

// callers is the load's concurrency: closed-loop workers, one call each in flight.
const callers = 16

// measure is one framework's figures in one round.
type measure struct {
	calls, failed int
	errors        map[string]int // failed calls by code
	qps           float64
	p50, p99      time.Duration
	nodeCPU       time.Duration // per call, the three nodes together
	clientCPU     time.Duration // per call, this process: client, load generator and etcd
}

// BenchmarkPeers runs the same GetFeature load (random points of the
// built-in features, 16 callers, closed loop, one load generator) against
// the three clusters, all started at once, framework after framework in
// each round so that the machine's noise falls on all of them alike. It
// prints the table of docs/BENCHMARKS.md's "Peers" at the end.
func BenchmarkPeers(b *testing.B) {
	etcd := etcdtest.Start(b)
	kv := etcdtest.Client(b, etcd.ClientURL())
	var clusters []*cluster
	for _, fw := range frameworks {
		clusters = append(clusters, startCluster(b, fw, etcd, kv))
	}
	loadBefore := loadAverage()
	results := map[string][]measure{}
	for r := range *rounds {
		b.Run(fmt.Sprintf("round=%d", r+1), func(b *testing.B) {
			for _, c := range clusters {
				b.Run("framework="+c.fw.name, func(b *testing.B) {
					m := measureGetFeature(b, c)
					// The last run of a sub-benchmark, the longest, is the one go test reports.
					got := results[c.fw.name]
					if len(got) > r {
						got[r] = m
					} else {
						results[c.fw.name] = append(got, m)
					}
				})
			}
		})
	}
	printPeersTable(os.Stdout, results, loadBefore, loadAverage())
}

// measureGetFeature makes b.N calls over the cluster's client and reports them.
func measureGetFeature(b *testing.B, c *cluster) measure {
	nodesBefore, clientBefore := c.nodesCPU(b), testutils.ProcessCPUTime(b)
	b.ResetTimer()
	res, err := load.Run(context.Background(), c.conn, load.Config{RPC: load.Get, Concurrency: callers, Requests: b.N, Timeout: 5 * time.Second})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	calls := max(res.OK+res.Failed, 1)
	m := measure{
		calls: res.OK + res.Failed, failed: res.Failed, errors: res.Errors, qps: res.QPS, p50: res.P50, p99: res.P99,
		nodeCPU:   (c.nodesCPU(b) - nodesBefore) / time.Duration(calls),
		clientCPU: (testutils.ProcessCPUTime(b) - clientBefore) / time.Duration(calls),
	}
	b.ReportMetric(m.qps, "qps")
	b.ReportMetric(float64(m.p50)/1e6, "p50-ms")
	b.ReportMetric(float64(m.p99)/1e6, "p99-ms")
	b.ReportMetric(float64(m.failed), "failed")
	b.ReportMetric(float64(m.nodeCPU), "node-cpu-ns/op")
	b.ReportMetric(float64(m.clientCPU), "client-cpu-ns/op")
	return m
}

// printPeersTable writes, per framework, the medians over the rounds, and
// ours divided by it: the median of the rounds' ratios, which pair runs
// made one after the other, with their range.
func printPeersTable(w io.Writer, results map[string][]measure, loadBefore, loadAfter string) {
	qps := func(m measure) float64 { return m.qps }
	p50 := func(m measure) float64 { return float64(m.p50) }
	p99 := func(m measure) float64 { return float64(m.p99) }
	nodeCPU := func(m measure) float64 { return float64(m.nodeCPU) }
	clientCPU := func(m measure) float64 { return float64(m.clientCPU) }
	fmt.Fprintf(w, "\nPeers: GetFeature, %d callers, 3 nodes each; medians of %d rounds; load average before %s, after %s\n", callers, *rounds, loadBefore, loadAfter)
	fmt.Fprintf(w, "versions: %s\n", versions())
	fmt.Fprintln(w, "| framework | QPS | p50 | p99 | failed / calls | node CPU per call | client CPU per call | ours/it: QPS | p99 | node CPU |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	ours := results["ours"]
	for _, fw := range frameworks {
		ms := results[fw.name]
		if len(ms) == 0 {
			continue
		}
		failed, calls, errs := 0, 0, map[string]int{}
		for _, m := range ms {
			failed, calls = failed+m.failed, calls+m.calls
			for code, n := range m.errors {
				errs[code] += n
			}
		}
		ratios := "— | — | —"
		if fw.name != "ours" && len(ours) == len(ms) {
			ratios = pairedRatio(ours, ms, qps) + " | " + pairedRatio(ours, ms, p99) + " | " + pairedRatio(ours, ms, nodeCPU)
		}
		fmt.Fprintf(w, "| %s | %.0f | %v | %v | %d%s / %d | %v | %v | %s |\n", fw.name, medianOf(ms, qps),
			time.Duration(medianOf(ms, p50)).Round(time.Microsecond), time.Duration(medianOf(ms, p99)).Round(time.Microsecond),
			failed, codesOf(errs), calls,
			time.Duration(medianOf(ms, nodeCPU)).Round(100*time.Nanosecond), time.Duration(medianOf(ms, clientCPU)).Round(100*time.Nanosecond),
			ratios)
	}
}

// pairedRatio is the median over the rounds of ours' figure divided by the
// peer's in the same round, and the range of those ratios.
func pairedRatio(ours, peer []measure, f func(measure) float64) string {
	ratios := make([]float64, len(ours))
	for i := range ours {
		ratios[i] = f(ours[i]) / f(peer[i])
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", median(ratios), slices.Min(ratios), slices.Max(ratios))
}

// medianOf is the median of f over ms.
func medianOf(ms []measure, f func(measure) float64) float64 {
	vs := make([]float64, len(ms))
	for i, m := range ms {
		vs[i] = f(m)
	}
	return median(vs)
}

func median(vs []float64) float64 {
	vs = slices.Sorted(slices.Values(vs))
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

// loadAverage is the machine's 1, 5 and 15 minute load averages, as uptime prints them.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}

// versions names the modules the figures depend on, as this module
// resolves them (a test binary carries no build information of its deps).
func versions() string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}", "google.golang.org/grpc",
		"go.etcd.io/etcd/client/v3", "go.etcd.io/etcd/server/v3", "github.com/zeromicro/go-zero").Output()
	if err != nil {
		return runtime.Version() + ", modules unknown: " + err.Error()
	}
	return runtime.Version() + ", " + strings.Join(strings.Split(strings.TrimSpace(string(out)), "\n"), ", ")
}
