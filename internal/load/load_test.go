package load

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils"
	"github.com/routeguide-cluster/routeguide/internal/testutils/grpctest"
	"github.com/routeguide-cluster/routeguide/internal/testutils/nodetest"
)

// dial connects to addr and, unless it is dead, makes one call so that the
// connection's own goroutines exist before a test counts goroutines.
func dial(tb testing.TB, addr string, warm bool) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	if warm {
		if _, err := pb.NewRouteGuideClient(conn).GetFeature(context.Background(), &pb.Point{}); err != nil {
			tb.Fatal(err)
		}
	}
	return conn
}

func TestRunMakesExactlyTheRequestedCallsOfEachRPC(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	const requests = 200
	for _, rpc := range []RPC{Get, List, Record, Chat, Mix} {
		t.Run(string(rpc), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			res, err := Run(t.Context(), conn, Config{RPC: rpc, Concurrency: 8, Requests: requests, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != requests || res.Failed != 0 || len(res.Errors) != 0 {
				t.Errorf("ok %d, failed %d, errors %v; want ok %d and no failure", res.OK, res.Failed, res.Errors, requests)
			}
			if want := map[string]int{"n1": requests}; !maps.Equal(res.ByNode, want) {
				t.Errorf("by node %v, want %v", res.ByNode, want)
			}
			if !(0 < res.P50 && res.P50 <= res.P90 && res.P90 <= res.P99) {
				t.Errorf("percentiles p50 %v, p90 %v, p99 %v are not positive and ordered", res.P50, res.P90, res.P99)
			}
			if res.QPS <= 0 || res.Elapsed <= 0 {
				t.Errorf("qps %v over %v, want both positive", res.QPS, res.Elapsed)
			}
		})
	}
}

func TestRunAgainstDeadAddressFailsEveryCallUnavailable(t *testing.T) {
	// The connection starts connecting during the run, so goroutines are
	// counted once it is closed.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	conn := dial(t, testutils.UnreachableAddr(t), false)
	defer conn.Close()
	const requests = 50
	res, err := Run(t.Context(), conn, Config{RPC: Get, Concurrency: 4, Requests: requests, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != requests || res.Errors["Unavailable"] != requests || len(res.Errors) != 1 {
		t.Errorf("ok %d, failed %d, errors %v; want %d failed, all Unavailable", res.OK, res.Failed, res.Errors, requests)
	}
	if len(res.ByNode) != 0 {
		t.Errorf("by node %v, want no node: none answered", res.ByNode)
	}
	if res.P50 != 0 || res.P99 != 0 {
		t.Errorf("p50 %v, p99 %v; want 0 with no call succeeding", res.P50, res.P99)
	}
}

func TestRunGivesEachCallItsOwnDeadline(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	const requests = 30
	for _, rpc := range []RPC{Get, List, Record, Chat} {
		t.Run(string(rpc), func(t *testing.T) {
			res, err := Run(t.Context(), conn, Config{RPC: rpc, Concurrency: 3, Requests: requests, Timeout: time.Nanosecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed != requests || res.Errors["DeadlineExceeded"] != requests {
				t.Errorf("failed %d, errors %v; want all %d DeadlineExceeded", res.Failed, res.Errors, requests)
			}
		})
	}
}

func TestRunForADurationStopsStartingCallsAfterIt(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const duration = 150 * time.Millisecond
	start := time.Now()
	res, err := Run(t.Context(), conn, Config{RPC: Mix, Concurrency: 4, Duration: duration, Timeout: 10 * time.Second})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.Failed != 0 {
		t.Errorf("ok %d, failed %d; want some calls and no failure", res.OK, res.Failed)
	}
	if res.Elapsed < duration || took > duration+5*time.Second {
		t.Errorf("run took %v (measured %v); want at least %v and not much more", took, res.Elapsed, duration)
	}
}

// hangs answers no call: each waits until its caller gives up, as a node
// that froze would.
type hangs struct {
	pb.UnimplementedRouteGuideServer
}

func (hangs) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (hangs) RecordRoute(stream pb.RouteGuide_RecordRouteServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

func TestRunForADurationEndsOnTimeWhenCallsHang(t *testing.T) {
	conn := dial(t, serve(t, hangs{}), false)
	const duration, concurrency = 300 * time.Millisecond, 4
	for _, rpc := range []RPC{Get, Record} {
		t.Run(string(rpc), func(t *testing.T) {
			start := time.Now()
			res, err := Run(t.Context(), conn, Config{RPC: rpc, Concurrency: concurrency, Duration: duration, Timeout: time.Minute})
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			// A bound on behaviour, not a benchmark: the run lasts its
			// duration and EndGrace, not its calls' minute.
			if took > duration+EndGrace+3*time.Second {
				t.Errorf("a %v run took %v; want it over within %v of grace", duration, took, EndGrace)
			}
			if res.OK != 0 || res.Failed != concurrency || res.Errors["DeadlineExceeded"] != concurrency {
				t.Errorf("ok %d, failed %d, errors %v; want the %d calls in flight failed DeadlineExceeded", res.OK, res.Failed, res.Errors, concurrency)
			}
		})
	}
}

func TestRunStopsEarlyWhenItsContextEnds(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := Run(ctx, conn, Config{
		RPC: Mix, Concurrency: 8, Duration: time.Hour, Timeout: 10 * time.Second,
		ProgressInterval: time.Millisecond,
		Progress: func(p Progress) {
			if p.Done >= 100 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK < 100 || res.Failed != 0 {
		t.Errorf("ok %d, failed %d; want at least 100 ok, and calls cut short not counted as failed", res.OK, res.Failed)
	}
}

func TestProgressIsReportedUpToTheFinalCounts(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	const requests = 300
	var reports []Progress
	_, err := Run(t.Context(), conn, Config{
		RPC: Get, Concurrency: 4, Requests: requests, Timeout: 10 * time.Second,
		ProgressInterval: time.Millisecond,
		Progress:         func(p Progress) { reports = append(reports, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) == 0 {
		t.Fatal("Progress was never called")
	}
	last := reports[len(reports)-1]
	if last.Done != requests || last.OK != requests || last.Requests != requests {
		t.Errorf("final progress %+v; want done = ok = requests = %d", last, requests)
	}
	if !slices.IsSortedFunc(reports, func(a, b Progress) int { return a.Done - b.Done }) {
		t.Errorf("done went backwards: %+v", reports)
	}
}

func TestConfigValidateNamesTheFlagAtFault(t *testing.T) {
	good := Config{RPC: Get, Concurrency: 1, Requests: 1, Timeout: time.Second}
	tests := []struct {
		name   string
		change func(*Config)
		flag   string // "" for valid
	}{
		{"valid by requests", func(*Config) {}, ""},
		{"valid by duration", func(c *Config) { c.Requests, c.Duration = 0, time.Second }, ""},
		{"unknown rpc", func(c *Config) { c.RPC = "put" }, "--rpc"},
		{"no worker", func(c *Config) { c.Concurrency = 0 }, "--concurrency"},
		{"negative requests", func(c *Config) { c.Requests = -1 }, "--requests"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "--duration"},
		{"both ends", func(c *Config) { c.Duration = time.Second }, "--duration and --requests"},
		{"no end", func(c *Config) { c.Requests = 0 }, "--duration or --requests"},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, "--timeout"},
		{"valid open loop", func(c *Config) { c.Rate = 0.5 }, ""},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rps"},
		{"rate not a number", func(c *Config) { c.Rate = math.NaN() }, "--rps"},
		{"infinite rate", func(c *Config) { c.Rate = math.Inf(1) }, "--rps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.flag == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.flag != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.flag+":")):
				t.Errorf("Validate() = %v, want an error starting %q", err, tt.flag+":")
			}
		})
	}
}

func TestRunRejectsAnInvalidConfigBeforeCalling(t *testing.T) {
	conn := dial(t, testutils.UnreachableAddr(t), false)
	if _, err := Run(t.Context(), conn, Config{RPC: Get, Requests: 1, Timeout: time.Second}); err == nil {
		t.Error("Run with concurrency 0 succeeded")
	}
}

func TestResultMarshalsToTheDocumentedShape(t *testing.T) {
	tests := []struct {
		name string
		res  Result
		want string
	}{
		{
			name: "full",
			res: Result{
				OK: 10, Failed: 2, Errors: map[string]int{"Unavailable": 2}, QPS: 1234.56789,
				P50: 1500 * time.Microsecond, P90: 2 * time.Millisecond, P99: 12345678 * time.Nanosecond,
				P999: 20 * time.Millisecond, Late: 3, Unsent: 1,
				ByNode: map[string]int{"n1": 6, "n2": 4}, Elapsed: time.Second,
			},
			want: `{"ok":10,"failed":2,"errors":{"Unavailable":2},"qps":1234.568,"p50_ms":1.5,"p90_ms":2,"p99_ms":12.346,"p999_ms":20,"late":3,"unsent":1,"by_node":{"n1":6,"n2":4}}`,
		},
		{
			name: "empty maps are objects",
			res:  Result{},
			want: `{"ok":0,"failed":0,"errors":{},"qps":0,"p50_ms":0,"p90_ms":0,"p99_ms":0,"p999_ms":0,"late":0,"unsent":0,"by_node":{}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.res)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			var back Result
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if again, _ := json.Marshal(back); string(again) != tt.want {
				t.Errorf("round trip gave %s", again)
			}
		})
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", []time.Duration{7}, 99, 7},
		{"p50 of 100", hundred, 50, 50},
		{"p90 of 100", hundred, 90, 90},
		{"p99 of 100", hundred, 99, 99},
		{"p50 of 3", hundred[:3], 50, 2},
		{"p99 of 3", hundred[:3], 99, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestRPCFlagAcceptsOnlyKnownNames(t *testing.T) {
	var r RPC
	for _, name := range []string{"get", "list", "record", "chat", "mix"} {
		if err := r.Set(name); err != nil || r != RPC(name) {
			t.Errorf("Set(%q) = %v, rpc %q", name, err, r)
		}
	}
	if err := r.Set("GET"); err == nil {
		t.Error(`Set("GET") succeeded`)
	}
}

// stalls holds the first GetFeature until release is closed, and answers
// every other call at once: a node that froze for a moment.
type stalls struct {
	pb.UnimplementedRouteGuideServer
	first   atomic.Bool
	release chan struct{}
}

func (s *stalls) GetFeature(ctx context.Context, _ *pb.Point) (*pb.Feature, error) {
	if s.first.CompareAndSwap(false, true) {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &pb.Feature{}, nil
}

// serve serves srv on a real gRPC server until t ends, and returns its address.
func serve(t *testing.T, srv pb.RouteGuideServer) string {
	t.Helper()
	server := grpc.NewServer()
	pb.RegisterRouteGuideServer(server, srv)
	return grpctest.Serve(t, server)
}

// TestOpenLoopCountsAStallInEveryCallItDelayed is coordinated omission, and
// its cure: one worker, a call due every 10ms, and a node that holds the
// first call for 300ms. A closed loop waits with the node and sees one slow
// call; callers at a fixed rate would each have waited, and the open loop
// measures every delayed call from when it was due.
func TestOpenLoopCountsAStallInEveryCallItDelayed(t *testing.T) {
	const requests, stall = 20, 300 * time.Millisecond
	for _, rate := range []float64{0, 100} {
		t.Run(fmt.Sprintf("rps=%v", rate), func(t *testing.T) {
			node := &stalls{release: make(chan struct{})}
			conn := dial(t, serve(t, node), false)
			timer := time.AfterFunc(stall, func() { close(node.release) }) // the stall is the experiment
			defer timer.Stop()
			res, err := Run(t.Context(), conn, Config{RPC: Get, Concurrency: 1, Requests: requests, Rate: rate, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != requests {
				t.Fatalf("ok %d, failed %d; want %d ok", res.OK, res.Failed, requests)
			}
			if rate == 0 {
				// One slow call in twenty: only p99 sees it.
				if res.P99 < stall*9/10 || res.P90 > stall/2 {
					t.Errorf("p90 %v, p99 %v; want one call of the stall's %v and the others fast", res.P90, res.P99, stall)
				}
				if res.Late != 0 || res.Unsent != 0 {
					t.Errorf("late %d, unsent %d in a closed loop; want 0", res.Late, res.Unsent)
				}
				return
			}
			// Call k was due at 10k ms and started at 300ms: half of the
			// calls waited 200ms or more.
			if res.P50 < stall/2 {
				t.Errorf("p50 %v; want over %v: the calls due during the stall waited for it", res.P50, stall/2)
			}
			if res.Late < requests/2 || res.Unsent != 0 {
				t.Errorf("late %d, unsent %d; want the calls due during the stall late, and all sent", res.Late, res.Unsent)
			}
		})
	}
}

// TestOpenLoopStartsNoCallBeforeItIsDue: 40 calls at 200 a second take at
// least the 195ms between the first and the last, however fast the node.
func TestOpenLoopStartsNoCallBeforeItIsDue(t *testing.T) {
	n := nodetest.Start(t, "n1")
	conn := dial(t, n.Addr().String(), true)
	const requests, rate = 40, 200.0
	res, err := Run(t.Context(), conn, Config{RPC: Get, Concurrency: 4, Requests: requests, Rate: rate, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != requests || res.Unsent != 0 {
		t.Errorf("ok %d, unsent %d; want %d ok and none unsent", res.OK, res.Unsent, requests)
	}
	if first, last := time.Duration(0), time.Duration(float64(requests-1)/rate*float64(time.Second)); res.Elapsed < last-first {
		t.Errorf("the run took %v; the last call was due %v after the first", res.Elapsed, last)
	}
}

// TestOpenLoopCountsTheCallsItCouldNotStart: a timed run whose only worker
// is held past the end could start one call of the twenty that came due.
func TestOpenLoopCountsTheCallsItCouldNotStart(t *testing.T) {
	const duration = 200 * time.Millisecond
	node := &stalls{release: make(chan struct{})}
	conn := dial(t, serve(t, node), false)
	timer := time.AfterFunc(duration+200*time.Millisecond, func() { close(node.release) }) // within EndGrace
	defer timer.Stop()
	res, err := Run(t.Context(), conn, Config{RPC: Get, Concurrency: 1, Duration: duration, Rate: 100, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 1 || res.Unsent != 19 {
		t.Errorf("ok %d, unsent %d; want the one held call ok and the 19 others due in %v unsent", res.OK, res.Unsent, duration)
	}
}
