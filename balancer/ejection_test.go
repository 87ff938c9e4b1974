package balancer

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/routeguide-cluster/routeguide/gen/routeguidepb"
	"github.com/routeguide-cluster/routeguide/internal/testutils/poll"
)

// dialGuideOpts connects to nodes with the dial options every client uses
// and opts, and returns once every node has answered.
func dialGuideOpts(t *testing.T, nodes []*guideNode, opts ...Option) pb.RouteGuideClient {
	t.Helper()
	conn, err := grpc.NewClient("test:///routeguide", append(dialOptions(t, opts...), grpc.WithResolvers(guideResolver(nodes)), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewRouteGuideClient(conn)
	poll.Until(t, 10*time.Second, "every node answering", func() bool {
		getFeatures(t, client, 3*len(nodes), 5*time.Second)
		for _, n := range nodes {
			if n.gets.Load() == 0 {
				return false
			}
		}
		return true
	})
	return client
}

// testOutlierDetection is DefaultOutlierDetection with shorter times, so a
// test sees an ejection end.
func testOutlierDetection() OutlierDetection {
	od := DefaultOutlierDetection
	od.Interval = 500 * time.Millisecond
	od.BaseEjectionTime = 2 * time.Second
	return od
}

// TestANodeFailingAThirdOfItsCallsIsEjectedAndComesBack: with the defaults'
// thresholds in a cluster of three, a node failing 30% of its calls with
// INTERNAL is ejected, callers see no failed call (the retry policy makes
// the failed attempts again elsewhere), and the node takes calls again once
// its ejection time is up.
func TestANodeFailingAThirdOfItsCallsIsEjectedAndComesBack(t *testing.T) {
	checkNoGoroutineLeft(t)
	reg, metrics := newMetrics(t)
	ok1, ok2, failing := startGuideNode(t, "ok1", answers), startGuideNode(t, "ok2", answers), startGuideNode(t, "failing", answers)
	client := dialGuideOpts(t, []*guideNode{ok1, ok2, failing}, WithOutlierDetection(testOutlierDetection()), WithMetrics(metrics))
	load := startLoad(t, client, 8)
	failing.failing.Store(30)

	ejected := func() bool {
		return gather(t, reg, "routeguide_balancer_ejected", "addr")[failing.addr] == 1
	}
	start := time.Now()
	poll.Until(t, 10*time.Second, "the failing node ejected", ejected)
	t.Logf("ejected after %v", time.Since(start).Round(time.Millisecond))
	if got := gather(t, reg, "routeguide_balancer_ejections_total", "addr")[failing.addr]; got < 1 {
		t.Errorf("ejections of the failing node = %v, want at least 1", got)
	}
	if got := gather(t, reg, "routeguide_balancer_failures_total", "addr")[failing.addr]; got < 1 {
		t.Errorf("failures counted on the failing node = %v, want some", got)
	}
	// While it is out, it takes no call: the ejection is a pick's, not a
	// metric's. (The calls picked before it, at most one per worker, may
	// still be on their way: let them land first.)
	calls := load.calls.Load()
	poll.Until(t, 10*time.Second, "20 calls", func() bool { return load.calls.Load()-calls >= 20 })
	gets := failing.gets.Load()
	calls = load.calls.Load()
	poll.Until(t, 10*time.Second, "200 calls", func() bool { return load.calls.Load()-calls >= 200 })
	if stillEjected, took := ejected(), failing.gets.Load()-gets; stillEjected && took > 0 {
		t.Errorf("the ejected node took %d calls", took)
	}

	poll.Until(t, 20*time.Second, "the node back after its ejection time", func() bool { return !ejected() })
	back := failing.gets.Load()
	poll.Until(t, 10*time.Second, "calls on the node that came back", func() bool { return failing.gets.Load() > back })
	if errs := load.stop(); len(errs) > 0 {
		t.Errorf("callers saw %d failed calls, want 0; first: %v", len(errs), errs[0])
	}
}

// TestA50DefaultsNeverEjectInAClusterOfThree is why the defaults differ
// from A50's: its minimumHosts of 5 leaves a failing node of three in, where
// 3 ejects it, all else equal (a request volume of 1, met at once).
func TestA50DefaultsNeverEjectInAClusterOfThree(t *testing.T) {
	for _, tc := range []struct {
		minimumHosts uint32 // 0: A50's 5
		ejects       bool
	}{{0, false}, {3, true}} {
		t.Run(fmt.Sprintf("minimumHosts=%d", tc.minimumHosts), func(t *testing.T) {
			reg, metrics := newMetrics(t)
			ok1, ok2, failing := startGuideNode(t, "ok1", answers), startGuideNode(t, "ok2", answers), startGuideNode(t, "failing", answers)
			od := OutlierDetection{Interval: 250 * time.Millisecond, FailurePercentageEjection: &FailurePercentageEjection{Threshold: 20, RequestVolume: 1, MinimumHosts: tc.minimumHosts}}
			client := dialGuideOpts(t, []*guideNode{ok1, ok2, failing}, WithOutlierDetection(od), WithMetrics(metrics))
			load := startLoad(t, client, 4)
			failing.failing.Store(30)
			ejections := func() float64 { return gather(t, reg, "routeguide_balancer_ejections_total", "addr")[failing.addr] }
			if tc.ejects {
				poll.Until(t, 20*time.Second, "the failing node ejected", func() bool { return ejections() >= 1 })
			} else {
				// Eight intervals, each with failures past the threshold.
				start := time.Now()
				poll.Until(t, time.Minute, "50 failed attempts over 2s", func() bool {
					return gather(t, reg, "routeguide_balancer_failures_total", "addr")[failing.addr] >= 50 && time.Since(start) >= 8*od.Interval
				})
				if got := ejections(); got != 0 {
					t.Errorf("ejections = %v under A50's minimumHosts of 5 in a cluster of 3", got)
				}
			}
			if errs := load.stop(); len(errs) > 0 {
				t.Errorf("callers saw %d failed calls: %v", len(errs), errs[0])
			}
		})
	}
}

func TestPolicyConfigParsesAndRejectsWhatIsOutOfBounds(t *testing.T) {
	for _, tc := range []struct {
		config string
		want   string // in the error; "" for none
	}{
		{`{}`, ""},
		{`{"latencyDecay": "0.5s", "outlierDetection": {"interval": "1s", "failurePercentageEjection": {"threshold": 30}}}`, ""},
		{`{"outlierDetection": {}}`, ""},
		{`{"latencyDecay": "1m"}`, "latencyDecay"},
		{`{"latencyDecay": "0s"}`, "not positive"},
		{`{"latencyDecay": "1e9s"}`, "latencyDecay"},
		{`{"outlierDetection": {"maxEjectionPercent": 101}}`, "maxEjectionPercent"},
		{`{"outlierDetection": {"failurePercentageEjection": {"threshold": 101}}}`, "threshold"},
		{`{"outlierDetection": {"failurePercentageEjection": {"enforcementPercentage": 200}}}`, "enforcementPercentage"},
		{`{"outlierDetection": {"interval": "-1s"}}`, "interval"},
		{`{"outlierDetection": {"baseEjectionTime": "10"}}`, "baseEjectionTime"},
		{`{"weights": 1}`, ""}, // a newer server's field
		{`{"latencyDecay": 1}`, "latencyDecay"},
		{`{"metrics": "no such id"}`, "no balancer.Metrics"},
	} {
		_, err := builder{}.ParseConfig(json.RawMessage(tc.config))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.config, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one naming %q", tc.config, err, tc.want)
		}
	}
}

func TestPolicyConfigDefaults(t *testing.T) {
	cfg, err := parsePolicyConfig(json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.decay != DefaultLatencyDecay || cfg.od == nil || cfg.od.FailurePercentageEjection.MinimumHosts != 3 {
		t.Errorf("config {} = %+v, want the defaults", cfg)
	}
	off, err := parsePolicyConfig(json.RawMessage(`{"outlierDetection": {"interval": "1s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if off.od != nil {
		t.Errorf("outlier detection without failurePercentageEjection = %+v, want off as in A50", off.od)
	}
	// gRPC's xDS policies marshal a child's parsed config and parse it again.
	parsed, err := builder{}.ParseConfig(json.RawMessage(`{"latencyDecay": "0.5s"}`))
	if err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := parsePolicyConfig(again); err != nil || cfg.decay != 500*time.Millisecond {
		t.Errorf("config marshalled as %s, parsed again as %+v, %v", again, cfg, err)
	}
	// What WithOutlierDetection writes reads back the same.
	raw, err := json.Marshal(outlierDetectionToJSON(DefaultOutlierDetection))
	if err != nil {
		t.Fatal(err)
	}
	var back outlierDetectionJSON
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	od, err := back.parse()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := od.WithDefaults(), DefaultOutlierDetection.WithDefaults(); got.Interval != want.Interval || got.BaseEjectionTime != want.BaseEjectionTime || *got.FailurePercentageEjection != *want.FailurePercentageEjection {
		t.Errorf("%s reads back as %+v", raw, got)
	}
}
