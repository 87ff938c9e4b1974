package balancer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/leastrequest"       // least_request_experimental, measured against ours
	_ "google.golang.org/grpc/balancer/weightedroundrobin" // weighted_round_robin, measured against ours
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// grayNode is a RouteGuide node for the gray-failure comparison: it answers
// GetFeature at once, or late, or only in the last 20ms of every 100ms (a
// process paused the rest of the time, as SIGSTOP would), and reports its
// load per call over ORCA for weighted_round_robin: the calls of the last
// second as qps, and the time they spent in the handler per second as
// application utilization (its own view of how slow it is).
type grayNode struct {
	pb.UnimplementedRouteGuideServer
	late   time.Duration
	paused bool
	start  time.Time

	mu               sync.Mutex
	second           int64
	calls, prevCalls float64
	busy, prevBusy   time.Duration
}

func (n *grayNode) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	begin := time.Now()
	wait := n.late
	if n.paused {
		const cycle, pause = 100 * time.Millisecond, 80 * time.Millisecond
		if phase := begin.Sub(n.start) % cycle; phase < pause {
			wait = pause - phase
		}
	}
	if wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	qps, util := n.record(begin, time.Since(begin))
	if rec := orca.CallMetricsRecorderFromContext(ctx); rec != nil && qps > 0 {
		rec.SetQPS(qps)
		rec.SetApplicationUtilization(max(util, 1e-6))
	}
	return &pb.Feature{}, nil
}

// record counts a call that began at begin and took took, and returns the
// last full second's qps and utilization.
func (n *grayNode) record(begin time.Time, took time.Duration) (qps, util float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := int64(begin.Sub(n.start) / time.Second); s != n.second {
		n.prevCalls, n.prevBusy = n.calls, n.busy
		if s > n.second+1 {
			n.prevCalls, n.prevBusy = 0, 0
		}
		n.second, n.calls, n.busy = s, 0, 0
	}
	n.calls++
	n.busy += took
	return n.prevCalls, n.prevBusy.Seconds()
}

func startGrayNode(b *testing.B, n *grayNode) string {
	n.start = time.Now()
	srv := grpc.NewServer(append(ServerOptions(), orca.CallMetricsServerOption(nil))...)
	pb.RegisterRouteGuideServer(srv, n)
	hs := health.NewServer()
	hs.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	return grpctest.Serve(b, srv)
}

// grayPolicies are the policies compared, as service config entries.
var grayPolicies = []struct{ name, config string }{
	{"ours", ""},
	{"round_robin", `"round_robin":{}`},
	{"least_request", `"least_request_experimental":{"choiceCount":2}`},
	{"wrr_orca", `"weighted_round_robin":{"blackoutPeriod":"1s","weightUpdatePeriod":"0.1s"}`},
}

// grayRun is one policy's run on one scenario.
type grayRun struct {
	calls, failed int
	slowCalls     int
	latencies     []time.Duration
}

func (r *grayRun) add(o grayRun) {
	r.calls += o.calls
	r.failed += o.failed
	r.slowCalls += o.slowCalls
	r.latencies = append(r.latencies, o.latencies...)
}

func (r *grayRun) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(q*float64(len(r.latencies)-1))]
}

// runGray dials addrs under policy and makes GetFeature calls from 16
// workers for d, counting the calls that went to slow.
func runGray(b *testing.B, policyConfig string, addrs []string, slow string, d time.Duration) grayRun {
	r := manual.NewBuilderWithScheme("gray")
	var state resolver.State
	for _, a := range addrs {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	r.InitialState(state)
	opts := dialOptions(b)
	if policyConfig != "" {
		opts = append(opts, grpc.WithDefaultServiceConfig(strings.Replace(ServiceConfig, `"`+Name+`":{}`, policyConfig, 1)))
	}
	conn, err := grpc.NewClient("gray:///routeguide", append(opts, grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewRouteGuideClient(conn)
	// Every node connected before the clock starts.
	seen := map[string]bool{}
	for len(seen) < len(addrs) {
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
			b.Fatal(err)
		}
		seen[p.Addr.String()] = true
	}

	var mu sync.Mutex
	var total grayRun
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			var mine grayRun
			for time.Now().Before(end) {
				var p peer.Peer
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				_, err := client.GetFeature(ctx, &pb.Point{}, grpc.Peer(&p))
				mine.latencies = append(mine.latencies, time.Since(start))
				cancel()
				mine.calls++
				if err != nil {
					mine.failed++
				} else if p.Addr.String() == slow {
					mine.slowCalls++
				}
			}
			mu.Lock()
			total.add(mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

// BenchmarkGrayFailure compares the policies on three in-process nodes, one
// of them paused 80ms of every 100ms, or answering 50ms late, with 16
// workers of GetFeature; each policy runs for 3s in turn, rounds times, and
// the table gives each one's totals: calls (throughput), the slow node's
// share, p50, p99 and p99.9, failed calls.
//
//	go test -run '^$' -bench GrayFailure -benchtime 1x ./balancer/
func BenchmarkGrayFailure(b *testing.B) {
	const rounds, each = 3, 3 * time.Second
	for _, scenario := range []struct {
		name string
		slow *grayNode
	}{
		{"paused-80-of-100ms", &grayNode{paused: true}},
		{"late-50ms", &grayNode{late: 50 * time.Millisecond}},
		{"healthy", &grayNode{}},
	} {
		b.Run(scenario.name, func(b *testing.B) {
			addrs := []string{startGrayNode(b, &grayNode{}), startGrayNode(b, &grayNode{}), startGrayNode(b, scenario.slow)}
			for b.Loop() {
				runs := make([]grayRun, len(grayPolicies))
				for range rounds {
					for i, p := range grayPolicies {
						runs[i].add(runGray(b, p.config, addrs, addrs[2], each))
					}
				}
				var table strings.Builder
				fmt.Fprintf(&table, "%-14s %8s %9s %9s %9s %9s %6s\n", "policy", "calls", "3rd-node", "p50", "p99", "p99.9", "failed")
				for i, p := range grayPolicies {
					r := &runs[i]
					slices.Sort(r.latencies)
					fmt.Fprintf(&table, "%-14s %8d %8.1f%% %9v %9v %9v %6d\n", p.name, r.calls, 100*float64(r.slowCalls)/float64(r.calls),
						r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond), r.quantile(0.999).Round(time.Microsecond), r.failed)
				}
				b.Logf("%s, %d rounds of %v per policy:\n%s", scenario.name, rounds, each, table.String())
				ours, rr := &runs[0], &runs[1]
				b.ReportMetric(float64(ours.calls)/float64(rr.calls), "calls-ours/rr")
				b.ReportMetric(float64(ours.quantile(0.99))/float64(rr.quantile(0.99)), "p99-ours/rr")
				b.ReportMetric(100*float64(ours.slowCalls)/float64(ours.calls), "3rd-node-%-ours")
			}
		})
	}
}
