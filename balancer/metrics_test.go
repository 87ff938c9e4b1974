package balancer

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver/manual"

	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
	"github.com/routeguide-cluster/routeguide/routeguide/contract"
)

// gather returns the value of every series of metric name, by the value of
// label key.
func gather(t *testing.T, reg *prometheus.Registry, name, key string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			values[label(m, key)] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return values
}

func label(m *dto.Metric, key string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == key {
			return l.GetValue()
		}
	}
	return ""
}

func newMetrics(t *testing.T) (*prometheus.Registry, *Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return reg, metrics
}

// dialWithMetrics connects to backends through a manual resolver, with
// metrics, and returns once every backend has answered.
func dialWithMetrics(t *testing.T, metrics *Metrics, backends []*backend) (*manual.Resolver, *grpc.ClientConn) {
	t.Helper()
	r := manual.NewBuilderWithScheme("test")
	r.InitialState(stateOf(backends))
	opts := append(dialOptions(t, WithMetrics(metrics)), grpc.WithResolvers(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient("test:///routeguide", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	poll.Until(t, 10*time.Second, "calls on every backend", func() bool { return len(callsPerBackend(t, conn, 10*len(backends))) == len(backends) })
	return r, conn
}

func TestMetricsCountPicksPerEndpointAndReadyEndpoints(t *testing.T) {
	reg, metrics := newMetrics(t)
	backends := startBackends(t, 3)
	_, conn := dialWithMetrics(t, metrics, backends)
	if got := gather(t, reg, "routeguide_balancer_ready_endpoints", "target")["test:///routeguide"]; got != 3 {
		t.Errorf("ready endpoints = %v, want 3", got)
	}

	before := gather(t, reg, "routeguide_balancer_picks_total", "addr")
	// The policy picks by latency, so a backend may get none of a short
	// burst; each backend's count must match the calls it served.
	const calls = 300
	served := callsPerBackend(t, conn, calls)
	after := gather(t, reg, "routeguide_balancer_picks_total", "addr")
	total := 0.0
	for _, b := range backends {
		picked := after[b.addr] - before[b.addr]
		total += picked
		if picked != float64(served[b.addr]) {
			t.Errorf("%s: %v picks counted, %d calls served", b.addr, picked, served[b.addr])
		}
	}
	if total != calls {
		t.Errorf("%v picks counted for %d calls", total, calls)
	}

	backends[0].health.SetServingStatus(contract.HealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	poll.Until(t, 10*time.Second, "2 ready endpoints", func() bool {
		return gather(t, reg, "routeguide_balancer_ready_endpoints", "target")["test:///routeguide"] == 2
	})
}

func TestAnEndpointThatLeavesTakesItsPickSeriesAlong(t *testing.T) {
	reg, metrics := newMetrics(t)
	backends := startBackends(t, 3)
	r, _ := dialWithMetrics(t, metrics, backends)

	r.UpdateState(stateOf(backends[1:]))
	poll.Until(t, 10*time.Second, "the pick series of the endpoint that left to go", func() bool {
		_, left := gather(t, reg, "routeguide_balancer_picks_total", "addr")[backends[0].addr]
		return !left
	})
	if got := gather(t, reg, "routeguide_balancer_picks_total", "addr"); len(got) != 2 {
		t.Errorf("pick series %v, want the 2 endpoints that stayed", got)
	}
}

func TestAPickSeriesSharedByTwoConnectionsStaysWhileOneStillUsesIt(t *testing.T) {
	reg, metrics := newMetrics(t)
	backends := startBackends(t, 2)
	leaving, leavingConn := dialWithMetrics(t, metrics, backends)
	_, staying := dialWithMetrics(t, metrics, backends)

	// One connection loses backends[0]; the other still picks it.
	leaving.UpdateState(stateOf(backends[1:]))
	poll.Until(t, 10*time.Second, "no pick of the endpoint that left", func() bool {
		_, picked := callsPerBackend(t, leavingConn, 20)[backends[0].addr]
		return !picked
	})
	before := gather(t, reg, "routeguide_balancer_picks_total", "addr")[backends[0].addr]
	// The staying connection picks backends[0] within a second or so (it
	// picks by latency, and probes a backend it has not picked for a second).
	poll.Until(t, 10*time.Second, "the staying connection's picks of the endpoint counted", func() bool {
		picked := callsPerBackend(t, staying, 5)[backends[0].addr]
		after, ok := gather(t, reg, "routeguide_balancer_picks_total", "addr")[backends[0].addr]
		if !ok {
			t.Fatalf("the pick series of %s is gone while a connection still picks it", backends[0].addr)
		}
		return picked > 0 && after >= before+float64(picked)
	})
}

// TestMetricsReportEachEndpointsLatencyAndCallsInFlight: the latency EWMA
// and calls in flight of each endpoint, read at scrape time.
func TestMetricsReportEachEndpointsLatencyAndCallsInFlight(t *testing.T) {
	reg, metrics := newMetrics(t)
	fast, slow := startGuideNode(t, "fast", answers), startGuideNode(t, "slow", answers)
	client := dialGuideOpts(t, []*guideNode{fast, slow}, WithMetrics(metrics))
	slow.delay.Store(int64(200 * time.Millisecond))
	load := startLoad(t, client, 4)
	poll.Until(t, 20*time.Second, "a call in flight on the slow node, and its latency above 100ms", func() bool {
		return gather(t, reg, "routeguide_balancer_in_flight_calls", "addr")[slow.addr] >= 1 &&
			gather(t, reg, "routeguide_balancer_latency_seconds", "addr")[slow.addr] >= 0.1
	})
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("%d calls failed: %v", len(errs), errs[0])
	}
	latency := gather(t, reg, "routeguide_balancer_latency_seconds", "addr")
	if latency[fast.addr] <= 0 || latency[fast.addr] >= latency[slow.addr] {
		t.Errorf("latency %v: want the fast node's measured, and below the slow one's", latency)
	}
	if inflight := gather(t, reg, "routeguide_balancer_in_flight_calls", "addr"); inflight[fast.addr]+inflight[slow.addr] != 0 {
		t.Errorf("calls in flight %v once the load stopped, want none", inflight)
	}
	if ejected := gather(t, reg, "routeguide_balancer_ejected", "addr"); len(ejected) != 2 || ejected[fast.addr]+ejected[slow.addr] != 0 {
		t.Errorf("ejected %v, want both endpoints' series, at 0", ejected)
	}
}
